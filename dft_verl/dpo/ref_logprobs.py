"""Reference log-probs for DPO, computed once and stored: add them to a DPO pairs parquet.

    python -m dft_verl.dpo.ref_logprobs --model Qwen/Qwen2.5-Math-1.5B \
        --data dpo.parquet --out dpo_ref.parquet [--max-length 2048] [--truncation right] [--device cuda]

Each pair's two conversations are tokenised by ``DPOPairDataset``, the dataset training uses (same
chat template, ``no_padding`` layout, ``max_length`` and ``truncation``: pass the training values),
and the reference model's forward passes (batched, ``dft_verl.trainer.ref_logprobs.batched_token_log_probs``)
give ``log pi_ref(input_ids[t] | input_ids[:t])``.
Added columns, per pair:

    ref_chosen_logp, ref_rejected_logp      sum over the response tokens (loss mask) of those log-probs, nats
    ref_chosen_tokens, ref_rejected_tokens  number of response tokens summed (training checks it matches)

The output is written atomically; rerunning with an existing output does nothing.
"""

from __future__ import annotations

import argparse
import os

import torch
from omegaconf import OmegaConf

from dft_verl.dpo.data import REF_LOGP_KEYS, REF_TOKENS_KEYS, RESPONSE_KEYS, DPOPairDataset
from dft_verl import cost
from dft_verl.atomic import write_parquet_atomic
from dft_verl.trainer.ref_logprobs import batched_token_log_probs


def compute_ref_logprobs(model_path: str, data, out: str, max_length: int = 2048, truncation: str = "right",
                         device: str = "cpu", dtype: str = "auto") -> str:
    """Write the pairs of ``data`` (one file or a list) plus the reference columns to ``out``; returns ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if os.path.exists(out):
        return out
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    config = OmegaConf.create({"pad_mode": "no_padding", "max_length": max_length, "truncation": truncation})
    dataset = DPOPairDataset(parquet_files=data, tokenizer=tokenizer, config=config, require_ref=False)
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(device).eval()
    sequences = [(key, dataset.sequence(item, key)) for item in range(len(dataset)) for key in RESPONSE_KEYS]
    log_probs = batched_token_log_probs(model, [s["input_ids"] for _, s in sequences],
                                        progress="reference log-probs (sequences)")
    columns = {k: [] for k in (*REF_LOGP_KEYS.values(), *REF_TOKENS_KEYS.values())}
    for (key, sequence), lp in zip(sequences, log_probs):
        mask = sequence["loss_mask"].double()
        columns[REF_LOGP_KEYS[key]].append(float((lp.double() * mask).sum()))  # nats over the response tokens
        columns[REF_TOKENS_KEYS[key]].append(int(mask.sum()))
    frame = dataset.pairs.copy()
    for key, values in columns.items():
        frame[key] = values
    write_parquet_atomic(frame, out)  # creates the output folder; never leaves a half-written file
    cost.record_scoring("ref_logprobs", model, [len(s["input_ids"]) for _, s in sequences])
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m dft_verl.dpo.ref_logprobs", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model", required=True, help="reference policy (HF folder or id); normally the initial policy")
    ap.add_argument("--data", required=True, nargs="+", help="DPO parquet file(s): prompt, chosen, rejected")
    ap.add_argument("--out", required=True, help="output parquet (pairs + reference columns)")
    ap.add_argument("--max-length", type=int, default=2048, help="must match data.max_length of training")
    ap.add_argument("--truncation", default="right", choices=["error", "right"],
                    help="must match data.truncation of training")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="auto: bfloat16 on CUDA, float32 otherwise")
    return ap


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    data = args.data[0] if len(args.data) == 1 else args.data
    print(compute_ref_logprobs(args.model, data, args.out, args.max_length, args.truncation, args.device, args.dtype))


if __name__ == "__main__":
    main()
