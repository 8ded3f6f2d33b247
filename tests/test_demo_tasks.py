"""The demo's task generator, config loading and table: fast checks on hand-worked values."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from dft_verl.demo import tasks
from dft_verl.demo.run import ALL_ROWS, PRESETS, load_config
from dft_verl.rewards import last_boxed, verify_many


def _evaluate_question(family: str, question: str) -> int:
    """The answer recomputed from the question text alone (independent of the generator's arithmetic)."""
    nums = [int(x) for x in re.findall(r"\d+", question)]
    if family == "add":
        return nums[0] + nums[1]
    if family == "sub":
        return nums[0] - nums[1]
    if family == "mul":
        return nums[0] * nums[1]
    if family == "word_add":
        return nums[0] + nums[1]
    if family == "word_two":
        return nums[0] + nums[1] - nums[2]
    raise AssertionError(family)


def test_answers_match_questions_and_solutions_box_them():
    rows = tasks.make_problems(50, seed=3)
    assert [r["index"] for r in rows] == list(range(50))
    assert {r["family"] for r in rows} == set(tasks.DEFAULT_FAMILIES)
    for r in rows:
        expected = _evaluate_question(r["family"], r["question"])
        assert r["answer"] == str(expected), r
        assert expected >= 0
        assert last_boxed(r["solution"]) == r["answer"]
        # every intermediate equation in the gold solution is true arithmetic
        for lhs, rhs in re.findall(r"(\d+(?: [-+*] \d+)+) = (\d+)", r["solution"]):
            assert eval(lhs) == int(rhs), r["solution"]  # noqa: S307 - digits and + - * only


def test_gold_solutions_pass_the_project_judge():
    rows = tasks.make_problems(10, seed=0)
    verdicts = verify_many([r["solution"] for r in rows], [r["answer"] for r in rows], progress=False)
    assert [v.reason for v in verdicts] == ["ok"] * 10


def test_generation_is_seeded_and_splits_are_disjoint(tmp_path):
    a = tasks.write_task(tmp_path / "a", n_train=30, n_test=10, seed=7)
    b = tasks.write_task(tmp_path / "b", n_train=30, n_test=10, seed=7)
    c = tasks.write_task(tmp_path / "c", n_train=30, n_test=10, seed=8)
    assert a["train"].read_bytes() == b["train"].read_bytes()
    assert a["test"].read_bytes() == b["test"].read_bytes()
    assert a["train"].read_bytes() != c["train"].read_bytes()
    train = [json.loads(x) for x in a["train"].read_text().splitlines()]
    test = [json.loads(x) for x in a["test"].read_text().splitlines()]
    assert len(train) == 30 and len(test) == 10
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    assert len({r["question"] for r in train}) == 30


def test_a_larger_held_out_split_extends_the_smaller_and_changes_nothing_trained(tmp_path):
    small = tasks.write_task(tmp_path / "s", n_train=20, n_test=8, seed=3, n_format=6)
    large = tasks.write_task(tmp_path / "l", n_train=20, n_test=30, seed=3, n_format=6)
    for split in ("train", "format"):
        assert small[split].read_bytes() == large[split].read_bytes(), split
    s_test, l_test = (f["test"].read_text().splitlines() for f in (small, large))
    assert len(l_test) == 30 and l_test[:8] == s_test
    used = {json.loads(x)["question"] for f in ("train", "format") for x in large[f].read_text().splitlines()}
    assert not used & {json.loads(x)["question"] for x in l_test}


def test_prepare_stage_reads_the_task_files(tmp_path):
    from dft_verl.pipeline import artifacts, prepare

    paths = tasks.write_task(tmp_path / "task", n_train=6, n_test=2, seed=0, families=("mul", "word_two"))
    cfg = artifacts.load_config([f"out_dir={tmp_path / 'p'}", f"prepare.source={paths['train']}",
                                 "sample.model_path=unused"])
    stats = prepare.run(cfg)
    assert stats["n_kept"] == 6 and stats["n_sft"] == 6 and stats["rejected"] == {}
    rl = pd.read_parquet(tmp_path / "p" / "prepare" / "rl.parquet")
    rows = [json.loads(x) for x in paths["train"].read_text().splitlines()]
    assert sorted(r["ground_truth"] for r in rl["reward_model"]) == sorted(r["answer"] for r in rows)


def test_unknown_family_and_impossible_sizes_are_refused():
    with pytest.raises(ValueError, match="supported"):
        tasks.make_problems(3, 0, ("add", "division"))
    with pytest.raises(ValueError, match="only 64 exist"):
        tasks.make_problems(10_000, 0, ("mul",))  # only 8 * 8 = 64 distinct products exist


def test_an_exhausted_family_leaves_the_rotation_and_the_others_fill_the_rest():
    rows = tasks.make_problems(150, 0, ("mul", "add"))
    families = [r["family"] for r in rows]
    assert families.count("mul") == 64 and families.count("add") == 86 and len({r["question"] for r in rows}) == 150
    assert families[:100] == ["mul", "add"] * 50  # round-robin while both have questions left
    assert tasks.make_problems(40, 0, ("mul", "add")) == rows[:40]


def test_user_files_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "2"}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected a JSON object"):
        tasks.read_task_file(bad)
    bad.write_text('{"question": "1+1?"\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: not valid JSON"):
        tasks.read_task_file(bad)


def test_split_rows_holds_out_exactly_n_in_file_order():
    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(10)]
    train, test = tasks.split_rows(rows, 3, seed=1)
    assert len(train) == 7 and len(test) == 3
    assert sorted(r["question"] for r in train + test) == sorted(r["question"] for r in rows)
    assert [int(r["answer"]) for r in test] == sorted(int(r["answer"]) for r in test)
    assert tasks.split_rows(rows, 3, seed=1) == (train, test)
    with pytest.raises(ValueError, match="cannot hold out"):
        tasks.split_rows(rows, 10, seed=1)


def test_config_layers_and_rejects_unknown_keys(tmp_path):
    cfg = load_config()
    assert cfg.preset == "cpu-small" and list(cfg.rows) == list(ALL_ROWS) and dict(cfg.recipe_env) == {}
    fast = load_config(fast=True)
    assert fast.task.n_train < cfg.task.n_train and fast.recipe_env.GRPO_N == 2
    over = load_config(fast=True, overrides=["recipe_env.SAMPLE_N=8", "rows=[sft,dft_sft]"])
    assert over.recipe_env.SAMPLE_N == 8 and over.recipe_env.GRPO_N == 2 and list(over.rows) == ["sft", "dft_sft"]
    with pytest.raises(ValueError, match="n_trian"):
        load_config(overrides=["task.n_trian=3"])
    with pytest.raises(ValueError, match="valid rows: base, sft, iw_sft_sft"):
        load_config(overrides=["rows=[sft,dtf]"])
    with pytest.raises(ValueError, match="choose one of"):
        load_config(overrides=["preset=paper"])
    with pytest.raises(ValueError, match="recipe_env.sample_n: not a Table-3 setting"):
        load_config(overrides=["recipe_env.sample_n=3"])
    with pytest.raises(ValueError, match="set by the demo itself"):
        load_config(overrides=["recipe_env.MODEL_PATH=/m"])
    with pytest.raises(ValueError, match="set by the demo itself"):
        load_config(overrides=["recipe_env.SEED=3"])
    with pytest.raises(ValueError, match="at least 1"):
        load_config(overrides=["seeds=0"])


def test_every_demo_row_and_preset_is_a_table3_one():
    """The demo's rows and presets are dft_verl.table3's (one definition), and every row has its recipe."""
    from dft_verl.table3.rows import ROW_KEYS
    from dft_verl.table3.settings import PRESETS as TABLE3_PRESETS

    assert ALL_ROWS == ROW_KEYS and set(PRESETS) <= set(TABLE3_PRESETS)
    recipes = Path(__file__).resolve().parents[1] / "recipes" / "table3"
    assert sorted(p.name[4:-3] for p in recipes.glob("run_*.sh") if p.name != "run_all.sh") == sorted(
        ["data", *ALL_ROWS])
