"""DFT vs SFT training-step overhead: step-time and peak-memory ratios, same model and batch.

    python bench/loss_overhead.py [--hidden 256 --layers 4 --vocab 32000 --batch 8 --seqlen 512 --reps 10]

One step = forward, verl-style token log-probs (log_softmax + gather), the dft_verl loss in the
jagged no-padding layout verl uses, backward, AdamW step. Step times are measured interleaved
(sft, dft, sft, dft, ...) after warm-up, median over reps. Peak memory is measured per loss in a
fresh child process (CUDA: torch.cuda.max_memory_allocated; CPU: peak RSS), so each figure covers
exactly one loss. Targets: time ratio <= 1.02, memory ratio <= 1.01.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from dft_verl.losses import LossConfig, make_loss_fn


def build(args, device):
    from transformers import AutoModelForCausalLM, Qwen2Config
    from verl.utils import tensordict_utils as tu
    from verl.utils.dataset.dataset_utils import DatasetPadMode
    from tensordict import TensorDict

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                      num_key_value_heads=max(1, args.hidden // 64), attn_implementation="sdpa")
    model = AutoModelForCausalLM.from_config(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, args.vocab, (args.batch, args.seqlen), device=device)
    loss_mask = torch.zeros_like(ids)
    loss_mask[:, args.seqlen // 4 :] = 1
    data = TensorDict(
        {"loss_mask": torch.nested.as_nested_tensor(list(loss_mask), layout=torch.jagged)}, batch_size=[args.batch]
    )
    tu.assign_non_tensor(data, pad_mode=DatasetPadMode.NO_PADDING, dp_size=1,
                         batch_num_tokens=int(loss_mask.sum()), global_batch_size=args.batch)
    return model, opt, ids, data


def step(model, opt, ids, data, loss_fn):
    logits = model(input_ids=ids).logits
    lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
    lp = torch.cat([lp, torch.zeros_like(lp[:, :1])], dim=1)
    nested = torch.nested.as_nested_tensor(list(lp), layout=torch.jagged)
    loss, _ = loss_fn(model_output={"log_probs": nested}, data=data)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory_child(args, loss_type, device) -> int:
    """Run warm-up + 2 steps of one loss in this process; return peak bytes."""
    model, opt, ids, data = build(args, device)
    fn = make_loss_fn(LossConfig(type=loss_type))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(3):
        step(model, opt, ids, data, fn)
    sync(device)
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--memory-child", choices=["sft", "dft"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.memory_child:
        print(json.dumps({"peak_bytes": peak_memory_child(args, args.memory_child, args.device)}))
        return

    model, opt, ids, data = build(args, args.device)
    fns = {t: make_loss_fn(LossConfig(type=t)) for t in ("sft", "dft")}
    times = {t: [] for t in fns}
    for _ in range(2):  # warm-up
        for t in fns:
            step(model, opt, ids, data, fns[t])
    for _ in range(args.reps):
        for t in fns:
            sync(args.device)
            t0 = time.perf_counter()
            step(model, opt, ids, data, fns[t])
            sync(args.device)
            times[t].append(time.perf_counter() - t0)

    peaks = {}
    base = [sys.executable, __file__] + [f"--{k}={getattr(args, k)}" for k in ("hidden", "layers", "vocab", "batch", "seqlen", "device")]
    for t in fns:
        out = subprocess.run(base + [f"--memory-child={t}"], capture_output=True, text=True, check=True).stdout
        peaks[t] = json.loads(out.strip().splitlines()[-1])["peak_bytes"]

    med = {t: statistics.median(v) for t, v in times.items()}
    print(f"device={args.device} model=qwen2(h={args.hidden}, L={args.layers}, V={args.vocab}) "
          f"batch={args.batch}x{args.seqlen} reps={args.reps}")
    for t in fns:
        print(f"  {t:4s} step {med[t] * 1e3:8.1f} ms (median)   peak memory {peaks[t] / 2**20:8.1f} MiB")
    print(f"time ratio dft/sft   = {med['dft'] / med['sft']:.4f}   (target <= 1.02)")
    print(f"memory ratio dft/sft = {peaks['dft'] / peaks['sft']:.4f}   (target <= 1.01)")


if __name__ == "__main__":
    main()
