"""prepare stage: RL / SFT schemas, gold handling, seeded subsampling, counted rejections, resume."""

import json
import os

import pandas as pd
import pytest

from dft_verl.pipeline import artifacts, prepare
from dft_verl.prompts import INSTRUCTION
from .fixtures import GSM8K_ROWS, MATH_ROWS, write_jsonl

MALFORMED = [
    {"question": "", "answer": "#### 3"},                     # empty question
    {"question": "How many?", "answer": "no final line"},    # GSM8K-style answer without "####" -> text gold
    {"question": "Missing answer?"},                         # no answer field at all
    {"question": "Huge?", "answer": "#### " + "9" * 2000},   # gold longer than MAX_ANSWER_CHARS
    {"question": "Unicode ½ 😀 答案?", "answer": "#### 5"},   # fine: kept
]


def _cfg(tmp_path, source, *extra):
    return artifacts.load_config([f"out_dir={tmp_path / 'run'}", f"prepare.source={source}", "progress=false",
                                  *extra])


def _rows(src, seed=0, *extra):
    cfg = artifacts.load_config(["out_dir=unused", f"prepare.source={src}", *extra])
    return prepare.prepare_rows(prepare.Source(src), cfg.prepare, seed)[0]


def test_gsm8k_to_rl_and_sft_schema(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    src = write_jsonl(tmp_path / "gsm8k" / "train.jsonl", GSM8K_ROWS)
    stats = prepare.run(_cfg(tmp_path, src))
    rl = pd.read_parquet(tmp_path / "run/prepare/rl.parquet")
    sft = pd.read_parquet(tmp_path / "run/prepare/sft.parquet")
    assert stats["n_kept"] == len(GSM8K_ROWS) == len(rl) == len(sft)
    assert list(rl.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert set(rl["data_source"]) == {"gsm8k"}  # derived from the folder name, "train" is not informative
    first = rl.iloc[0]
    assert [dict(m) for m in first["prompt"]] == [{"role": "user", "content": "What is 2 + 2 ?\n" + INSTRUCTION}]
    assert first["ability"] == "math"
    assert dict(first["reward_model"]) == {"style": "rule", "ground_truth": "4"}
    assert rl["extra_info"].map(lambda e: e["index"]).tolist() == list(range(len(GSM8K_ROWS)))
    assert rl.iloc[5]["reward_model"]["ground_truth"] == "1234"  # "#### 1,234"
    assert first["extra_info"]["question"] == "What is 2 + 2 ?" and first["extra_info"]["split"] == "train"
    msgs = [dict(m) for m in sft.iloc[0]["messages"]]
    assert msgs[0] == dict(first["prompt"][0])
    assert msgs[1] == {"role": "assistant", "content": "2 + 2 = 4\nThe final answer is $\\boxed{4}$."}


def test_math_style_gold_from_answer_or_last_box(tmp_path):
    with_answer = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    rl = _rows(with_answer)
    golds = [r["ground_truth"] for r in rl["reward_model"]]
    assert golds == ["\\frac{3}{4}", "3", "(-\\infty,3]"]
    no_answer = write_jsonl(tmp_path / "numina.jsonl",
                            [{"problem": r["problem"], "solution": r["solution"]} for r in MATH_ROWS])
    rl2 = _rows(no_answer)
    assert [r["ground_truth"] for r in rl2["reward_model"]] == golds


def test_malformed_rows_are_counted_not_fatal(tmp_path):
    src = write_jsonl(tmp_path / "mixed.jsonl", GSM8K_ROWS + MALFORMED)
    stats = prepare.run(_cfg(tmp_path, src))
    assert stats["rejected"] == {"no_question": 1, "no_gold": 1, "bad_gold": 1}
    assert stats["n_kept"] == len(GSM8K_ROWS) + 2
    assert {e["source_index"] for e in stats["rejected_examples"]} == {len(GSM8K_ROWS), len(GSM8K_ROWS) + 2,
                                                                        len(GSM8K_ROWS) + 3}
    on_disk = json.loads((tmp_path / "run/prepare/prepare_stats.json").read_text())
    assert on_disk["rejected"] == stats["rejected"]
    rl = pd.read_parquet(tmp_path / "run/prepare/rl.parquet")
    assert "Unicode ½ 😀 答案?" in rl["extra_info"].map(lambda e: e["question"]).tolist()


def test_seeded_subsample_is_deterministic_and_keeps_only_valid_rows(tmp_path):
    rows = [{"question": f"What is {i} + 1 ?", "answer": f"#### {i + 1}"} for i in range(40)]
    rows += [{"question": "", "answer": "#### 1"}] * 10
    src = write_jsonl(tmp_path / "many.jsonl", rows)
    a, b, c = (_rows(src, seed, "prepare.max_rows=12") for seed in (1, 1, 2))
    src_idx = lambda df: df["extra_info"].map(lambda e: e["source_index"]).tolist()  # noqa: E731
    assert len(a) == 12 and src_idx(a) == src_idx(b)
    assert src_idx(a) == sorted(src_idx(a)) and max(src_idx(a)) < 40  # source order, no invalid row
    assert src_idx(a) != src_idx(c)


def test_rerun_skips_changed_config_reruns_and_overwrite_forces(tmp_path, caplog):
    src = write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)
    prepare.run(_cfg(tmp_path, src))
    rl = tmp_path / "run/prepare/rl.parquet"
    mtime = os.stat(rl).st_mtime_ns
    prepare.run(_cfg(tmp_path, src))
    assert os.stat(rl).st_mtime_ns == mtime
    (tmp_path / "run/prepare/stray.txt").write_text("from the old config")
    with caplog.at_level("INFO", logger="dft_verl.pipeline"):
        prepare.run(_cfg(tmp_path, src, "prepare.max_rows=2"))
    assert len(pd.read_parquet(rl)) == 2 and not (tmp_path / "run/prepare/stray.txt").exists()
    assert "prepare: config or input changed (fingerprint" in caplog.text
    mtime = os.stat(rl).st_mtime_ns
    with caplog.at_level("INFO", logger="dft_verl.pipeline"):
        prepare.run(_cfg(tmp_path, src, "prepare.max_rows=2", "overwrite=true"))
    assert os.stat(rl).st_mtime_ns != mtime and "prepare: overwrite=true: replacing" in caplog.text


def test_qwen_boxed_template_puts_a_system_turn_in_rl_and_sft_data(tmp_path):
    src = write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)
    stats = prepare.run(_cfg(tmp_path, src, "prepare.prompt_template=qwen-boxed"))
    assert stats["prompt_template"] == "qwen-boxed"
    rl = pd.read_parquet(tmp_path / "run/prepare/rl.parquet")
    sft = pd.read_parquet(tmp_path / "run/prepare/sft.parquet")
    system = {"role": "system", "content": "You are a helpful assistant."}
    user = {"role": "user", "content": "What is 2 + 2 ?\n" + INSTRUCTION}
    assert [dict(m) for m in rl.iloc[0]["prompt"]] == [system, user]
    assert [dict(m) for m in sft.iloc[0]["messages"]] == [
        system, user, {"role": "assistant", "content": "2 + 2 = 4\nThe final answer is $\\boxed{4}$."}]
    assert all(len(p) == 2 and p[0]["role"] == "system" for p in rl["prompt"])
    assert rl.iloc[0]["extra_info"]["question"] == "What is 2 + 2 ?"
    # the later stages copy these messages: sample's question loader hands them to the model as they are
    from dft_verl.pipeline.sample import load_questions

    assert load_questions(tmp_path / "run/prepare/rl.parquet")["prompt"].iloc[0][0] == system


def test_template_is_part_of_the_fingerprint(tmp_path):
    src = write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)
    assert prepare.run(_cfg(tmp_path, src))["prompt_template"] == "paper"
    assert prepare.run(_cfg(tmp_path, src, "prepare.prompt_template=qwen-boxed"))["prompt_template"] == "qwen-boxed"
    rl = pd.read_parquet(tmp_path / "run/prepare/rl.parquet")
    assert rl.iloc[0]["prompt"][0]["role"] == "system"  # rerun with the new template, not the old results kept


def test_unknown_template_is_refused(tmp_path):
    src = write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)
    with pytest.raises(ValueError, match=r"unknown prompt template 'boxed'; valid: paper, qwen-boxed"):
        prepare.run(_cfg(tmp_path, src, "prepare.prompt_template=boxed"))
    assert not (tmp_path / "run/prepare/rl.parquet").exists()


def test_bad_inputs_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "#### 1"}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        prepare.Source(str(bad))
    with pytest.raises(FileNotFoundError):
        prepare.Source(str(tmp_path / "absent.jsonl"))
    src = write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)
    with pytest.raises(ValueError, match="question_key='prompt' is not a column"):
        prepare.run(_cfg(tmp_path, src, "prepare.question_key=prompt"))
    with pytest.raises(ValueError, match="prepare.source"):
        prepare.run(artifacts.load_config([f"out_dir={tmp_path}"]))
