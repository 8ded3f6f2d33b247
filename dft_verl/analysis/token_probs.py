"""Probability a model gives to each target token of an SFT training set (the paper's Fig. 2 data).

    python -m dft_verl.analysis.token_probs --model PATH --data train.parquet --out runs/<row>/token_probs
        [--max-length 4096] [--batch-size 4] [--limit N] [--device cuda|cpu] [--dtype bfloat16|float32]
        [--before runs/base/token_probs]

For every row of a `messages` parquet (the verl MultiTurnSFTDataset schema) the conversation is tokenized by
verl's own MultiTurnSFTDataset (no padding), so the target tokens are exactly the ones the SFT/DFT loss trains on
(loss_mask = 1: assistant tokens after the generation prompt). For each target token y_t:

    p_t = softmax(logits(y_<t))[y_t]       (float32 softmax, probability in [0, 1])

Outputs in --out (written atomically; meta.json last, so a folder without it is unfinished and is redone):
    token_probs.npy      float32 [n_tokens], the p_t of all rows concatenated in row order
    offsets.npy          int64 [n_rows + 1]; row i's tokens are token_probs[offsets[i]:offsets[i+1]]
    per_example.parquet  index, n_target_tokens, mean_prob, mean_log_prob (nats) per row
    meta.json            model, data, settings and summary statistics (quantiles, fraction below thresholds)
    hist.png             histogram of p_t on a log y-axis (with --before: that folder's histogram overlaid)
A rerun with the same settings skips the computation.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from dft_verl.eval import write_json, write_parquet
from dft_verl.atomic import atomic_write

logger = logging.getLogger("dft_verl.analysis.token_probs")

FILES = ("token_probs.npy", "offsets.npy", "meta.json")


def sft_dataset(data: str | Path, tokenizer, max_length: int, limit: int | None = None,
                messages_key: str = "messages", truncation: str = "right"):
    """verl's MultiTurnSFTDataset over `data` in no-padding mode (input_ids and loss_mask per row)."""
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    config = {"pad_mode": "no_padding", "max_length": max_length, "truncation": truncation,
              "messages_key": messages_key}
    return MultiTurnSFTDataset(parquet_files=str(data), tokenizer=tokenizer, config=config,
                               max_samples=-1 if limit is None else limit)


def target_token_probs(model, dataset, batch_size: int = 4, pad_token_id: int = 0, progress: bool = True):
    """(probs float32 [n_tokens], offsets int64 [n_rows + 1]) of the loss-masked tokens of every dataset row.

    Rows are right-padded into batches; only the logits at positions t-1 of target tokens t are materialised
    (`logits_to_keep`), then log-softmaxed in float32.
    """
    import torch

    device = next(model.parameters()).device
    probs, offsets = [], [0]
    n = len(dataset)
    t0 = time.time()
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, n))]
        lengths = [len(it["input_ids"]) for it in items]
        width = max(lengths)
        ids = torch.full((len(items), width), pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(items), width), dtype=torch.long)
        targets = []
        for b, it in enumerate(items):
            ids[b, : lengths[b]] = it["input_ids"]
            attn[b, : lengths[b]] = 1
            pos = torch.nonzero(it["loss_mask"][: lengths[b]], as_tuple=False).flatten()
            if pos.numel() and int(pos[0]) == 0:
                raise ValueError(f"row {start + b}: first token is a target; nothing conditions it")
            targets.append(pos)
        keep = torch.unique(torch.cat(targets) - 1) if any(p.numel() for p in targets) else None
        if keep is None:
            for _ in items:
                offsets.append(offsets[-1])
            continue
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device),
                           logits_to_keep=keep.to(device)).logits  # [B, len(keep), V]
        slot = {int(p): j for j, p in enumerate(keep.tolist())}
        for b, pos in enumerate(targets):
            if pos.numel():
                rows = torch.tensor([slot[int(p) - 1] for p in pos], device=device)
                lp = torch.log_softmax(logits[b, rows].float(), dim=-1)
                tok = ids[b, pos].to(device)
                probs.append(lp.gather(-1, tok[:, None]).squeeze(-1).exp().cpu().numpy().astype(np.float32))
            offsets.append(offsets[-1] + int(pos.numel()))
        if progress:
            done = min(start + batch_size, n)
            logger.info("token probs: %d/%d rows, %d tokens, %.0f s", done, n, offsets[-1], time.time() - t0)
    flat = np.concatenate(probs) if probs else np.zeros(0, dtype=np.float32)
    return flat, np.asarray(offsets, dtype=np.int64)


def summarize(probs: np.ndarray) -> dict:
    """Summary of a probability array: count, mean, quantiles and the fraction below/above thresholds."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.size == 0:
        return {"n_tokens": 0}
    qs = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9)
    return {
        "n_tokens": int(probs.size),
        "mean": float(probs.mean()),
        "quantiles": {str(q): float(np.quantile(probs, q)) for q in qs},
        "frac_below": {str(t): float((probs < t).mean()) for t in (1e-3, 1e-2, 0.1, 0.5)},
        "frac_above_0.9": float((probs > 0.9).mean()),
    }


def has_token_probs(folder: str | Path) -> bool:
    return all((Path(folder) / f).is_file() for f in FILES)


def load_token_probs(folder: str | Path) -> np.ndarray:
    """The flat float32 probability array saved by `compute` in `folder`."""
    folder = Path(folder)
    if not has_token_probs(folder):
        raise FileNotFoundError(f"{folder}: no finished token-probability run (needs {', '.join(FILES)})")
    return np.load(folder / "token_probs.npy")


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)


def compute(model_path: str, data: str | Path, out: str | Path, max_length: int = 4096, batch_size: int = 4,
            limit: int | None = None, device: str | None = None, dtype: str | None = None,
            tokenizer_path: str | None = None) -> Path:
    """Compute and save the target-token probabilities of `data` under `model_path` into `out` (skips if done)."""
    import pandas as pd
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    settings = {"model": str(model_path), "data": str(data), "max_length": max_length, "limit": limit,
                "tokenizer": str(tokenizer_path or model_path)}
    if has_token_probs(out):
        meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
        if meta.get("settings") == settings:
            logger.info("%s: already computed (%d tokens), skipped", out, meta["summary"]["n_tokens"])
            return out
        raise ValueError(f"{out / 'meta.json'} holds a run with settings {meta.get('settings')}, not {settings}; "
                         "use another --out")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype), attn_implementation="sdpa")
    model.to(device).eval()
    dataset = sft_dataset(data, tokenizer, max_length=max_length, limit=limit)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    t0 = time.time()
    probs, offsets = target_token_probs(model, dataset, batch_size=batch_size, pad_token_id=pad)
    _save_npy(out / "token_probs.npy", probs)
    _save_npy(out / "offsets.npy", offsets)
    per_row = []
    for i in range(len(offsets) - 1):
        p = probs[offsets[i]: offsets[i + 1]].astype(np.float64)
        per_row.append({"index": i, "n_target_tokens": int(p.size),
                        "mean_prob": float(p.mean()) if p.size else None,
                        "mean_log_prob": float(np.log(np.maximum(p, 1e-45)).mean()) if p.size else None})
    write_parquet(out / "per_example.parquet", pd.DataFrame(per_row))
    write_json(out / "meta.json", {"settings": settings, "device": device, "dtype": dtype, "n_rows": len(per_row),
                                   "seconds": round(time.time() - t0, 2), "summary": summarize(probs)})
    logger.info("%s: %d rows, %d target tokens in %.0f s", out, len(per_row), probs.size, time.time() - t0)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dft_verl.analysis.token_probs", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="HF model folder (or hub id)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model's)")
    p.add_argument("--data", required=True, help="SFT parquet with a 'messages' column")
    p.add_argument("--out", required=True, help="output folder, e.g. runs/<row>/token_probs")
    p.add_argument("--max-length", type=int, default=4096, help="tokens per row; longer rows are cut on the right")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--limit", type=int, default=None, help="first N rows only")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--before", default=None, help="another token_probs folder to overlay in hist.png (e.g. base)")
    p.add_argument("--no-plot", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = compute(args.model, args.data, args.out, max_length=args.max_length, batch_size=args.batch_size,
                  limit=args.limit, device=args.device, dtype=args.dtype, tokenizer_path=args.tokenizer)
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    print(json.dumps(meta["summary"], indent=2))
    if not args.no_plot:
        from dft_verl.analysis.plots import plot_token_prob_histograms

        before = load_token_probs(args.before) if args.before else None
        plot_token_prob_histograms({Path(args.model).name or str(args.model): load_token_probs(out)},
                                   out / "hist.png", before=before)
        print(f"wrote {out / 'hist.png'}")
    return out


if __name__ == "__main__":
    main()
