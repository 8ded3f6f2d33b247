"""The demo's compact table from hand-made eval outputs in the recipes' layout (values worked out by hand)."""

import json

import pandas as pd
import pytest

from dft_verl.demo.summary import (build_rows, questions_for_half_width, row_record, seconds_per_row, seed_spread,
                                   sizing_line, spread_markdown, to_markdown)
from dft_verl.report import collect


def _write_eval(runs, row, correct: list[list[bool]], reasons: list[list[str]]):
    """<runs>/<row>/eval/results.json + samples parquet for 4 questions x k=2, as dft_verl.eval writes them."""
    folder = runs / row / "eval"
    k = len(correct[0])
    rows = [{"index": i, "sample_idx": j, "response": "x" * (10 * (j + 1)), "correct": c, "reason": r}
            for i, (cs, rs) in enumerate(zip(correct, reasons)) for j, (c, r) in enumerate(zip(cs, rs))]
    (folder / "samples").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "samples" / "math500.parquet")
    per_q = [sum(cs) / k for cs in correct]
    results = {"model": str(folder), "k": k, "temperature": 1.0, "max_new_tokens": 64,
               "benchmarks": {"math500": {"per_question_acc": per_q}}}
    (folder / "results.json").write_text(json.dumps(results))
    return folder / "results.json"


def test_rows_deltas_answered_rate_and_markdown(tmp_path):
    _write_eval(tmp_path, "base", [[True, False], [False, False], [False, False], [True, True]],
                [["ok", "wrong"], ["no_answer", "wrong"], ["no_answer", "no_answer"], ["ok", "ok"]])
    _write_eval(tmp_path, "dft_offline", [[True, True], [True, False], [False, False], [True, True]],
                [["ok", "ok"], ["ok", "wrong"], ["wrong", "empty_response"], ["ok", "ok"]])
    # timings.tsv: dft_offline ran twice (an interrupted run, then the resume): 300 + 40 s
    (tmp_path / "timings.tsv").write_text("base\t12\tT1\ndft_offline\t300\tT1\ndft_offline\t40\tT2\n")
    b, d = build_rows(collect(tmp_path), tmp_path, seconds_per_row(tmp_path))
    # per-question accuracies (0.5, 0, 0, 1) and (1, 0.5, 0, 1): means 37.5% and 62.5%
    assert (b["row"], d["row"]) == ("base", "dft_offline")
    assert b["avg_at_k"] == pytest.approx(37.5) and d["avg_at_k"] == pytest.approx(62.5)
    assert b["delta_vs_base"] is None and d["delta_vs_base"] == pytest.approx(25.0)
    # answered = responses with a boxed answer: 5 of 8 (3 no_answer) and 7 of 8 (1 empty_response)
    assert b["answered"] == pytest.approx(62.5) and d["answered"] == pytest.approx(87.5)
    assert b["mean_response_chars"] == pytest.approx(15.0)
    # CI of the base: s = std(0.5, 0, 0, 1; ddof=1) = 0.4787, half-width 1.96 * 47.87 / 2 = 46.9 points
    assert b["ci95"][0] == pytest.approx(0.0) and b["ci95"][1] == pytest.approx(37.5 + 46.91, abs=0.05)
    md = to_markdown([b, d], "title")
    assert "| dft_offline | DFT (offline RL) | 62.5 [" in md and "| +25.0 | 88% | 35.43 | 340 |" in md
    assert "| base | Base model | 37.5 [0.0, 84.4] | — | 62% | 15.92 | 12 |" in md


def test_two_benchmarks_in_one_results_file_are_refused(tmp_path):
    path = _write_eval(tmp_path, "sft", [[True, False]], [["ok", "wrong"]])
    results = json.loads(path.read_text())
    results["benchmarks"]["aime24"] = results["benchmarks"]["math500"]
    path.write_text(json.dumps(results))
    with pytest.raises(ValueError, match="expected one benchmark"):
        row_record("sft", results, path)


def test_held_out_size_for_a_five_point_paired_ci():
    """Half-width 12 points on 32 questions -> 32 * (12 / 5)^2 = 184.32 -> 185 questions; 4 points: reached."""
    wide = {"ci_lo": -2.0, "ci_hi": 22.0, "n_questions": 32, "label_a": "DFT (offline RL)", "label_b": "RFT (offline RL)"}
    assert questions_for_half_width(wide) == 185
    assert "half-width 12.0 points on 32 questions; a half-width of 5 points needs about 185" in sizing_line([wide])
    narrow = {**wide, "ci_lo": 6.0, "ci_hi": 14.0}
    assert "a half-width of 5 points reached" in sizing_line([narrow])


def test_seed_spread_by_hand(tmp_path):
    """Math500 scores per seed dir: dft_offline 100 / 50 / 0, rft 50 / 0 / —, base 37.5 / — / — (one seed: no
    spread). dft_offline: mean 50, sd sqrt((50² + 0 + 50²) / 2) = 50; rft: mean 25, sd sqrt(2 · 25²) = 35.36;
    DFT − RFT on the two seeds both have: 50, 50 -> mean 50, sd 0."""
    dirs = [tmp_path / str(s) for s in range(3)]
    ok, wrong = ["ok", "ok"], ["wrong", "wrong"]
    _write_eval(dirs[0], "base", [[True, False], [False, False], [False, False], [True, True]], [ok] * 4)
    _write_eval(dirs[0], "dft_offline", [[True, True], [True, True]], [ok, ok])
    _write_eval(dirs[0], "rft", [[True, True], [False, False]], [ok, wrong])
    _write_eval(dirs[1], "dft_offline", [[True, True], [False, False]], [ok, wrong])
    _write_eval(dirs[1], "rft", [[False, False], [False, False]], [wrong, wrong])
    _write_eval(dirs[2], "dft_offline", [[False, False], [False, False]], [wrong, wrong])
    rows, pairs = seed_spread(dirs)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"DFT (offline RL)", "RFT (offline RL)"}
    dft, rft = by_name["DFT (offline RL)"], by_name["RFT (offline RL)"]
    assert dft["values"] == pytest.approx([100, 50, 0]) and dft["mean"] == pytest.approx(50)
    assert dft["sd"] == pytest.approx(50) and (dft["min"], dft["max"]) == (0, 100)
    assert rft["n"] == 2 and rft["mean"] == pytest.approx(25) and rft["sd"] == pytest.approx(35.3553, abs=1e-4)
    (pair,) = pairs
    assert pair["name"] == "DFT (offline RL) − RFT (offline RL)"
    assert pair["values"] == pytest.approx([50, 50]) and pair["sd"] == pytest.approx(0)
    md = spread_markdown(rows, pairs)
    assert "| DFT (offline RL) | 3 | 50.00 | 50.00 | 0.00 | 100.00 |" in md
    assert "| DFT (offline RL) − RFT (offline RL) | 2 | +50.00 | 0.00 | +50.00 | +50.00 |" in md
