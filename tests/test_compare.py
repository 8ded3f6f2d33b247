"""dft_verl.compare: two evaluation folders paired question by question (hand-computed difference), the settings
that differ, and errors naming questions that cannot be paired."""

import json

import numpy as np
import pandas as pd
import pytest

from dft_verl import compare


def write_eval(folder, correct: dict[int, list[bool]], dtype: str, golds=None, bench="math500"):
    """An eval --out folder: samples/<bench>.parquet (+ meta) and results.json, k = len of each list."""
    rows = []
    for index, marks in correct.items():
        gold = (golds or {}).get(index, str(index))
        for j, ok in enumerate(marks):
            rows.append({"index": index, "sample_idx": j, "data_source": bench,
                         "prompt": [{"role": "user", "content": f"question {index}"}], "response": "r",
                         "ground_truth": gold, "correct": ok})
    (folder / "samples").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "samples" / f"{bench}.parquet")
    (folder / "samples" / f"{bench}.json").write_text(json.dumps({"backend": "hf"}))
    k = len(next(iter(correct.values())))
    (folder / "results.json").write_text(json.dumps({
        "model": "m", "k": k, "temperature": 1.0, "max_new_tokens": 8, "seed": 0, "prompt_template": "paper",
        "dtype": dtype, "benchmarks": {bench: {"per_question_acc": [sum(m) / k for m in correct.values()]}}}))
    return folder


A = {0: [True, True], 1: [True, False], 2: [False, False], 3: [True, True], 4: [False, True]}
B = {0: [True, False], 1: [True, False], 2: [False, False], 3: [False, False], 4: [False, True]}


def test_difference_is_the_mean_of_paired_question_differences(tmp_path, capsys):
    a = write_eval(tmp_path / "fp32", A, "float32")
    b = write_eval(tmp_path / "bf16", dict(reversed(list(B.items()))), "bfloat16")  # another order on disk
    out = compare.main([str(a), str(b), "--reps", "2000", "--json", str(tmp_path / "cmp.json")])
    per_q = [np.mean(A[i]) - np.mean(B[i]) for i in sorted(A)]  # 0.5, 0, 0, 1, 0
    assert out["diff"] == pytest.approx(100 * np.mean(per_q)) == pytest.approx(30.0)
    assert out["n_questions"] == 5 and out["benchmarks"] == ["math500"]
    assert (out["a_mean"], out["b_mean"]) == (pytest.approx(60.0), pytest.approx(30.0))
    assert out["settings_that_differ"] == {"dtype": ["float32", "bfloat16"]}
    assert out["ci95"][0] <= 30.0 <= out["ci95"][1] and out["ci95"][0] >= 0.0  # no question favours B
    assert json.loads((tmp_path / "cmp.json").read_text())["diff"] == pytest.approx(30.0)
    printed = capsys.readouterr().out
    assert "settings that differ: dtype: float32 vs bfloat16" in printed and "A - B = +30.00 points" in printed


def test_questions_that_cannot_be_paired_are_named(tmp_path):
    a = write_eval(tmp_path / "a", A, "float32")
    fewer = write_eval(tmp_path / "b", {i: B[i] for i in (0, 1, 2)}, "float32")
    with pytest.raises(ValueError, match=r"hold different questions \(5 vs 3; e.g. index \[3, 4\]\)"):
        compare.compare(a, fewer)
    other_gold = write_eval(tmp_path / "c", B, "float32", golds={2: "17"})
    with pytest.raises(ValueError, match="question index 2 has a different prompt or gold answer"):
        compare.compare(a, other_gold)
    with pytest.raises(FileNotFoundError, match="no results.json"):
        compare.compare(a, tmp_path / "missing")
    amc = write_eval(tmp_path / "d", B, "float32", bench="amc23")
    with pytest.raises(ValueError, match="share no benchmark"):
        compare.compare(a, amc)
