"""The ``dft-verl`` command.

    dft-verl demo [--fast] [--rows base,sft,...] [--seeds N] [--out DIR] [--config FILE] [--model DIR] [--train-file F]
                  [--test-file F] [--overwrite] [key=value ...]
    dft-verl smollm2 [--cache-dir DIR]       # convert the packaged SmolLM2-135M-Instruct GGUF once, print its folder

``demo`` rehearses the whole Table-3 comparison on CPU by running the Table-3 stages (dft_verl.table3) at a CPU preset
(dft_verl/demo/run.py; settings in dft_verl/demo/demo.yaml, ``--fast`` layers demo_fast.yaml). key=value overrides
any demo.yaml entry, e.g. ``task.n_test=64 recipe_env.GRPO_N=8``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="Table 3 on CPU: data, all ten rows through the recipes, eval, report",
                       description="Rehearse the Table-3 comparison on CPU through recipes/table3 (cpu-small preset); "
                                   "a second run reuses finished steps.")
    p.add_argument("--fast", action="store_true", help="smaller sizes (demo_fast.yaml) for a first look")
    p.add_argument("--seeds", type=int, default=None,
                   help="train every row this many times with different seeds and report the spread (default 1)")
    p.add_argument("--rows", default=None,
                   help="comma-separated subset of the Table-3 rows (default: all ten, demo.yaml `rows`)")
    p.add_argument("--out", default=None, help="output folder (default: runs/demo, or runs/demo_fast with --fast)")
    p.add_argument("--config", default=None, help="a yaml layered over demo.yaml")
    p.add_argument("--model", default=None, help="HF model folder instead of the packaged SmolLM2-135M-Instruct")
    p.add_argument("--train-file", default=None, help="your task: jsonl with question, answer (and solution)")
    p.add_argument("--test-file", default=None, help="held-out jsonl (default: hold out task.n_test train rows)")
    p.add_argument("--overwrite", action="store_true", help="rerun every step, also those finished with the same inputs")
    p.add_argument("--dry-run", action="store_true",
                   help="print every step the rows would run and check its config against verl; run nothing (DRY_RUN=1)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="any demo.yaml entry, e.g. task.n_test=64 recipe_env.SAMPLE_N=8")


def run_demo(args) -> dict:
    # Before torch loads: OpenMP threads that sleep while waiting instead of spinning. With spinning, two
    # threads on two busy cores ran a decode step 15x slower in CPU time (measured: 4.3 s vs 0.26 s).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from dft_verl.demo.run import Demo, load_config
    from dft_verl.demo.summary import list_outputs

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"out={args.out}")
    elif args.fast and not any(o.startswith("out=") for o in overrides):
        overrides.append("out=runs/demo_fast")
    for flag, key in ((args.model, "model.path"), (args.train_file, "task.train_file"),
                      (args.test_file, "task.test_file")):
        if flag:
            overrides.append(f"{key}={flag}")
    if args.overwrite:
        overrides.append("overwrite=true")
    if args.rows:
        overrides.append(f"rows=[{args.rows}]")
    if args.seeds is not None:
        overrides.append(f"seeds={args.seeds}")
    cfg = load_config(fast=args.fast, config_file=args.config, overrides=overrides)
    if args.dry_run or os.environ.get("DRY_RUN") == "1":
        failures = Demo(cfg).dry_run()
        if failures:
            raise SystemExit(1)
        return {}

    out = Path(cfg.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "demo.log"
    fmt = logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handlers = [logging.StreamHandler(sys.stderr), logging.FileHandler(log_path)]
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    log = logging.getLogger("dft_verl.demo")
    try:
        log.info("dft-verl demo -> %s (log: %s)", out, log_path)
        t0 = time.perf_counter()
        summary = Demo(cfg).run()
        print(list_outputs(out))
        timings = ", ".join(f"{k} {v:.0f}s" for k, v in summary["timings"].items() if k != "total")
        total = summary["timings"]["total"]
        print(f"Stage times: {timings}; total " + (f"{total / 60:.1f} min" if total >= 60 else f"{total:.0f} s"))
        if summary["skipped"]:
            print(f"Reused from an earlier run: {', '.join(summary['skipped'])}")
        print(f"Summary: {out / 'report' / 'summary.md'}   Table 3: {out / 'report' / 'table3.md'}   "
              f"Log: {log_path}")
        log.info("demo finished in %.1f min", (time.perf_counter() - t0) / 60)
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dft-verl", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _demo_parser(sub)
    p = sub.add_parser("smollm2", help="convert the packaged SmolLM2-135M-Instruct GGUF to an HF folder (once)")
    p.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    if args.command == "demo":
        run_demo(args)
    elif args.command == "smollm2":
        from dft_verl.demo import smollm2

        smollm2.main(["--cache-dir", args.cache_dir] if args.cache_dir else [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
