"""filter stage: correct responses -> SFT messages, correct x wrong -> DPO pairs, exact duplicates removed."""

import pandas as pd
import pytest

from dft_verl.pipeline import artifacts, filter as filter_stage
from dft_verl.prompts import INSTRUCTION
from .fixtures import samples_frame


def _verified(rows):
    """rows: (index, sample_idx, response, correct, reason)."""
    df = samples_frame([(i, j, r, "7") for i, j, r, _, _ in rows])
    df["correct"] = [c for *_, c, _ in rows]
    df["pred"] = None
    df["reason"] = [reason for *_, reason in rows]
    return df


ROWS = [
    # q0: A correct (twice, duplicate), B correct, W wrong, empty -> 2 distinct correct, 1 usable wrong
    (0, 0, "A \\boxed{7}", True, "ok"),
    (0, 1, "A \\boxed{7}", True, "ok"),
    (0, 2, "B \\boxed{7.0}", True, "ok"),
    (0, 3, "W \\boxed{8}", False, "wrong"),
    (0, 4, "", False, "empty_response"),
    # q1: all wrong, one timed out -> no SFT, no pair
    (1, 0, "X \\boxed{1}", False, "wrong"),
    (1, 1, "Y", False, "timeout"),
    # q2: one correct, wrong + no_answer + timeout -> 2 pairs (timeout never rejected)
    (2, 0, "C \\boxed{7}", True, "ok"),
    (2, 1, "D \\boxed{6}", False, "wrong"),
    (2, 2, "E no box", False, "no_answer"),
    (2, 3, "F \\boxed{9^9^9}", False, "timeout"),
    # q3: gold unusable -> dropped entirely
    (3, 0, "G \\boxed{7}", False, "no_gold"),
]


def _fc(*extra):
    return artifacts.load_config(["out_dir=unused", *extra]).filter


def test_sft_and_dpo_rows():
    sft, dpo, stats = filter_stage.filter_verified(_verified(ROWS), _fc())
    assert [m[-1]["content"] for m in sft["messages"]] == ["A \\boxed{7}", "B \\boxed{7.0}", "C \\boxed{7}"]
    first = sft.iloc[0]
    assert first["messages"][0] == {"role": "user", "content": "Question 0?\n" + INSTRUCTION}
    assert first["messages"][1]["role"] == "assistant"
    assert first["extra_info"] == {"split": "train", "index": 0, "sample_idx": 0, "question": "Question 0?"}
    pairs = list(zip(dpo["index"], dpo["chosen"].str[0], dpo["rejected"].str[0]))
    assert pairs == [(0, "A", "W"), (0, "B", "W"), (2, "C", "D"), (2, "C", "E")]
    assert list(dpo.columns) == ["prompt", "chosen", "rejected", "index", "data_source"]
    assert stats["duplicates_removed"] == 1 and stats["dropped_unusable_gold"] == 1
    assert (stats["n_sft"], stats["n_dpo_pairs"], stats["questions_in_sft"], stats["questions_in_dpo"]) == (3, 4, 2, 2)


def test_caps_and_reason_choice():
    sft, dpo, _ = filter_stage.filter_verified(
        _verified(ROWS), _fc("filter.max_per_question=1", "filter.max_pairs_per_question=1",
                             "filter.rejected_reasons=[wrong]"))
    assert [m[-1]["content"][0] for m in sft["messages"]] == ["A", "C"]
    assert list(zip(dpo["chosen"].str[0], dpo["rejected"].str[0])) == [("A", "W"), ("C", "D")]
    with pytest.raises(ValueError, match="may not contain"):
        filter_stage.filter_verified(_verified(ROWS), _fc("filter.rejected_reasons=[wrong,timeout]"))


def test_stage_writes_parquet_and_skips_on_rerun(tmp_path):
    path = tmp_path / "verified.parquet"
    _verified(ROWS).to_parquet(path)
    cfg = artifacts.load_config([f"out_dir={tmp_path / 'run'}", f"filter.input={path}"])
    stats = filter_stage.run(cfg)
    sft = pd.read_parquet(tmp_path / "run/filter/sft.parquet")
    dpo = pd.read_parquet(tmp_path / "run/filter/dpo.parquet")
    assert (len(sft), len(dpo)) == (stats["n_sft"], stats["n_dpo_pairs"]) == (3, 4)
    assert [dict(m) for m in dpo.iloc[0]["prompt"]] == [{"role": "user", "content": "Question 0?\n" + INSTRUCTION}]
    mtime = (tmp_path / "run/filter/sft.parquet").stat().st_mtime_ns
    filter_stage.run(cfg)
    assert (tmp_path / "run/filter/sft.parquet").stat().st_mtime_ns == mtime
