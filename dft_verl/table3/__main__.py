"""``python -m dft_verl.table3``: the Table-3 runs.

    python -m dft_verl.table3 run [ROW ...] [-- OVERRIDE ...]   # data -> rows -> report ("all": every stage)
    python -m dft_verl.table3 print ROW [...] [-- OVERRIDE ...] # each step's flat, copy-pasteable command
    python -m dft_verl.table3 check [ROW ...] [-- OVERRIDE ...] # each step's config composed against installed verl
    python -m dft_verl.table3 settings                          # every setting, its value here and what it does
    python -m dft_verl.table3 rows                              # the rows: label, trainer, data, paper average

Settings are environment variables (PRESET, MODEL_PATH, RUNS_DIR, SFT_LR, ...: ``settings`` lists them).
ROW: data, base, sft, iw_sft_sft, dft_sft, dpo, rft, ppo, grpo, iw_sft_offline, dft_offline, report, or all.
OVERRIDEs (hydra key=value) go last on the one named row's main command. ``run`` with DRY_RUN=1 prints and checks.
Exit status: 0 done, 1 a step failed (its log named), 2 a bad setting or row.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dft_verl.table3 import launch, plan
from dft_verl.table3.settings import SettingsError, describe, resolve


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dft_verl.table3", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (("run", "run the stages (skipping what finished with the same inputs)"),
                        ("print", "print each step's command"), ("check", "compose each step's config against verl")):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("rows", nargs="*", help="stages: data, the rows, report, or all (run/check default: all)")
    sub.add_parser("settings", help="every setting with its value and meaning")
    sub.add_parser("rows", help="the Table-3 rows")
    return p


def print_steps(s, stages: list[str], extra: list[str], out=sys.stdout) -> list[plan.Step]:
    """Each step's command, under a "# stage/step" line; the steps, for ``check``."""
    steps = []
    for stage in stages:
        for step in plan.steps(s, stage, extra):
            node = "" if step.all_nodes or s.node0 else "  (node 0 only: skipped on this node)"
            print(f"# {step.id}{node}\n{launch.shell_line(*launch.step_command(s, step))}", file=out, flush=True)
            steps.append(step)
    return steps


def check_steps(steps: list[plan.Step], out=sys.stdout) -> int:
    """Check every step's command (dft_verl.table3.check); returns the number of failures."""
    from dft_verl.table3.check import CheckError, check_command

    failures = 0
    for step in steps:
        try:
            notes = check_command(step.module, step.args)
        except CheckError as e:
            failures += 1
            print(f"check FAIL {step.id}: python -m {step.module}\n  {e}", file=out, flush=True)
            continue
        print(f"check ok {step.id}: {'; '.join(notes)}", file=out, flush=True)
    print(f"table3 check: {len(steps) - failures} ok, {failures} failed", file=out, flush=True)
    return failures


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        k = argv.index("--")
        argv, extra = argv[:k], argv[k + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    try:
        s = resolve()
        if args.command == "settings":
            print(describe(s))
            return 0
        if args.command == "rows":
            from dft_verl.table3.rows import ROWS

            for row in ROWS:
                paper = "—" if row.paper_average is None else f"{row.paper_average:.2f}"
                print(f"{row.key:15s} {row.label:24s} trainer={row.trainer or '-':4s} config={row.config or '-':8s} "
                      f"data={row.data or '-':4s} paper={paper} {' '.join(row.overrides)}")
            return 0
        if args.command == "print" and not args.rows:
            parser.error("print: name the rows (or all)")
        stages = plan.parse_stages(args.rows or ["all"])
        if args.command == "print":
            print_steps(s, stages, extra)
            return 0
        if args.command == "check" or s.flag("DRY_RUN"):
            steps = print_steps(s, stages, extra) if args.command == "run" else [
                st for stage in stages for st in plan.steps(s, stage, extra)]
            return 1 if check_steps(steps) else 0
        from dft_verl.table3.runner import Runner, StepFailed

        try:
            Runner(s).run(stages, extra)
        except StepFailed as e:
            print(str(e), file=sys.stderr, flush=True)
            print(f"row '{e.step.stage}' failed; its logs: {plan.runs(s, e.step.stage)}/ (rerun to resume: finished "
                  "steps are skipped)", file=sys.stderr, flush=True)
            return 1
    except (SettingsError, ValueError, KeyError, argparse.ArgumentTypeError) as e:
        print(f"python -m dft_verl.table3: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
