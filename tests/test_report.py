"""Table 3 from fixture results: hand-checked cells, CIs, paper column, deltas, missing rows, CSV and figures.

Hand arithmetic (z = 1.959964, CI = mean +- z * s / sqrt(n), s with ddof=1, percent):
  [1, .5, 0, .5]: mean 50; s^2 = (.25 + 0 + .25 + 0) / 3 = 1/6; se = sqrt(1/24) = .204124; half = .400076
                  -> 50.00 [9.99, 90.01]
  [.25, .75]:     mean 50; s^2 = .125; se = sqrt(.125 / 2) = .25; half = .489991 -> 50.00 [1.00, 99.00]
  [0, 0, 0, 0] -> 0.00 [0.00, 0.00];  [1, 1] -> 100.00 [100.00, 100.00];  [.5, .5] -> 50.00 [50.00, 50.00]
  Average of the five: (50 + 0 + 100 + 50 + 50) / 5 = 50.00;
                  se = sqrt(20.4124^2 + 25^2) / 5 = sqrt(416.667 + 625) / 5 = 6.45497; half = 12.6517
                  -> 50.00 [37.35, 62.65]; paper (base) 15.92; delta +34.08
"""

import csv
import json

import numpy as np
import pytest

from dft_verl import report
from dft_verl.benchmarks import BENCHMARKS

BASE_PQ = {
    "math500": [1, 0.5, 0, 0.5],
    "minerva_math": [0, 0, 0, 0],
    "olympiadbench": [1, 1],
    "aime24": [0.25, 0.75],
    "amc23": [0.5, 0.5],
}


def results_json(per_question: dict, k: int = 4) -> dict:
    benches = {}
    for b, pq in per_question.items():
        benches[b] = {"n_questions": len(pq), "k": k, "avg_at_k": 100 * sum(pq) / len(pq), "ci95": None,
                      "per_question_acc": pq}
    return {"model": "m", "k": k, "temperature": 1.0, "max_new_tokens": 64, "benchmarks": benches, "average": None}


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    write(root / "base" / "eval" / "results.json", results_json(BASE_PQ))
    # dft_sft: every question right on all benchmarks -> 100, CI [100, 100], delta vs 30.67 = +69.33
    write(root / "dft_sft" / "eval" / "results.json", results_json({b: [1.0, 1.0] for b in BENCHMARKS}))
    # sft: only two benchmarks -> no average
    write(root / "sft" / "eval" / "results.json", results_json({"math500": [0.0, 0.5], "aime24": [0.0, 0.0]}))
    # per-step results for dft_sft (Fig. 1); step 0 comes from base
    write(root / "dft_sft" / "eval" / "step_10" / "results.json", results_json({b: [0.5, 0.5] for b in BENCHMARKS}))
    write(root / "dft_sft" / "eval" / "step_20" / "results.json", results_json({"math500": [1.0, 0.5]}))
    return root


def table_rows(md: str) -> dict:
    rows = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| Setting"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


def test_hand_checked_cells(runs):
    md = report.to_markdown(report.collect(runs))
    rows = table_rows(md)
    base = rows[("—", "Base model")]
    # per benchmark: ours, paper
    assert base[0:2] == ["50.00 [9.99, 90.01]", "—"]
    assert base[2:4] == ["0.00 [0.00, 0.00]", "—"]
    assert base[4] == "100.00 [100.00, 100.00]"
    assert base[6] == "50.00 [1.00, 99.00]"
    assert base[8] == "50.00 [50.00, 50.00]"
    assert base[10:] == ["50.00 [37.35, 62.65]", "15.92", "+34.08"]
    assert rows[("SFT data", "DFT")][10:] == ["100.00 [100.00, 100.00]", "30.67", "+69.33"]
    sft = rows[("SFT data", "SFT")]
    assert sft[0] == "25.00 [0.00, 74.00]"  # [0, .5]: s^2 = .125, se = .25, half = .49 -> clipped at 0
    assert sft[2] == "—" and sft[10:] == ["—", "16.81", "—"]  # partial row: no average, no delta
    # rows without results: all "—"; iw-SFT on SFT data has no paper average
    assert rows[("SFT data", "iw-SFT")] == ["—"] * 13
    assert rows[("offline RL", "DFT")][10:] == ["—", "35.43", "—"]
    assert rows[("online RL", "GRPO")][11] == "32.00"
    assert [k for k in rows] == [(r.setting, r.method) for r in report.ROWS]
    assert "Average@4, temperature 1.0, max 64 new tokens" in md


def test_csv_numbers(runs, tmp_path):
    written = report.report(runs, tmp_path / "out", plots=False)
    with open(written["table3.csv"]) as f:
        recs = {r["row"]: r for r in csv.DictReader(f)}
    assert list(recs) == [r.key for r in report.ROWS]
    base = recs["base"]
    assert float(base["math500"]) == pytest.approx(50.0)
    assert float(base["math500_ci_lo"]) == pytest.approx(9.9924, abs=1e-3)
    assert float(base["math500_ci_hi"]) == pytest.approx(90.0076, abs=1e-3)
    assert float(base["average"]) == pytest.approx(50.0)
    assert float(base["average_ci_lo"]) == pytest.approx(37.3483, abs=1e-3)
    assert float(base["average_paper"]) == pytest.approx(15.92)
    assert float(base["average_delta"]) == pytest.approx(34.08)
    assert base["math500_paper"] == "" and base["math500_delta"] == ""
    assert recs["ppo"]["average"] == "" and float(recs["ppo"]["average_paper"]) == pytest.approx(28.66)
    assert (tmp_path / "out" / "table3.md").read_text().startswith("| Setting | Method | Math500 | paper |")
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic writes leave no temp files


def test_step_curves_use_base_as_step_zero(runs):
    curves = report.step_curves(runs)
    assert list(curves) == ["DFT (SFT data)"]
    steps = curves["DFT (SFT data)"]
    assert [s for s, _ in steps] == [0, 10, 20]
    assert steps[0][1]["average"] == pytest.approx(50.0) and steps[0][1]["math500"] == pytest.approx(50.0)
    assert steps[1][1]["average"] == pytest.approx(50.0)
    assert steps[2][1] == {"math500": pytest.approx(75.0)}  # partial step: no average


def test_figures_written(runs, tmp_path):
    from dft_verl.analysis.token_probs import FILES

    rng = np.random.default_rng(0)
    for row, a in (("base", 0.5), ("dft_sft", 5.0)):
        folder = runs / row / "token_probs"
        folder.mkdir(parents=True)
        np.save(folder / "token_probs.npy", rng.beta(a, 1.0, size=500).astype(np.float32))
        np.save(folder / "offsets.npy", np.array([0, 500]))
        (folder / "meta.json").write_text("{}")
    assert set(FILES) == {"token_probs.npy", "offsets.npy", "meta.json"}
    written = report.main([str(runs), "--out", str(tmp_path / "rep")])
    for name in ("fig1_accuracy_vs_step.png", "fig2_token_probs.png"):
        assert written[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert written[name].stat().st_size > 10_000


def test_fig1_draws_a_panel_only_for_benchmarks_with_points(runs, tmp_path):
    from dft_verl.analysis.plots import plot_accuracy_vs_step

    curves = report.step_curves(runs)  # step 10: all five benchmarks (and their average); step 20: math500 only
    assert plot_accuracy_vs_step(curves, tmp_path / "all.png") == [*BENCHMARKS, "average"]
    only_math = {"DFT": [(0, {"math500": 40.0}), (2, {"math500": 55.0})], "SFT": [(2, {"math500": 50.0})]}
    assert plot_accuracy_vs_step(only_math, tmp_path / "math.png") == ["math500"]  # the demo's one benchmark
    assert (tmp_path / "math.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no accuracy curve has a point"):
        plot_accuracy_vs_step({"DFT": [(2, {})]}, tmp_path / "none.png")


def test_malformed_results_names_file_and_field(tmp_path):
    write(tmp_path / "runs" / "ppo" / "eval" / "results.json", {"benchmarks": {"math500": {"avg_at_k": 3.0}}})
    with pytest.raises(ValueError, match=r"ppo/eval/results.json: benchmarks.math500.per_question_acc"):
        report.collect(tmp_path / "runs")
    with pytest.raises(FileNotFoundError):
        report.collect(tmp_path / "nope")


def test_ranks_beside_the_paper(runs):
    """Shared benchmarks of base, sft and dft_sft: math500 and aime24. Scores by hand: base (50 + 50) / 2 = 50,
    dft_sft (100 + 100) / 2 = 100, sft ((0 + .5) / 2 * 100 + 0) / 2 = 12.5. Ours: dft_sft 1, base 2, sft 3;
    paper: dft_sft 30.67 (1), sft 16.81 (2), base 15.92 (3) -> one row (dft_sft) ranks the same."""
    table = report.collect(runs)
    benches, scores = report.headline_scores(table)
    assert benches == ["math500", "aime24"]
    assert scores == pytest.approx({"base": 50.0, "dft_sft": 100.0, "sft": 12.5})
    comparisons = report.paired_comparisons(table, reps=200)
    md = report.ranks_markdown(table, comparisons)
    rows = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| Method"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    assert rows == {"DFT (SFT data)": ["100.00", "1", "30.67", "1"], "Base model": ["50.00", "2", "15.92", "3"],
                    "SFT (SFT data)": ["12.50", "3", "16.81", "2"]}
    assert "same rank as the paper: 1 of 3 rows" in md
    pair = next(c for c in comparisons if (c["a"], c["b"]) == ("dft_sft", "sft"))
    assert f"DFT − SFT on SFT data: paper +13.86; ours {pair['diff']:+.2f}" in md
    assert "DFT (offline RL) leads" not in md  # no dft_offline results: no claim either way


def test_ranks_ties_and_the_lead_claim(tmp_path):
    """dft_offline and rft tie at 50 on math500, base scores 25: the lead claim says "tied for first"."""
    root = tmp_path / "runs"
    write(root / "dft_offline" / "eval" / "results.json", results_json({"math500": [1.0, 0.0]}))
    write(root / "rft" / "eval" / "results.json", results_json({"math500": [0.0, 1.0]}))
    write(root / "base" / "eval" / "results.json", results_json({"math500": [0.5, 0.0]}))
    md = report.ranks_markdown(report.collect(root), [])
    assert "ours tied for first (rank 1 of 3; top: RFT (offline RL), DFT (offline RL))" in md
    assert "| DFT (offline RL) | 50.00 | 1 | 35.43 | 1 |" in md and "| RFT (offline RL) | 50.00 | 1 | 23.97 | 2 |" in md
    # paper ranks dft_offline 1, rft 2, base 3; ours 1, 1, 3 -> two agree
    assert "same rank as the paper: 2 of 3 rows" in md


def test_settings_note_names_template_and_judge_and_flags_a_mix(tmp_path):
    root = tmp_path / "runs"
    judge = "dft_verl.rewards (math-verify 0.9.0)"
    for row in ("base", "sft"):
        write(root / row / "eval" / "results.json",
              {**results_json(BASE_PQ), "prompt_template": "qwen-boxed", "judge": judge})
    md = report.to_markdown(report.collect(root))
    assert ("max 64 new tokens; prompt template qwen-boxed; dtype not recorded; training dtype not recorded; judge "
            "dft_verl.rewards (math-verify 0.9.0);") in md
    # a results file from before eval recorded them: paper, judge not recorded
    write(root / "dft_sft" / "eval" / "results.json", results_json(BASE_PQ))
    md = report.to_markdown(report.collect(root))
    assert "PROMPT TEMPLATES DIFFER, rows not comparable: paper (dft_sft); qwen-boxed (base, sft)" in md
    assert "JUDGES DIFFER: dft_verl.rewards (math-verify 0.9.0) (base, sft); not recorded (dft_sft)" in md

    # the dtype each row sampled in (eval records it): one named, a mix flagged
    for row, dtype in (("base", "float32"), ("sft", "float32"), ("dft_sft", "float32")):
        path = root / row / "eval" / "results.json"
        write(path, {**json.loads(path.read_text()), "dtype": dtype})
    assert "; dtype float32;" in report.to_markdown(report.collect(root))
    write(root / "sft" / "eval" / "results.json", {**results_json(BASE_PQ), "prompt_template": "qwen-boxed",
                                                    "judge": judge, "dtype": "bfloat16"})
    assert "DTYPES DIFFER: bfloat16 (sft); float32 (base, dft_sft)" in report.to_markdown(report.collect(root))

    # the dtype each trained row computed in (the runner's train-step record): base, untrained, is left out
    write(root / "sft" / "steps" / "train.json", {"step": "train", "seconds": 1.0, "dtype": "bfloat16"})
    md = report.to_markdown(report.collect(root))
    assert "TRAINING DTYPES DIFFER: bfloat16 (sft); not recorded (dft_sft)" in md
    write(root / "dft_sft" / "steps" / "train.json", {"step": "train", "seconds": 1.0, "dtype": "bfloat16"})
    assert "; training dtype bfloat16;" in report.to_markdown(report.collect(root))
