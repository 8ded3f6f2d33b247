"""Training in bf16 against fp32 on CPU, per Table-3 row: step time, peak memory, loss curve.

TRAIN_DTYPE=bfloat16 runs every trainer with FSDP2 mixed precision (bf16 parameters and compute, fp32 master weights,
optimiser state and gradient reduction) and the PPO/GRPO rollout in bf16; float32 runs everything in fp32
(dft_verl.trainer.cpu_overrides, dft_verl/config/online/platform/cpu_bf16.yaml).

Side by side (default): each row is trained in float32, then in bfloat16, row after row, from a finished demo's base
model and data (same questions, seed, sizes), into OUT/<dtype>/ (no evaluation: EVAL=0; --eval evaluates each row as
the demo does). A second call reuses the finished rows (the runner's manifests); --overwrite trains again.
--dtypes bfloat16 trains in bf16 only: `--runs runs/demo OUT/bfloat16` then sets it beside the demo's own fp32 rows
(same base model, data and settings; not side by side in time).

    python bench/train_dtype.py --demo runs/demo [--rows sft,dpo,grpo] [--out /tmp/dft_verl_bench/train_dtype]
                                [--dtypes float32,bfloat16] [--eval]

Two finished Table-3 runs (e.g. two demos, `recipe_env.TRAIN_DTYPE=...`), read only, not side by side:

    python bench/train_dtype.py --runs runs/demo_fp32 runs/demo_bf16 [--rows ...]

Per row and dtype:
    train s        wall seconds of the row's train step (process start, model load and checkpoints included)
    s/step         median of verl's timing_s/step (PPO/GRPO); the SFT trainer logs none: train s / steps
    peak GB        largest perf/max_memory_allocated_gb rank 0 logged (on CPU: the process's peak RSS)
    loss           the loss at the first and last step (SFT family, DPO: train/loss; PPO/GRPO: actor/pg_loss) and
                   the largest |difference| between the two curves, step by step
    rollout-actor  PPO/GRPO: largest training/rollout_probs_diff_max (|p_rollout - p_actor| over response tokens)
    accuracy       where both were evaluated (eval/results.json): each Average@k over the held-out questions and
                   bf16 - fp32 in points with its paired bootstrap 95% CI (dft_verl.stats, same questions)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

DTYPES = ("float32", "bfloat16")


def filtered_fingerprint(data: Path) -> str | None:
    """The fingerprint the filter stage recorded in ``data/filter`` (its manifest), None where it has none."""
    from dft_verl.pipeline.artifacts import MANIFEST

    manifest = data / "filter" / MANIFEST
    return json.loads(manifest.read_text()).get("fingerprint") if manifest.is_file() else None


def base_env(demo: Path, out: Path) -> dict[str, str]:
    """The settings of a finished demo's main run (its preset, recipe_env, base model), minus RUNS_DIR; its data is
    copied to OUT/data once (reference log-prob steps write there; the demo's folder is only read). A copy whose
    filtered data is not the demo's (the demo was run again since) stops the bench: OUT's rows trained on the old."""
    config = json.loads((demo / "config.json").read_text())
    ckpt = demo / "warmup" / "checkpoints" / "sft"
    latest = ckpt / "latest_checkpointed_iteration.txt"
    base = ckpt / f"global_step_{latest.read_text().strip()}" / "huggingface" if latest.is_file() else None
    if base is None or not (demo / "data" / "filter").is_dir():
        raise SystemExit(f"{demo}: not a finished demo (need warmup/checkpoints and data/filter); run dft-verl demo")
    if not (out / "data").is_dir():
        shutil.copytree(demo / "data", out / "data.tmp", dirs_exist_ok=True)
        (out / "data.tmp").rename(out / "data")
    theirs, ours = (filtered_fingerprint(d / "data") for d in (demo, out))
    if theirs != ours:
        raise SystemExit(f"{out / 'data'}: copied from an earlier run of {demo} (filtered data fingerprint {ours}, the "
                         f"demo's is now {theirs}); give another --out, or delete {out} to train its rows again")
    env = {str(k): str(v) for k, v in config.get("recipe_env", {}).items()}
    env.update(PRESET=str(config["preset"]), MODEL_PATH=str(base), MODEL_BUILD="none", DATA_DIR=str(out / "data"),
               EVAL_DATA_DIR=str(demo / "bench"), DATA_GENERATE_TRAIN="0", SEED="0", EVAL="0")
    # --eval compares with the demo's own evaluations: evaluate in the dtype they were sampled in (a demo made before
    # GEN_DTYPE existed evaluated in float32, which results.json records)
    evaluated = sorted(demo.glob("*/eval/results.json"))
    if evaluated and "GEN_DTYPE" not in env:
        env["GEN_DTYPE"] = json.loads(evaluated[0].read_text()).get("dtype") or "float32"
    return env


def train(row: str, env: dict[str, str], runs: Path, dtype: str, overwrite: bool, evaluate: bool = False) -> None:
    """One row through the Table-3 runner, as a user runs it (`python -m dft_verl.table3 run ROW`)."""
    run_env = {**os.environ, **env, "RUNS_DIR": str(runs), "CKPT_DIR": str(runs / "checkpoints"),
               "TRAIN_DTYPE": dtype, "OVERWRITE": "1" if overwrite else "0", "EVAL": "1" if evaluate else "0"}
    print(f"  {row} {dtype}: training (log {runs / row}/train.log); load {os.getloadavg()[0]:.2f}", flush=True)
    done = subprocess.run([sys.executable, "-m", "dft_verl.table3", "run", row], env=run_env)
    if done.returncode:
        raise SystemExit(f"{row} ({dtype}) failed: see {runs / row}")


def row_figures(runs: Path, row: str) -> dict | None:
    """A finished row's training figures (see the module docstring); None when it has not trained."""
    from dft_verl.cost import metrics_by_step, metrics_files

    manifest = runs / row / "steps" / "train.json"
    files = metrics_files(runs / row, "train")
    if not manifest.is_file() or not files:
        return None
    steps = metrics_by_step(files)
    order = sorted(steps)
    key = "train/loss" if "train/loss" in steps[order[0]] else "actor/pg_loss"
    timings = [steps[s]["timing_s/step"] for s in order if "timing_s/step" in steps[s]]
    wall = float(json.loads(manifest.read_text())["seconds"])
    diffs = [steps[s]["training/rollout_probs_diff_max"] for s in order if "training/rollout_probs_diff_max" in steps[s]]
    return {"wall": wall, "steps": len(order), "step_s": statistics.median(timings) if timings else wall / len(order),
            "peak_gb": max(steps[s].get("perf/max_memory_allocated_gb", 0.0) for s in order),
            "loss": [steps[s].get(key) for s in order], "loss_key": key, "rollout_diff": max(diffs) if diffs else None}


def accuracy(runs: dict[str, Path], row: str) -> str:
    """Both evaluations' Average@k and bf16 - fp32 with its paired bootstrap CI; "-" unless both exist."""
    from dft_verl.stats import average_over_benchmarks, paired_bootstrap

    paths = [runs[d] / row / "eval" / "results.json" for d in DTYPES]
    if not all(p.is_file() for p in paths):
        return "-"
    a, b = ({n: e["per_question_acc"] for n, e in json.loads(p.read_text())["benchmarks"].items()} for p in paths)
    d = paired_bootstrap(b, a)
    scores = [average_over_benchmarks(list(r.values()))[0] for r in (a, b)]
    return f"{scores[0]:.1f} / {scores[1]:.1f}, {d.diff:+.1f} [{d.ci95[0]:+.1f}, {d.ci95[1]:+.1f}]"


def table(runs: dict[str, Path], rows: list[str]) -> str:
    """The comparison, a line per row: each dtype's figures and the bf16 / fp32 ratios."""
    lines = ["| row | train s fp32 / bf16 | s/step fp32 / bf16 (ratio) | peak GB fp32 / bf16 | loss first -> last "
             "fp32 ; bf16 | max |loss diff| | rollout-actor max fp32 / bf16 | accuracy fp32 / bf16, bf16 - fp32 |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for row in rows:
        a, b = (row_figures(runs[d], row) for d in DTYPES)
        if a is None or b is None:
            lines.append(f"| {row} | not trained in {'both dtypes' if a is b else 'one dtype'} | | | | | | |")
            continue
        diff = max((abs(x - y) for x, y in zip(a["loss"], b["loss"]) if x is not None and y is not None), default=0)
        roll = " / ".join("-" if f["rollout_diff"] is None else f"{f['rollout_diff']:.2e}" for f in (a, b))
        lines.append(f"| {row} | {a['wall']:.0f} / {b['wall']:.0f} | {a['step_s']:.1f} / {b['step_s']:.1f} "
                     f"({a['step_s'] / b['step_s']:.2f}x) | {a['peak_gb']:.2f} / {b['peak_gb']:.2f} | "
                     f"{a['loss'][0]:.4f} -> {a['loss'][-1]:.4f} ; {b['loss'][0]:.4f} -> {b['loss'][-1]:.4f} "
                     f"({a['loss_key']}, {a['steps']} / {b['steps']} steps) | {diff:.4f} | {roll} | "
                     f"{accuracy(runs, row)} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--demo", type=Path, help="a finished `dft-verl demo` folder: its base model and data")
    where.add_argument("--runs", type=Path, nargs=2, metavar=("FP32_RUNS", "BF16_RUNS"),
                       help="two finished Table-3 RUNS_DIRs to read (nothing is trained)")
    ap.add_argument("--rows", default="sft,dpo,grpo", help="comma-separated trained rows")
    ap.add_argument("--out", type=Path, default=Path("/tmp/dft_verl_bench/train_dtype"))
    ap.add_argument("--overwrite", action="store_true", help="train again what finished")
    ap.add_argument("--dtypes", default=",".join(DTYPES), help="which of float32,bfloat16 to train (--demo)")
    ap.add_argument("--eval", action="store_true", help="evaluate each trained row as the demo does (--demo)")
    args = ap.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    from dft_verl.platform.cpu import native_bf16

    print(f"native bf16: {native_bf16()}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at start",
          flush=True)
    if args.runs:
        runs = dict(zip(DTYPES, args.runs))
    else:
        out = args.out.resolve()
        env = base_env(args.demo.resolve(), out)
        runs = {d: out / d for d in DTYPES}
        for row in rows:
            for dtype in (d for d in DTYPES if d in args.dtypes.split(",")):
                train(row, env, runs[dtype], dtype, args.overwrite, args.eval)
    print(f"load average {os.getloadavg()[0]:.2f} at end\n")
    print(table(runs, rows))


if __name__ == "__main__":
    main()
