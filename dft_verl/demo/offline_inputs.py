"""Inputs of an offline Table-3 rehearsal (recipes/table3, PRESET=cpu-tiny): no hub, no download.

    python -m dft_verl.demo.offline_inputs --task-dir DIR --n-train 8 --n-test 8 \
        [--bench-dir BENCH --bench math500] [--tiny-model MODEL] [--families add] [--seed 0]

Writes, each only when absent (a second run does nothing):
    DIR/train.jsonl, DIR/test.jsonl    seeded arithmetic problems (dft_verl.demo.tasks), disjoint splits
    BENCH/<bench>/test.jsonl           the test split in dft_verl.eval's local layout (problem, answer), so
                                       `python -m dft_verl.eval --data-dir BENCH --benchmarks <bench>` reads it
    MODEL/                             dft_verl.tiny.teach_tiny_model fitted to the train split's gold solutions:
                                       sampled at temperature 1.0 it solves a share of them, so verify, filter,
                                       DPO pairs and RL rewards see right and wrong answers
The benchmark name must be one dft_verl.eval knows; the questions are the generated ones, not that benchmark's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dft_verl.benchmarks import BENCHMARKS


def write_bench(test_file, target: Path) -> Path:
    """A task split (question, answer) as a benchmark file in dft_verl.eval's local layout (problem, answer)."""
    from dft_verl.demo.tasks import read_task_file, write_jsonl

    return write_jsonl([{"problem": r["question"], "answer": r["answer"]} for r in read_task_file(test_file)], target)


def write_inputs(task_dir: Path, n_train: int, n_test: int, seed: int = 0, families: tuple[str, ...] = ("add",),
                 bench_dir: Path | None = None, bench: str = "math500", tiny_model: Path | None = None) -> list[str]:
    """Write what is missing; return a line per output ("wrote ..." or "exists ...")."""
    from dft_verl.demo.tasks import read_task_file, write_task

    if bench not in BENCHMARKS:
        raise ValueError(f"--bench {bench!r}: dft_verl.eval knows only {list(BENCHMARKS)}")
    done = []
    train, test = task_dir / "train.jsonl", task_dir / "test.jsonl"
    if train.is_file() and test.is_file():
        done.append(f"exists {train}, {test}")
    else:
        write_task(task_dir, n_train, n_test, seed, families)
        done.append(f"wrote {train}, {test}")
    if bench_dir is not None:
        target = bench_dir / bench / "test.jsonl"
        if target.is_file():
            done.append(f"exists {target}")
        else:
            write_bench(test, target)
            done.append(f"wrote {target}")
    if tiny_model is not None:
        if (tiny_model / "config.json").is_file():
            done.append(f"exists {tiny_model}")
        else:
            from dft_verl.tiny import teach_tiny_model

            # teach into a sibling folder, then rename: a half-taught model never sits at the final path
            tmp = tiny_model.with_name(tiny_model.name + ".partial")
            teach_tiny_model(tmp, read_task_file(train))
            tmp.rename(tiny_model)
            done.append(f"wrote {tiny_model}")
    return done


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m dft_verl.demo.offline_inputs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--task-dir", required=True, type=Path, help="folder of train.jsonl and test.jsonl")
    ap.add_argument("--n-train", type=int, required=True)
    ap.add_argument("--n-test", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", default="add", help="comma-separated dft_verl.demo.tasks families")
    ap.add_argument("--bench-dir", type=Path, default=None, help="write the test split here as <bench>/test.jsonl")
    ap.add_argument("--bench", default="math500", help=f"benchmark name for --bench-dir, one of {list(BENCHMARKS)}")
    ap.add_argument("--tiny-model", type=Path, default=None, help="teach a tiny model on the train split here")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    lines = write_inputs(args.task_dir, args.n_train, args.n_test, args.seed, tuple(args.families.split(",")),
                         args.bench_dir, args.bench, args.tiny_model)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
