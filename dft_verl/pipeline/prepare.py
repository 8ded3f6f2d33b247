"""Stage 1, prepare: a math dataset -> verl RL parquet (rl.parquet) and SFT messages parquet (sft.parquet).

Source: an HF dataset id (NuminaMath-CoT for the paper) or a local .jsonl/.json/.parquet (GSM8K: question,
answer ending in "#### x"; MATH-style: problem, solution with \\boxed{}, optional answer).

Subsampling: the source rows are visited in the order of a seeded permutation; invalid rows are rejected
with a counted reason; the first ``max_rows`` valid rows are kept and written in source order. The same
seed and source therefore give the same rows, and every kept row is valid.

Outputs in ``prepare.output_dir``:
    rl.parquet           data_source, prompt, ability, reward_model{style, ground_truth},
                         extra_info{split, index, question, source_index}
    sft.parquet          messages [prompt turns, assistant solution], data_source, extra_info (rows that have
                         a worked solution; GSM8K's "#### x" line becomes "The final answer is $\\boxed{x}$.")
    prepare_stats.json   rows examined / kept, rejections by reason with the first examples, prompt_template

Prompts: ``prepare.prompt_template`` names the template of dft_verl.prompts (paper: one user turn; qwen-boxed:
a "You are a helpful assistant." system turn before it). Every later stage and trainer copies these messages, so
it decides the prompts of sampling, RFT/DPO data and PPO/GRPO as well.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from dft_verl.pipeline import artifacts
from dft_verl.prompts import DEFAULT_TEMPLATE, build_prompt, check_template
from dft_verl.rewards import MAX_ANSWER_CHARS, normalize_gold

logger = logging.getLogger(__name__)

QUESTION_KEYS = ("problem", "question")
ANSWER_KEYS = ("answer", "final_answer")
SOLUTION_KEYS = ("solution",)
USAGE = "usage: python -m dft_verl.pipeline.prepare out_dir=DIR prepare.source=DATASET [prepare.max_rows=N] ..."


class Source:
    """Random access to the rows of a local file or an HF dataset, plus a fingerprint of its content."""

    def __init__(self, source: str, split: str = "train", hf_config: str | None = None):
        self.name = source
        path = Path(source).expanduser()
        if path.exists():
            self.rows = _read_local(path)
            self.digest = artifacts.file_digest(path)
        elif path.suffix in (".jsonl", ".json", ".parquet") or source.startswith((".", "/", "~")):
            raise FileNotFoundError(f"prepare.source {source!r} does not exist")
        else:
            import datasets

            ds = datasets.load_dataset(source, hf_config, split=split)
            self.rows = ds
            self.digest = f"hf:{source}:{hf_config}:{split}:{getattr(ds, '_fingerprint', '')}"
        self.columns = list(self.rows[0].keys()) if len(self.rows) else []

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[int(i)]


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a .jsonl file, blank lines skipped; errors name ``file:line``."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _read_local(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of objects (or {{'data': [...]}})")
        return data
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_dict("records")
    raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet")


def derive_data_source(source: str) -> str:
    """``AI-MO/NuminaMath-CoT`` -> ``numinamath_cot``; ``.../gsm8k/train.jsonl`` -> ``gsm8k``."""
    path = Path(source)
    name = path.stem if path.suffix else path.name
    if name.lower() in {"train", "test", "validation", "val", "dev", "data"} and path.parent.name:
        name = path.parent.name
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "math"


def _pick(keys_present, configured, candidates, role, source, required=True) -> str | None:
    if configured:
        if configured not in keys_present:
            raise ValueError(f"{source}: prepare.{role}_key={configured!r} is not a column; columns: {keys_present}")
        return configured
    for k in candidates:
        if k in keys_present:
            return k
    if required:
        raise ValueError(f"{source}: no {role} column among {list(candidates)}; columns: {keys_present} "
                         f"(set prepare.{role}_key)")
    return None


def _scalar(value):
    """Unwrap one-element lists (OlympiadBench stores final_answer as a list)."""
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) == 1:
        return value[0]
    return value


def gsm8k_solution_to_boxed(solution: str) -> str:
    """GSM8K worked solution in the prompt's format: calculator annotations <<...>> removed and the
    final "#### x" line replaced by "The final answer is $\\boxed{x}$."."""
    body, _, answer = solution.rpartition("####")
    body = re.sub(r"<<[^<>]*>>", "", body).rstrip()
    gold = normalize_gold("####" + answer)
    return f"{body}\nThe final answer is $\\boxed{{{gold}}}$."


def prepare_rows(source: Source, cfg, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(rl rows, sft rows, stats) for the ``prepare`` config block ``cfg`` (see module docstring)."""
    cols = source.columns
    q_key = _pick(cols, cfg.question_key, QUESTION_KEYS, "question", source.name)
    a_key = _pick(cols, cfg.answer_key, ANSWER_KEYS, "answer", source.name, required=False)
    s_key = _pick(cols, cfg.solution_key, SOLUTION_KEYS, "solution", source.name, required=False)
    if a_key is None and s_key is None:
        raise ValueError(f"{source.name}: no answer or solution column; columns: {cols}")
    data_source = cfg.data_source or derive_data_source(source.name)
    template = check_template(cfg.prompt_template)
    order = np.random.default_rng(seed).permutation(len(source))
    limit = len(source) if cfg.max_rows is None else int(cfg.max_rows)
    kept, reasons, examples = [], Counter(), []
    examined = 0
    for i in order:
        if len(kept) >= limit:
            break
        examined += 1
        row = source[i]
        question = row.get(q_key)
        gold_raw = _scalar(row.get(a_key)) if a_key else None
        solution = row.get(s_key) if s_key else None
        if not isinstance(solution, str) and isinstance(gold_raw, str) and "####" in gold_raw:
            solution = gold_raw  # GSM8K: the answer field is the worked solution
        if gold_raw is None or (isinstance(gold_raw, str) and not gold_raw.strip()):
            gold_raw = solution  # NuminaMath-CoT / MATH without an answer column: last \boxed of the solution
        gold = normalize_gold(gold_raw)
        reason = None
        if not isinstance(question, str) or not question.strip():
            reason = "no_question"
        elif gold is None:
            reason = "no_gold"
        elif len(gold) > MAX_ANSWER_CHARS:
            reason = "bad_gold"
        if reason:
            reasons[reason] += 1
            if len(examples) < 20:
                field = q_key if reason == "no_question" else (a_key or s_key)
                examples.append({"source_index": int(i), "reason": reason, "field": field})
            continue
        kept.append((int(i), question.strip(), gold, solution if isinstance(solution, str) else None))
    kept.sort()
    rl, sft = [], []
    for idx, (src_i, question, gold, solution) in enumerate(kept):
        prompt = build_prompt(question, template)
        extra = {"split": cfg.split_name, "index": idx, "question": question, "source_index": src_i}
        rl.append({"data_source": data_source, "prompt": prompt, "ability": "math",
                   "reward_model": {"style": "rule", "ground_truth": gold}, "extra_info": extra})
        if solution and solution.strip():
            text = gsm8k_solution_to_boxed(solution) if "####" in solution else solution.strip()
            sft.append({"messages": prompt + [{"role": "assistant", "content": text}],
                        "data_source": data_source, "extra_info": extra})
    stats = {"source": source.name, "data_source": data_source, "n_source_rows": len(source),
             "n_examined": examined, "n_kept": len(rl), "n_sft": len(sft), "rejected": dict(reasons),
             "rejected_examples": examples, "keys": {"question": q_key, "answer": a_key, "solution": s_key},
             "prompt_template": template}
    return pd.DataFrame(rl), pd.DataFrame(sft), stats


def run(cfg) -> dict:
    """Run the stage for the full pipeline config ``cfg``; returns the stats (skips when already done)."""
    artifacts.require(cfg, "out_dir", "prepare.source")
    pc = cfg.prepare
    out = Path(pc.output_dir)
    check_template(pc.prompt_template)  # before a hub dataset is loaded
    source = Source(pc.source, pc.split, pc.hf_config)
    semantic = {k: v for k, v in artifacts.to_plain(pc).items() if k != "output_dir"}
    if semantic.get("prompt_template") == DEFAULT_TEMPLATE:
        # the default is left out of the fingerprint: folders prepared before the setting existed stay valid
        del semantic["prompt_template"]
    fp = artifacts.fingerprint({**semantic, "seed": int(cfg.seed), "input": source.digest})
    state = artifacts.StageState("prepare", out, fp, overwrite=bool(cfg.overwrite))
    if state.done():
        logger.info("prepare: %s is up to date, skipping", out)
        return json.loads((out / "prepare_stats.json").read_text())
    rl, sft, stats = prepare_rows(source, pc, int(cfg.seed))
    if rl.empty:
        raise ValueError(f"{source.name}: no valid rows (rejections: {stats['rejected']})")
    artifacts.write_parquet_atomic(rl, out / "rl.parquet")
    outputs = ["rl.parquet", "prepare_stats.json"]
    if not sft.empty:
        artifacts.write_parquet_atomic(sft, out / "sft.parquet")
        outputs.append("sft.parquet")
    artifacts.write_json_atomic(stats, out / "prepare_stats.json")
    state.finish(outputs)
    logger.info("prepare: kept %d of %d examined rows (%s) -> %s", stats["n_kept"], stats["n_examined"],
                stats["rejected"], out)
    return stats


def main(argv: list[str] | None = None) -> int:
    return artifacts.stage_main(run, USAGE, argv, summary=lambda s: {k: s[k] for k in ("n_kept", "n_sft", "rejected")})


if __name__ == "__main__":
    sys.exit(main())
