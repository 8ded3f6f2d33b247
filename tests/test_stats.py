"""Paired comparisons: differences worked out by hand, the bootstrap CI against the normal paired interval, and
the comparisons section of the Table-3 report."""

import csv
import json

import numpy as np
import pytest

from dft_verl import report
from dft_verl.stats import average_over_benchmarks, mean_ci95, paired_bootstrap


def test_one_differing_question_of_four_is_not_distinguishable():
    # d = [1, 0, 0, 0]: diff = 100 * 1/4 = 25 points. A resample misses the differing question with probability
    # (3/4)^4 = 0.316 > 0.025, so the 2.5th percentile is exactly 0: the CI contains 0.
    d = paired_bootstrap({"math500": [1, 1, 0, 0]}, {"math500": [0, 1, 0, 0]})
    assert d.diff == pytest.approx(25.0)
    # The draws of the differing question are Binomial(4, 1/4): P(<= 2) = 0.949, P(<= 3) = 0.996, so the 97.5th
    # percentile is 3 draws: 100 * 3/4 = 75.
    assert d.ci95[0] == pytest.approx(0.0) and d.ci95[1] == pytest.approx(75.0)
    assert not d.distinguishable and d.verdict("DFT", "RFT") == "not distinguishable"


def test_a_constant_difference_has_a_zero_width_interval():
    d = paired_bootstrap({"amc23": [0.75] * 50}, {"amc23": [0.25] * 50})
    assert d.diff == pytest.approx(50.0) and d.ci95 == pytest.approx((50.0, 50.0))
    assert d.verdict("DFT", "RFT") == "DFT better"
    worse = paired_bootstrap({"amc23": [0.25] * 50}, {"amc23": [0.75] * 50})
    assert worse.verdict("DFT", "RFT") == "RFT better"


def test_benchmarks_weigh_equally_as_in_the_avg_column():
    # bench x: 5 questions, mean d = +0.2; bench y: 10 questions, mean d = -0.1.
    # Avg-column difference = 100 * (0.2 - 0.1) / 2 = +5.0 (a question-weighted mean would give 100 * (1 - 1) / 15 = 0).
    a = {"x": [1, 0, 0, 0, 0], "y": [0] * 10}
    b = {"x": [0] * 5, "y": [1] + [0] * 9}
    d = paired_bootstrap(a, b)
    assert d.diff == pytest.approx(5.0) and d.n_questions == 15 and d.benchmarks == ("x", "y")


def test_bootstrap_interval_matches_the_normal_paired_interval_on_many_questions():
    rng = np.random.default_rng(3)
    pa = rng.integers(0, 5, size=400) / 4  # Average@4 values
    pb = np.clip(pa - rng.integers(-1, 3, size=400) / 4, 0, 1)
    d = paired_bootstrap({"b": pa}, {"b": pb}, reps=8000, seed=1)
    diffs = 100 * (pa - pb)
    half = 1.959964 * diffs.std(ddof=1) / np.sqrt(diffs.size)
    assert d.diff == pytest.approx(diffs.mean())
    assert d.ci95[0] == pytest.approx(diffs.mean() - half, abs=0.1 * half)
    assert d.ci95[1] == pytest.approx(diffs.mean() + half, abs=0.1 * half)
    assert paired_bootstrap({"b": pa}, {"b": pb}, reps=8000, seed=1) == d  # seeded: repeatable


def test_questions_that_cannot_be_paired_are_refused():
    with pytest.raises(ValueError, match="same questions"):
        paired_bootstrap({"m": [1, 0]}, {"m": [1, 0, 1]})
    with pytest.raises(ValueError, match="no benchmark"):
        paired_bootstrap({"m": [1]}, {"n": [1]})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        paired_bootstrap({"m": [2.0]}, {"m": [1.0]})


def _results(per_question: dict) -> dict:
    benches = {b: {"n_questions": len(p), "k": 4, "avg_at_k": 100 * sum(p) / len(p), "ci95": None,
                   "per_question_acc": p} for b, p in per_question.items()}
    return {"model": "m", "k": 4, "temperature": 1.0, "max_new_tokens": 64, "benchmarks": benches, "average": None}


def test_report_lists_the_papers_comparisons(tmp_path):
    runs = tmp_path / "runs"
    rows = {"dft_offline": {"math500": [0.75] * 20}, "rft": {"math500": [0.25] * 20},
            "grpo": {"math500": [1, 0] * 10}, "dft_sft": {"math500": [1, 0]}, "sft": {"aime24": [1, 0]}}
    for row, pq in rows.items():
        (runs / row / "eval").mkdir(parents=True)
        (runs / row / "eval" / "results.json").write_text(json.dumps(_results(pq)))
    written = report.report(runs, plots=False)
    md = written["table3.md"].read_text()
    assert "| DFT (offline RL) | RFT (offline RL) | +50.00 [+50.00, +50.00] | 20 | DFT better | +11.46 |" in md
    with open(written["paired.csv"]) as f:
        pairs = {(r["a"], r["b"]): r for r in csv.DictReader(f)}
    # dft_offline vs grpo: d alternates 0.75 - 1 = -0.25 and 0.75 - 0 = +0.75 -> mean +0.25 = +25.00 points;
    # paper 35.43 - 32.00 = +3.43
    assert float(pairs[("dft_offline", "grpo")]["diff"]) == pytest.approx(25.0)
    assert float(pairs[("dft_offline", "grpo")]["paper_diff"]) == pytest.approx(3.43)
    assert ("dft_sft", "sft") not in pairs  # no shared benchmark: skipped, not an error
    assert ("dft_offline", "ppo") not in pairs  # ppo not evaluated


def test_ci_clipping_and_small_n():
    assert mean_ci95([0.5]) == (50.0, None)
    avg, ci = mean_ci95([0.0, 0.5])  # mean .25, se .25, half .49 -> [-24, 74] clipped to [0, 74]
    assert avg == pytest.approx(25.0) and ci == pytest.approx([0.0, 74.0], abs=0.01)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mean_ci95([1.5, 0.0])


def test_average_over_benchmarks_hand_values():
    # 50 (se 20.4124) and 50 (se 25): avg 50, se = sqrt(20.4124^2 + 25^2) / 2 = 16.1374, half = 31.6289
    avg, ci = average_over_benchmarks([[1, 0.5, 0, 0.5], [0.25, 0.75]])
    assert avg == pytest.approx(50.0)
    assert ci == pytest.approx([18.3711, 81.6289], abs=1e-3)
    assert average_over_benchmarks([[1, 0.5, 0, 0.5], [0.25]]) == (pytest.approx(37.5), None)
