"""The five math benchmarks of the paper's Table 3: questions and gold answers.

A benchmark is read either from a local folder in the Qwen2.5-Math evaluation layout, `<data_dir>/<name>/test.jsonl`
(one JSON object per line), or from the Hugging Face hub with `datasets.load_dataset` (ids in `HF_SOURCES`).

Gold-answer rules (the Qwen2.5-Math evaluation conventions):

| name            | question field          | gold answer                                                        |
| --------------- | ----------------------- | ------------------------------------------------------------------ |
| math500         | `problem`               | `answer`                                                           |
| minerva_math    | `problem` / `question`  | last `\\boxed{...}` in `solution`; `answer` when a copy has no solution |
| olympiadbench   | `question`              | `final_answer[0]`, with its `$` math delimiters removed           |
| aime24          | `problem` / `question`  | `answer`                                                           |
| amc23           | `problem` / `question`  | `answer` (a float such as 27.0 becomes "27")                       |

A malformed row raises `BenchmarkFormatError` naming the file (or hub id), the row and the field.

Gold audit: `python -m dft_verl.benchmarks audit [--data-dir ../shared/data/eval] [--benchmarks ...]` reads every
gold as the judge does (`dft_verl.rewards.normalize_gold`, then `read_answer`) and lists, per benchmark, each gold
that does not read as a value: "string" (no LaTeX reading; judged as a normalised string, reason "string_gold"),
"suspicious" (a reading that is Euler's e alone, or a gold that still holds a number written `<digits>e<digits>`), with its row, the
normalised gold and the reading. It exits 1 when a gold is suspicious. docs/benchmarks.md has its output.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dft_verl.prompts import DEFAULT_TEMPLATE, build_prompt
from dft_verl.rewards import last_boxed, normalize_answer, normalize_gold, read_answer

BENCHMARKS: tuple[str, ...] = ("math500", "minerva_math", "olympiadbench", "aime24", "amc23")

DISPLAY_NAMES: dict[str, str] = {
    "math500": "Math500",
    "minerva_math": "Minerva Math",
    "olympiadbench": "OlympiadBench",
    "aime24": "AIME24",
    "amc23": "AMC23",
}


@dataclass(frozen=True)
class HFSource:
    """Where `datasets.load_dataset(path, name, split=split)` finds a benchmark on the hub."""

    path: str
    name: str | None
    split: str


# Default hub copies; override with `load_benchmark(..., hf_source=HFSource(...))` or eval's `--hf-source`.
HF_SOURCES: dict[str, HFSource] = {
    "math500": HFSource("HuggingFaceH4/MATH-500", None, "test"),
    "minerva_math": HFSource("math-ai/minervamath", None, "test"),
    "olympiadbench": HFSource("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"),
    "aime24": HFSource("HuggingFaceH4/aime_2024", None, "train"),
    "amc23": HFSource("math-ai/amc23", None, "test"),
}


class BenchmarkFormatError(ValueError):
    """A benchmark row lacks a field or holds a value of the wrong kind."""


@dataclass(frozen=True)
class Question:
    """One benchmark question: `index` is its 0-based row number in the source."""

    benchmark: str
    index: int
    question: str
    gold: str

    def prompt(self, template: str = DEFAULT_TEMPLATE) -> list[dict[str, str]]:
        """The chat messages shown to the model: question + boxed-answer instruction under the named
        `dft_verl.prompts` template (paper, qwen-boxed)."""
        return build_prompt(self.question, template)


def _fail(where: str, row: int, field: str, problem: str) -> BenchmarkFormatError:
    return BenchmarkFormatError(f"{where}: row {row}: field '{field}': {problem}")


def _field(record: dict, names: tuple[str, ...], where: str, row: int) -> tuple[str, Any]:
    """First of `names` present (and not None) in the record, with its value."""
    for name in names:
        if record.get(name) is not None:
            return name, record[name]
    raise _fail(where, row, "/".join(names), f"missing (row has keys {sorted(record)})")


def _text(value: Any, where: str, row: int, field: str) -> str:
    if isinstance(value, str):
        if not value.strip():
            raise _fail(where, row, field, "empty string")
        return value.strip()
    if isinstance(value, bool):
        raise _fail(where, row, field, f"expected a string or number, got {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(where, row, field, f"not a finite number: {value!r}")
        return str(int(value)) if value.is_integer() else repr(value)
    raise _fail(where, row, field, f"expected a string or number, got {type(value).__name__} {value!r}")


_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def _gold_answer(record: dict, where: str, row: int) -> tuple[str, Any]:
    name, value = _field(record, ("answer",), where, row)
    return name, _text(value, where, row, name)


def _gold_minerva(record: dict, where: str, row: int) -> tuple[str, Any]:
    if record.get("solution") is not None:
        solution = _text(record["solution"], where, row, "solution")
        boxed = last_boxed(solution)
        if boxed is None:
            raise _fail(where, row, "solution", "holds no non-empty \\boxed{...} answer")
        return "solution", boxed
    return _gold_answer(record, where, row)


def _gold_olympiad(record: dict, where: str, row: int) -> tuple[str, Any]:
    name, value = _field(record, ("final_answer",), where, row)
    if hasattr(value, "tolist"):  # numpy array from a parquet-backed hub dataset
        value = value.tolist()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _fail(where, row, name, f"expected a non-empty list, got {value!r}")
    answer = _UNESCAPED_DOLLAR.sub("", _text(value[0], where, row, f"{name}[0]")).strip()
    if not answer:
        raise _fail(where, row, f"{name}[0]", f"empty once '$' delimiters are removed: {value[0]!r}")
    return name, answer


@dataclass(frozen=True)
class _Rule:
    question_fields: tuple[str, ...]
    gold: Callable[[dict, str, int], tuple[str, str]]


RULES: dict[str, _Rule] = {
    "math500": _Rule(("problem",), _gold_answer),
    "minerva_math": _Rule(("problem", "question"), _gold_minerva),
    "olympiadbench": _Rule(("question",), _gold_olympiad),
    "aime24": _Rule(("problem", "question"), _gold_answer),
    "amc23": _Rule(("problem", "question"), _gold_answer),
}


def check_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """The names, validated against BENCHMARKS (order kept, duplicates dropped)."""
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; supported: {list(BENCHMARKS)}")
    return list(dict.fromkeys(names))


def parse_record(benchmark: str, record: dict, where: str, row: int) -> Question:
    """One source row -> Question, applying the benchmark's question and gold-answer rule."""
    if not isinstance(record, dict):
        raise _fail(where, row, "<row>", f"expected a JSON object, got {type(record).__name__}")
    rule = RULES[check_names([benchmark])[0]]
    qfield, qvalue = _field(record, rule.question_fields, where, row)
    question = _text(qvalue, where, row, qfield)
    _, gold = rule.gold(record, where, row)
    return Question(benchmark=benchmark, index=row, question=question, gold=gold)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All JSON objects of a .jsonl file (blank lines skipped); errors name the file and 0-based row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    records = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise BenchmarkFormatError(f"{path}: line {line_no + 1}: not valid JSON: {e}") from None
    return records


def load_benchmark(
    benchmark: str,
    data_dir: str | os.PathLike | None = None,
    hf_source: HFSource | None = None,
    limit: int | None = None,
) -> list[Question]:
    """Questions of one benchmark, from `<data_dir>/<benchmark>/test.jsonl` or (no data_dir) the hub.

    `limit` keeps the first N rows (smoke runs). Row indices are 0-based positions in the source.
    """
    benchmark = check_names([benchmark])[0]
    if data_dir is not None:
        path = Path(data_dir) / benchmark / "test.jsonl"
        records, where = read_jsonl(path), str(path)
    else:
        source = hf_source or HF_SOURCES[benchmark]
        import datasets  # imported here: local-folder runs and tests never touch the hub

        ds = datasets.load_dataset(source.path, source.name, split=source.split)
        records = [dict(r) for r in ds]
        where = f"hf:{source.path}" + (f"/{source.name}" if source.name else "") + f"[{source.split}]"
    if not records:
        raise BenchmarkFormatError(f"{where}: no rows")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        records = records[:limit]
    return [parse_record(benchmark, r, where, i) for i, r in enumerate(records)]


# --------------------------------------------------------------------------------------------------------
# Gold audit
# --------------------------------------------------------------------------------------------------------

# A number in scientific notation that normalisation left alone, or a reading that is Euler's e by itself.
_UNREAD_SCIENTIFIC = re.compile(r"(?<![\w\\])\d+(?:\.\d*)?[eE][+-]?\d")


@dataclass(frozen=True)
class GoldReading:
    """How the judge reads one gold: `kind` is "value", "string" or "suspicious" (see the module docstring)."""

    benchmark: str
    index: int
    gold: str
    normalized: str
    kind: str
    reading: str


def read_gold_as_judged(q: Question) -> GoldReading:
    """The judge's reading of a question's gold (math-verify in this process, no time limit: benchmark files are
    trusted input, unlike model output)."""
    gold = normalize_gold(q.gold) or ""
    normalized = normalize_answer(gold)
    values = read_answer(gold)
    reading = "; ".join(str(v) for v in values)
    if not values:
        kind = "string"
    elif reading == "E" and normalized != "e" or _UNREAD_SCIENTIFIC.search(normalized):
        kind = "suspicious"
    else:
        kind = "value"
    return GoldReading(q.benchmark, q.index, q.gold, normalized, kind, reading)


def audit(names, data_dir=None) -> dict[str, list[GoldReading]]:
    """Every gold of the named benchmarks, read as the judge reads it, by benchmark."""
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return {name: [read_gold_as_judged(q) for q in load_benchmark(name, data_dir=data_dir)]
            for name in check_names(list(names))}


def format_audit(readings: dict[str, list[GoldReading]]) -> str:
    """The audit report: a count line per benchmark, then each gold not read as a value."""
    lines = []
    for name, rows in readings.items():
        odd = [r for r in rows if r.kind != "value"]
        counts = {k: sum(r.kind == k for r in rows) for k in ("value", "string", "suspicious")}
        lines.append(f"{name}: {len(rows)} golds, {counts['value']} values, {counts['string']} strings, "
                     f"{counts['suspicious']} suspicious")
        lines += [f"  row {r.index} [{r.kind}] {r.normalized!r} -> {r.reading or '(no value)'}" for r in odd]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m dft_verl.benchmarks", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("audit", help="list every gold the judge does not read as a value")
    a.add_argument("--data-dir", default=None, help="folder of <benchmark>/test.jsonl (default: the hub)")
    a.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    args = p.parse_args(argv)
    readings = audit([b.strip() for b in args.benchmarks.split(",") if b.strip()], args.data_dir)
    print(format_audit(readings))
    return 1 if any(r.kind == "suspicious" for rows in readings.values() for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
