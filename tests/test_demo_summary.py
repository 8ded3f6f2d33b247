"""The demo's mini table from hand-made eval outputs (values worked out by hand)."""

import json

import pandas as pd
import pytest

from dft_verl.demo.summary import model_row, to_csv, to_markdown


def _write_eval(folder, correct: list[list[bool]], reasons: list[list[str]]):
    """results.json + samples parquet for 4 questions x k=2, as dft_verl.eval writes them."""
    k = len(correct[0])
    rows = [{"index": i, "sample_idx": j, "response": "x" * (10 * (j + 1)), "correct": c, "reason": r}
            for i, (cs, rs) in enumerate(zip(correct, reasons)) for j, (c, r) in enumerate(zip(cs, rs))]
    (folder / "samples").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "samples" / "arith.parquet")
    per_q = [sum(cs) / k for cs in correct]
    results = {"model": str(folder), "k": k, "benchmarks": {"arith": {"per_question_acc": per_q}}}
    (folder / "results.json").write_text(json.dumps(results))
    return folder / "results.json"


def test_rows_deltas_and_answered_rate(tmp_path):
    base = _write_eval(tmp_path / "base", [[True, False], [False, False], [False, False], [True, True]],
                       [["ok", "wrong"], ["no_answer", "wrong"], ["no_answer", "no_answer"], ["ok", "ok"]])
    dft = _write_eval(tmp_path / "dft", [[True, True], [True, False], [False, False], [True, True]],
                      [["ok", "ok"], ["ok", "wrong"], ["wrong", "empty_response"], ["ok", "ok"]])
    b, d = model_row("base", base), model_row("dft", dft)
    # per-question accuracies (0.5, 0, 0, 1) and (1, 0.5, 0, 1): means 37.5% and 62.5%
    assert b["avg_at_k"] == pytest.approx(37.5) and d["avg_at_k"] == pytest.approx(62.5)
    # answered = responses with a boxed answer: 5 of 8 (3 no_answer) and 7 of 8 (1 empty_response)
    assert b["answered"] == pytest.approx(62.5) and d["answered"] == pytest.approx(87.5)
    assert b["mean_response_chars"] == pytest.approx(15.0)
    # CI of the base: s = std(0.5, 0, 0, 1; ddof=1) = 0.4787, half-width 1.96 * 47.87 / 2 = 46.9 points
    assert b["ci95"][0] == pytest.approx(0.0) and b["ci95"][1] == pytest.approx(37.5 + 46.91, abs=0.05)
    for r, data in ((b, "—"), (d, "filtered self-samples")):
        r.update(data=data, loss="dft" if r is d else "—", train_rows=None if r is b else 58)
    b["delta_vs_base"], d["delta_vs_base"] = None, d["avg_at_k"] - b["avg_at_k"]
    md = to_markdown([b, d], "title")
    assert "| dft | filtered self-samples | dft | 58 | 62.5 [" in md and "| +25.0 | 88% |" in md
    assert "| base | — | — | — | 37.5 [0.0, 84.4] | — | 62% |" in md
    csv = to_csv([b, d]).splitlines()
    assert csv[0].startswith("model,data,loss,train_rows,k,n_questions,avg_at_k,ci_lo,ci_hi,delta_vs_base")
    assert csv[2].startswith("dft,filtered self-samples,dft,58,2,4,62.5000,")


def test_two_benchmarks_in_one_results_file_are_refused(tmp_path):
    path = _write_eval(tmp_path / "m", [[True, False]], [["ok", "wrong"]])
    results = json.loads(path.read_text())
    results["benchmarks"]["other"] = results["benchmarks"]["arith"]
    path.write_text(json.dumps(results))
    with pytest.raises(ValueError, match="expected one benchmark"):
        model_row("m", path)
