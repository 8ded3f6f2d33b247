"""Seeded arithmetic word problems with known answers and short gold step-by-step solutions.

Each row: question:str, answer:str (an integer, as text), solution:str (steps ending in "\\boxed{answer}"),
family:str, index:int. The same (seed, sizes, families) always give the same files, and no question appears in
more than one split. Families are graded by how many operations a solution needs:

    add       a + b                          (a, b in 2..20)            one step
    sub       a - b                          (a in 10..40, b < a)       one step
    mul       a * b                          (a, b in 2..9)             one step
    word_add  "N has a X. She gets b more."  a + b                      one step, in words
    word_two  "N has a X. Gets b, gives c."  a + b - c                  two steps, in words

    python -m dft_verl.demo.tasks --out DIR [--n-train 64 --n-test 32 --n-format 32 --seed 0 --families add,mul]
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Callable
from pathlib import Path

NAMES = ["Ava", "Ben", "Mia", "Leo", "Zoe", "Sam", "Ivy", "Max", "Lily", "Omar", "Nora", "Eli"]
ITEMS = ["apples", "stickers", "marbles", "pencils", "cookies", "books", "shells", "coins", "cards", "stamps"]


def _pronoun(name: str) -> str:
    return "She" if name in {"Ava", "Mia", "Zoe", "Ivy", "Lily", "Nora"} else "He"


def _add(rng: random.Random) -> tuple[str, int, str]:
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    return f"What is {a} + {b}?", a + b, f"We add the two numbers: {a} + {b} = {a + b}."


def _sub(rng: random.Random) -> tuple[str, int, str]:
    a = rng.randint(10, 40)
    b = rng.randint(1, a - 1)
    return f"What is {a} - {b}?", a - b, f"We subtract: {a} - {b} = {a - b}."


def _mul(rng: random.Random) -> tuple[str, int, str]:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return f"What is {a} * {b}?", a * b, f"We multiply: {a} * {b} = {a * b}."


def _word_add(rng: random.Random) -> tuple[str, int, str]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    q = f"{name} has {a} {item}. {_pronoun(name)} gets {b} more {item}. How many {item} does {name} have now?"
    s = f"{name} starts with {a} {item} and gets {b} more, so {name} has {a} + {b} = {a + b} {item}."
    return q, a + b, s


def _word_two(rng: random.Random) -> tuple[str, int, str]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(5, 20), rng.randint(2, 15)
    c = rng.randint(1, a + b - 1)
    he = _pronoun(name)
    q = (f"{name} has {a} {item}. {he} buys {b} more {item} and then gives {c} {item} to a friend. "
         f"How many {item} does {name} have now?")
    s = (f"{name} starts with {a} {item}. After buying {b} more, {name} has {a} + {b} = {a + b} {item}. "
         f"After giving away {c}, {name} has {a + b} - {c} = {a + b - c} {item}.")
    return q, a + b - c, s


FAMILIES: dict[str, Callable[[random.Random], tuple[str, int, str]]] = {
    "add": _add, "sub": _sub, "mul": _mul, "word_add": _word_add, "word_two": _word_two,
}
DEFAULT_FAMILIES = ("add", "sub", "mul", "word_add", "word_two")


def make_problems(n: int, seed: int, families: tuple[str, ...] = DEFAULT_FAMILIES,
                  exclude: set[str] | None = None) -> list[dict]:
    """`n` distinct problems, families taken round-robin, none of whose question is in `exclude`.

    A family with no unused question left (2000 draws in a row repeat one) leaves the rotation and the others fill
    the rest; the first problems are the same whatever `n` (a larger `n` extends a smaller one)."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"unknown task families {unknown}; supported: {sorted(FAMILIES)}")
    rng = random.Random(seed)
    seen = set(exclude or ())
    rows: list[dict] = []
    rotation = list(families)
    misses = 0  # consecutive draws that repeated a question
    while len(rows) < n:
        family = rotation[len(rows) % len(rotation)]
        question, answer, steps = FAMILIES[family](rng)
        if question in seen:
            misses += 1
            if misses > 2000:
                rotation.remove(family)
                misses = 0
                if not rotation:
                    raise ValueError(f"cannot draw {n} distinct problems from families {list(families)}: "
                                     f"only {len(rows)} exist besides the excluded ones")
            continue
        misses = 0
        seen.add(question)
        rows.append({
            "index": len(rows),
            "question": question,
            "answer": str(answer),
            "solution": f"{steps}\nThe final answer is \\boxed{{{answer}}}.",
            "family": family,
        })
    return rows


def write_jsonl(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write rows as jsonl atomically (dft_verl.atomic)."""
    from dft_verl.atomic import write_text_atomic

    return write_text_atomic("".join(json.dumps(row) + "\n" for row in rows), path)


def read_task_file(path: str | os.PathLike) -> list[dict]:
    """Rows of a user-supplied .jsonl task file (objects; the prepare stage checks their fields)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"task file not found: {path}")
    if path.suffix != ".jsonl":
        raise ValueError(f"{path}: task files must be .jsonl (one JSON object per line)")
    from dft_verl.pipeline.prepare import read_jsonl

    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def split_rows(rows: list[dict], n_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, test): `n_test` rows chosen by a seeded permutation are held out; both keep the file order."""
    if not 0 < n_test < len(rows):
        raise ValueError(f"cannot hold out {n_test} of {len(rows)} rows: need 0 < n_test < number of rows")
    held = set(random.Random(seed).sample(range(len(rows)), n_test))
    train = [r for i, r in enumerate(rows) if i not in held]
    test = [r for i, r in enumerate(rows) if i in held]
    return train, test


def write_task(out_dir: str | os.PathLike, n_train: int, n_test: int, seed: int = 0,
               families: tuple[str, ...] = DEFAULT_FAMILIES, n_format: int = 0) -> dict[str, Path]:
    """Write `train.jsonl`, `test.jsonl` (and `format.jsonl` when n_format > 0) under `out_dir`; return their paths.

    No question appears in two files. The held-out split is drawn last: train and format do not depend on n_test,
    and a larger n_test extends a smaller one (the same first questions), so growing the held-out set changes only
    what is evaluated, never what is trained."""
    train = make_problems(n_train, seed, families)
    used = {r["question"] for r in train}
    out_dir = Path(out_dir)
    paths = {"train": write_jsonl(train, out_dir / "train.jsonl")}
    if n_format > 0:
        rows = make_problems(n_format, seed + 2, families, exclude=used)
        used |= {r["question"] for r in rows}
        paths["format"] = write_jsonl(rows, out_dir / "format.jsonl")
    paths["test"] = write_jsonl(make_problems(n_test, seed + 1, families, exclude=used), out_dir / "test.jsonl")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write seeded arithmetic word problems as train/test jsonl.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--n-train", type=int, default=64)
    parser.add_argument("--n-test", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-format", type=int, default=0, help="also write format.jsonl (warm-up gold solutions)")
    parser.add_argument("--families", default=",".join(DEFAULT_FAMILIES))
    args = parser.parse_args(argv)
    paths = write_task(args.out, args.n_train, args.n_test, args.seed, tuple(args.families.split(",")), args.n_format)
    for split, path in paths.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
