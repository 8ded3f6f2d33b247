"""Reference-policy log-probs for iw-SFT: add a ``ref_log_probs`` column to an SFT parquet.

    python -m dft_verl.trainer.ref_logprobs --model Qwen/Qwen2.5-Math-1.5B \
        --data sft.parquet --out sft_ref.parquet [--max-length 2048] [--device cuda]

Each row is tokenised exactly as verl's ``MultiTurnSFTDataset`` tokenises it for training
(same chat template, same ``no_padding`` layout), then the reference model's forward passes (sequences of similar
length batched, ``batched_token_log_probs``) give ``ref_log_probs[t] = log pi_ref(input_ids[t] | input_ids[:t])`` in nats, with entry 0 = 0.0.
The output is written atomically; rerunning with an existing output does nothing.
"""

from __future__ import annotations

import argparse
import os

import pandas as pd
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from dft_verl.data import REF_LOGPROBS_KEY, check_sft_files
from dft_verl import cost
from dft_verl.atomic import write_parquet_atomic


def batched_token_log_probs(model, sequences: list[torch.Tensor], max_batch_tokens: int = 4096,
                            progress: str | None = None) -> list[torch.Tensor]:
    """log p(ids[t] | ids[:t]) for t >= 1, with 0.0 at t = 0, of every (T_i,) sequence ``ids``, in the given order,
    with one forward pass per batch.

    Sequences are sorted by length and right-padded into batches of at most ``max_batch_tokens`` padded tokens
    (one longer sequence goes alone). Right padding leaves each real token's causal context and position unchanged,
    so every value equals the one-sequence forward up to float rounding. Peak extra memory: the batch's logits
    (max_batch_tokens x vocab floats) plus one sequence's log-softmax."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    batches, batch = [], []
    for i in order:
        if batch and len(sequences[i]) * (len(batch) + 1) > max_batch_tokens:
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    out: list[torch.Tensor | None] = [None] * len(sequences)
    bar = tqdm(total=len(sequences), desc=progress, disable=progress is None)
    for batch in batches:
        width = len(sequences[batch[-1]])
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, : len(sequences[i])] = sequences[i]
            mask[row, : len(sequences[i])] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
        for row, i in enumerate(batch):
            n = len(sequences[i])
            lp = torch.log_softmax(logits[row, : n - 1].float(), dim=-1)
            lp = lp.gather(-1, ids[row, 1:n, None].to(lp.device))[:, 0]
            out[i] = torch.cat([torch.zeros(1, device=lp.device), lp]).cpu()
        bar.update(len(batch))
    bar.close()
    return out


def compute_ref_logprobs(model_path: str, data: str, out: str, max_length: int = 2048, device: str = "cpu",
                         messages_key: str = "messages") -> str:
    """Write ``data`` plus a ``ref_log_probs`` column (list[float] aligned with input_ids) to ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    if os.path.exists(out):
        return out
    check_sft_files(data, {"messages_key": messages_key})
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    config = OmegaConf.create(
        {"pad_mode": "no_padding", "max_length": max_length, "truncation": "right", "messages_key": messages_key}
    )
    dataset = MultiTurnSFTDataset(parquet_files=data, tokenizer=tokenizer, config=config)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
    sequences = [dataset[i]["input_ids"] for i in range(len(dataset))]
    refs = [lp.tolist() for lp in batched_token_log_probs(model, sequences, progress="ref log-probs")]
    frame = pd.read_parquet(data)
    frame[REF_LOGPROBS_KEY] = refs
    write_parquet_atomic(frame, out)  # creates the output folder; never leaves a half-written file
    cost.record_scoring("ref_logprobs", model, [len(ids) for ids in sequences])
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m dft_verl.trainer.ref_logprobs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="reference policy (HF folder or id)")
    ap.add_argument("--data", required=True, help="SFT parquet with a messages column")
    ap.add_argument("--out", required=True, help="output parquet (data + ref_log_probs)")
    ap.add_argument("--max-length", type=int, default=2048, help="must match data.max_length of training")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--messages-key", default="messages")
    return ap


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    print(compute_ref_logprobs(args.model, args.data, args.out, args.max_length, args.device, args.messages_key))


if __name__ == "__main__":
    main()
