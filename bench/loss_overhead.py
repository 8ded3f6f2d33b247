"""Step time and peak memory of every loss in the family against SFT, with and without fused kernels.

    python bench/loss_overhead.py [--hidden 128 --layers 2 --vocab 151936 --batch 2 --seqlen 512 --reps 3 --rounds 2]

One step = forward, token log-probs the way verl's FSDP engine gets them, the dft_verl loss in
verl's jagged no-padding layout, backward, AdamW step. Log-probs come either from the full logits
(``verl.utils.torch_functional.logprobs_from_logits``: a ``[tokens x vocab]`` tensor) or, for the
``fused`` rows, from verl's fused linear-cross-entropy forward (``model.use_fused_kernels=True``,
torch backend: the logits are computed in 512-token chunks and never held whole). The asft row adds
the KL anchor: a frozen reference copy, its logits, and the full-vocabulary KL per response token.
The eaft row adds the top-k (k=20) entropy of every position, computed from the logits (the engine's
logits-processor call) before the loss.

Every row runs in its own fresh process (verl's fused forward is patched onto the model class, and a
process's peak cannot be reset across phases otherwise): warm-up, then ``reps`` timed steps (median).
All rows run once per round; each figure is the best (minimum) over ``rounds``, which keeps the
ratios usable on a machine shared with other jobs.
Peak memory is the high-water mark of that phase only: CUDA ``max_memory_allocated``; CPU the
process's ``VmHWM``, reset (``/proc/self/clear_refs``) after imports, so it covers exactly one loss
(``ru_maxrss`` is inherited from the parent on Linux and would report the parent's peak instead).
On CPU each measuring process uses ``--threads`` threads (default 1: with more, OpenMP threads on
cores shared with other jobs make single steps 10-100x slower at random). Ratios are against the
``sft`` row of the same run; the load average is printed with every row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# name -> (LossConfig keyword arguments, fused kernels)
ROWS = {
    "sft": ({"type": "sft"}, False),
    "dft": ({"type": "dft"}, False),
    "dft_power=0.5": ({"type": "dft", "dft_power": 0.5}, False),
    "dft_min_weight=0.1": ({"type": "dft", "dft_min_weight": 0.1}, False),
    "dft micro_batch": ({"type": "dft", "normalization": "micro_batch"}, False),
    "asft (kl 0.1)": ({"type": "asft"}, False),
    "eaft (k 20)": ({"type": "eaft"}, False),
    "sft fused": ({"type": "sft"}, True),
    "dft fused": ({"type": "dft"}, True),
    "dft_power=0.5 fused": ({"type": "dft", "dft_power": 0.5}, True),
    "dft_min_weight=0.1 fused": ({"type": "dft", "dft_min_weight": 0.1}, True),
    "dft micro_batch fused": ({"type": "dft", "normalization": "micro_batch"}, True),
}
SHAPE_ARGS = ("hidden", "layers", "vocab", "batch", "seqlen", "reps", "device")


def proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def load_average() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset the peak RSS (VmHWM) to the current RSS
        f.write("5")


def read_peak(device: str) -> int:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return proc_status_kib("VmHWM") * 1024


def build(args, loss_kwargs, fused):
    import copy

    import torch
    from tensordict import TensorDict
    from transformers import AutoModelForCausalLM, Qwen2Config
    from verl.utils import tensordict_utils as tu
    from verl.utils.dataset.dataset_utils import DatasetPadMode

    from dft_verl.losses import LossConfig, make_loss_fn

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                      num_key_value_heads=max(1, args.hidden // 64), tie_word_embeddings=True,
                      attn_implementation="sdpa")
    model = AutoModelForCausalLM.from_config(cfg).to(args.device)
    if fused:
        from verl.models.transformers.monkey_patch import patch_forward_with_backends

        patch_forward_with_backends(model, use_fused_kernels=True, fused_kernels_backend="torch")
    loss_cfg = LossConfig(**loss_kwargs)
    ids = torch.randint(0, args.vocab, (args.batch, args.seqlen), device=args.device)
    reference = None
    if loss_cfg.uses_kl_anchor:
        ref_model = copy.deepcopy(model).requires_grad_(False).eval()

        def reference(data):
            with torch.no_grad():
                return ref_model(input_ids=ids).logits.reshape(ids.numel(), -1)

    loss_mask = torch.zeros_like(ids)
    loss_mask[:, args.seqlen // 4 :] = 1
    data = TensorDict(
        {"loss_mask": torch.nested.as_nested_tensor(list(loss_mask), layout=torch.jagged)}, batch_size=[args.batch]
    )
    tu.assign_non_tensor(data, pad_mode=DatasetPadMode.NO_PADDING, dp_size=1, batch_num_tokens=int(loss_mask.sum()),
                         global_batch_size=args.batch, micro_batch_size_per_gpu=args.batch, use_dynamic_bsz=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    return model, opt, ids, data, make_loss_fn(loss_cfg, reference), fused


def step(model, opt, ids, data, loss_fn, fused):
    import torch
    from verl.utils.torch_functional import logprobs_from_logits

    labels = torch.roll(ids, shifts=-1, dims=1)  # position t predicts token t+1, as in verl
    model_output = {}
    if fused:
        lp = model(input_ids=ids, return_dict=True, temperature=1.0).log_probs
    else:
        logits = model(input_ids=ids).logits
        lp = logprobs_from_logits(logits, labels)
        if loss_fn.loss_config.needs_logits:  # the engine's logits-processor call
            per_token = loss_fn(student_logits=logits.reshape(1, ids.numel(), -1), data=data)
            for key, value in per_token.items():
                model_output[key] = torch.nested.as_nested_tensor(list(value.reshape(ids.shape)), layout=torch.jagged)
    model_output["log_probs"] = torch.nested.as_nested_tensor(list(lp), layout=torch.jagged)
    loss, _ = loss_fn(model_output=model_output, data=data)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def measure_row(args, name: str) -> dict:
    """Warm-up + ``reps`` timed steps of one row in this (fresh) process."""
    import torch

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    reset_peak(args.device)
    loss_kwargs, fused = ROWS[name]
    model, opt, ids, data, loss_fn, fused = build(args, loss_kwargs, fused)
    step(model, opt, ids, data, loss_fn, fused)  # warm-up
    times = []
    for _ in range(args.reps):
        sync()
        t0 = time.perf_counter()
        step(model, opt, ids, data, loss_fn, fused)
        sync()
        times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times), "peak_bytes": read_peak(args.device)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=151936, help="Qwen2.5's vocabulary: where fused kernels pay")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default=None, help="cuda if available, else cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads per measuring process (OMP_NUM_THREADS; 1 keeps timings stable on shared cores)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of: {', '.join(ROWS)}")
    ap.add_argument("--measure-row", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    if args.measure_row:
        print(json.dumps(measure_row(args, args.measure_row)))
        return

    rows = [r.strip() for r in args.rows.split(",")]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown row(s) {unknown}; choose from {list(ROWS)}")
    if "sft" not in rows:
        rows.insert(0, "sft")
    base = [sys.executable, os.path.abspath(__file__)] + [f"--{k}={getattr(args, k)}" for k in SHAPE_ARGS]
    print(f"device={args.device} model=qwen2(h={args.hidden}, L={args.layers}, V={args.vocab}, tied) "
          f"batch={args.batch}x{args.seqlen} reps={args.reps} rounds={args.rounds} "
          f"threads={args.threads if args.device == 'cpu' else '-'}", flush=True)
    env = dict(os.environ)
    if args.device == "cpu":
        env["OMP_NUM_THREADS"] = str(args.threads)
    results = {}
    for round_ in range(1, args.rounds + 1):
        for name in rows:
            proc = subprocess.run(base + [f"--measure-row={name}"], capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise SystemExit(f"row {name!r} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"  round {round_} {name:26s} step {r['step_s'] * 1e3:9.1f} ms  peak {r['peak_bytes'] / 2**20:8.1f} MiB"
                  f"  loadavg {load_average()}", flush=True)
            best = results.setdefault(name, r)
            results[name] = {k: min(best[k], r[k]) for k in r}

    memory = "peak CUDA allocated" if args.device == "cuda" else "peak RSS"
    print(f"best of {args.rounds} round(s), loadavg {load_average()}")
    print(f"{'row':26s} {'step ms':>9s} {'time/sft':>9s} {memory + ' MiB':>22s} {'mem/sft':>8s}")
    sft = results["sft"]
    for name in rows:
        r = results[name]
        print(f"{name:26s} {r['step_s'] * 1e3:9.1f} {r['step_s'] / sft['step_s']:9.3f} "
              f"{r['peak_bytes'] / 2**20:22.1f} {r['peak_bytes'] / sft['peak_bytes']:8.3f}")

if __name__ == "__main__":
    main()
