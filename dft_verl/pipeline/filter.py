"""Stage 4, filter: verified samples -> SFT messages of correct responses (RFT / DFT data) and DPO pairs.

Per question, after dropping rows whose gold is unusable (no_gold, bad_gold) and exact duplicate responses
(same question, same text; the lowest sample_idx is kept):
    sft.parquet  one row per correct response: messages = prompt + [assistant: response], data_source,
                 extra_info{split, index, sample_idx, question}; at most ``max_per_question`` per question.
    dpo.parquet  one row per (correct, wrong) pair of the same question: prompt, chosen, rejected, index,
                 data_source. "Wrong" means reason in ``rejected_reasons`` and a non-empty response; timeouts
                 and worker errors are uncertain and never used. Pairs are taken in order of i+j over
                 (chosen i, rejected j), so a cap of m pairs spreads over different responses.
    filter_stats.json  counts in/out, duplicates removed, rows dropped by reason.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pandas as pd

from dft_verl.pipeline import artifacts
from dft_verl.prompts import question_from_prompt

logger = logging.getLogger(__name__)

USAGE = "usage: python -m dft_verl.pipeline.filter out_dir=DIR [filter.max_pairs_per_question=N] ..."
UNUSABLE_GOLD = ("no_gold", "bad_gold")
NEVER_REJECTED = ("ok", "timeout", "worker_error", "empty_response", "no_gold", "bad_gold")


def _messages(prompt) -> list[dict]:
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


def filter_verified(verified: pd.DataFrame, fc) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(sft rows, dpo rows, stats) from a verified frame and the filter config ``fc``."""
    bad = set(fc.rejected_reasons) & set(NEVER_REJECTED)
    if bad:
        raise ValueError(f"filter.rejected_reasons may not contain {sorted(bad)}; "
                         f"allowed: wrong, no_answer, too_long, parse_error")
    n_in = len(verified)
    usable = verified[~verified["reason"].isin(UNUSABLE_GOLD)]
    ordered = usable.sort_values(["index", "sample_idx"], kind="stable")
    deduped = ordered.drop_duplicates(subset=["index", "response"], keep="first")
    sft_rows, dpo_rows = [], []
    for index, group in deduped.groupby("index", sort=True):
        correct = group[group["correct"]]
        wrong = group[~group["correct"] & group["reason"].isin(list(fc.rejected_reasons))
                      & (group["response"].str.strip().str.len() > 0)]
        if fc.max_per_question is not None:
            correct_sft = correct.head(int(fc.max_per_question))
        else:
            correct_sft = correct
        for row in correct_sft.itertuples(index=False):
            prompt = _messages(row.prompt)
            sft_rows.append({
                "messages": prompt + [{"role": "assistant", "content": row.response}],
                "data_source": row.data_source,
                "extra_info": {"split": "train", "index": int(index), "sample_idx": int(row.sample_idx),
                               "question": question_from_prompt(prompt)},
            })
        pairs = sorted(((i, j) for i in range(len(correct)) for j in range(len(wrong))),
                       key=lambda ij: (ij[0] + ij[1], ij[0]))
        if fc.max_pairs_per_question is not None:
            pairs = pairs[: int(fc.max_pairs_per_question)]
        for i, j in pairs:
            c, w = correct.iloc[i], wrong.iloc[j]
            dpo_rows.append({"prompt": _messages(c["prompt"]), "chosen": c["response"], "rejected": w["response"],
                             "index": int(index), "data_source": c["data_source"]})
    sft = pd.DataFrame(sft_rows, columns=["messages", "data_source", "extra_info"])
    dpo = pd.DataFrame(dpo_rows, columns=["prompt", "chosen", "rejected", "index", "data_source"])
    stats = {
        "n_in": n_in,
        "dropped_unusable_gold": int(n_in - len(usable)),
        "duplicates_removed": int(len(usable) - len(deduped)),
        "n_correct_distinct": int(deduped["correct"].sum()),
        "n_sft": len(sft),
        "n_dpo_pairs": len(dpo),
        "questions": int(verified["index"].nunique()),
        "questions_in_sft": int(sft["extra_info"].map(lambda e: e["index"]).nunique()) if len(sft) else 0,
        "questions_in_dpo": int(dpo["index"].nunique()) if len(dpo) else 0,
        "reasons_after_dedupe": {str(k): int(v) for k, v in deduped["reason"].value_counts().sort_index().items()},
    }
    return sft, dpo, stats


def run(cfg) -> dict:
    artifacts.require(cfg, "out_dir")
    from omegaconf import OmegaConf

    fc = OmegaConf.create(artifacts.to_plain(cfg.filter))
    out = Path(fc.output_dir)
    semantic = {k: v for k, v in artifacts.to_plain(fc).items() if k not in ("output_dir", "input")}
    state = artifacts.StageState("filter", out, artifacts.fingerprint(semantic, [fc.input]),
                                 overwrite=bool(cfg.overwrite))
    if state.done():
        logger.info("filter: %s is up to date, skipping", out)
        return json.loads((out / "filter_stats.json").read_text())
    verified = pd.read_parquet(fc.input)
    missing = {"index", "sample_idx", "prompt", "response", "correct", "reason", "data_source"} - set(verified.columns)
    if missing:
        raise ValueError(f"{fc.input}: not a verified parquet, missing column(s) {sorted(missing)}")
    sft, dpo, stats = filter_verified(verified, fc)
    artifacts.write_parquet_atomic(sft, out / "sft.parquet")
    artifacts.write_parquet_atomic(dpo, out / "dpo.parquet")
    artifacts.write_json_atomic(stats, out / "filter_stats.json")
    state.finish(["sft.parquet", "dpo.parquet", "filter_stats.json"])
    logger.info("filter: %d SFT rows, %d DPO pairs from %d samples -> %s", len(sft), len(dpo), len(verified), out)
    return stats


def main(argv: list[str] | None = None) -> int:
    return artifacts.stage_main(run, USAGE, argv)


if __name__ == "__main__":
    sys.exit(main())
