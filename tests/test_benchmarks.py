"""Benchmark loaders: gold-answer rules per benchmark, local layout, hub path, and errors naming file/row/field."""

import json
import os
from pathlib import Path

import pytest

from dft_verl import benchmarks
from dft_verl.benchmarks import BENCHMARKS, BenchmarkFormatError, HFSource, load_benchmark
from dft_verl.prompts import INSTRUCTION

FIXTURE = {
    "math500": [
        {"problem": "Convert $(0,3)$ to polar.", "solution": "... $\\boxed{(3, \\frac{\\pi}{2})}$.",
         "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2},
        {"problem": "What is 6 * 7?", "solution": "6*7 = \\boxed{42}", "answer": "42"},
    ],
    "minerva_math": [
        # two boxes, the last one (with nested braces) is the gold; the "answer" field must be ignored
        {"problem": "Speed of light?", "type": "Physics", "idx": 0, "answer": "wrong",
         "solution": "First \\boxed{\\frac{1}{2}}, finally $c = \\boxed{3 \\times 10^{8}}$ m/s."},
        {"problem": "Half of one?", "solution": "It is \\boxed{0.5}.", "idx": 1},
    ],
    "olympiadbench": [
        {"id": 1, "question": "Find all pairs.", "final_answer": ["$69$,$84$"], "is_multiple_answer": True},
        {"id": 2, "question": "Find n.", "final_answer": ["$2^{1009}$"]},
    ],
    "aime24": [
        {"id": 60, "problem": "AIME problem one.", "question": "ignored copy", "answer": "025"},
    ],
    "amc23": [
        {"id": 0, "question": "How many miles?", "answer": 27.0},
        {"id": 1, "question": "A fraction?", "answer": 0.5},
        {"id": 2, "question": "A negative?", "answer": -1.0},
    ],
}

EXPECTED_GOLD = {
    "math500": ["\\left( 3, \\frac{\\pi}{2} \\right)", "42"],
    "minerva_math": ["3 \\times 10^{8}", "0.5"],
    "olympiadbench": ["69,84", "2^{1009}"],
    "aime24": ["025"],
    "amc23": ["27", "0.5", "-1"],
}


def write_fixture(root, data=FIXTURE):
    for name, rows in data.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        with open(root / name / "test.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return root


def test_gold_rules_local_layout(tmp_path):
    write_fixture(tmp_path)
    for name in BENCHMARKS:
        qs = load_benchmark(name, data_dir=tmp_path)
        assert [q.gold for q in qs] == EXPECTED_GOLD[name], name
        assert [q.index for q in qs] == list(range(len(FIXTURE[name])))
        assert all(q.benchmark == name for q in qs)
    assert load_benchmark("aime24", data_dir=tmp_path)[0].question == "AIME problem one."  # problem before question
    assert load_benchmark("amc23", data_dir=tmp_path)[0].question == "How many miles?"


def test_prompt_is_question_plus_instruction(tmp_path):
    write_fixture(tmp_path)
    q = load_benchmark("math500", data_dir=tmp_path)[1]
    assert q.prompt() == [{"role": "user", "content": "What is 6 * 7?\n" + INSTRUCTION}]


def test_limit_keeps_first_rows(tmp_path):
    write_fixture(tmp_path)
    qs = load_benchmark("amc23", data_dir=tmp_path, limit=2)
    assert [q.gold for q in qs] == ["27", "0.5"]
    with pytest.raises(ValueError, match="limit"):
        load_benchmark("amc23", data_dir=tmp_path, limit=0)


def test_missing_field_names_file_row_field(tmp_path):
    data = {"math500": [FIXTURE["math500"][0], {"problem": "no answer here"}]}
    write_fixture(tmp_path, data)
    with pytest.raises(BenchmarkFormatError) as e:
        load_benchmark("math500", data_dir=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "math500" / "test.jsonl") in msg and "row 1" in msg and "'answer'" in msg


def test_minerva_without_box_is_an_error(tmp_path):
    write_fixture(tmp_path, {"minerva_math": [{"problem": "p", "solution": "no box, and \\boxed{} is empty"}]})
    with pytest.raises(BenchmarkFormatError, match=r"row 0: field 'solution'.*boxed"):
        load_benchmark("minerva_math", data_dir=tmp_path)


def test_olympiad_empty_final_answer_is_an_error(tmp_path):
    write_fixture(tmp_path, {"olympiadbench": [{"question": "q", "final_answer": []}]})
    with pytest.raises(BenchmarkFormatError, match=r"row 0: field 'final_answer'"):
        load_benchmark("olympiadbench", data_dir=tmp_path)


def test_bad_json_line_and_missing_file(tmp_path):
    (tmp_path / "aime24").mkdir()
    (tmp_path / "aime24" / "test.jsonl").write_text('{"problem": "a", "answer": "1"}\n{not json\n')
    with pytest.raises(BenchmarkFormatError, match=r"test.jsonl: line 2"):
        load_benchmark("aime24", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="amc23"):
        load_benchmark("amc23", data_dir=tmp_path)


def test_unknown_benchmark_lists_supported():
    with pytest.raises(ValueError, match="supported.*math500"):
        load_benchmark("gsm8k", data_dir="/nonexistent")


def test_hub_source_uses_same_rules(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return [{"question": "Q1", "final_answer": ["$\\frac{1}{2}$"]}, {"question": "Q2"}]

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    qs = load_benchmark("olympiadbench", limit=1)
    assert calls == [("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train")]
    assert qs[0].gold == "\\frac{1}{2}"
    with pytest.raises(BenchmarkFormatError, match=r"hf:my/copy\[test\]: row 1: field 'final_answer'"):
        load_benchmark("olympiadbench", hf_source=HFSource("my/copy", None, "test"))
    assert set(benchmarks.HF_SOURCES) == set(BENCHMARKS)


# ---- gold audit ----------------------------------------------------------------------------------------------

# The benchmark files: $DFT_VERL_EVAL_DATA, by default ../shared/data/eval beside the repository.
SHARED_EVAL = Path(os.environ.get("DFT_VERL_EVAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"))

# Golds with no LaTeX reading, judged as normalised strings (docs/benchmarks.md). A gold that stops reading as a
# value, or one of these that starts to, changes this table on purpose or fails the test.
STRING_GOLDS = {
    "math500": [],
    "minerva_math": [5, 27, 261, 269],  # np.arcsin(10/13); \odot; \hbar ...; E_{1},E_{2}
    "olympiadbench": [34, 73, 96],  # m_{\max }=...; f(x)=a x+b, where ...; t(0,4]
    "aime24": [],
    "amc23": [],
}


def test_audit_reads_each_gold_kind(tmp_path):
    data = {"minerva_math": [{"problem": "p", "solution": "so $\\boxed{3.83e35}$"},
                             {"problem": "p", "solution": "\\boxed{-1./3}"},
                             {"problem": "p", "solution": "\\boxed{\\hbar \\omega(v+1 / 2)-\\frac{E_{0}^{2} e^{2}}"
                                                          "{2 m \\omega^{2}}}"}],
            "olympiadbench": [{"question": "q", "final_answer": ["$(-\\infty, 0) \\cup\\{1\\}$."]}]}
    write_fixture(tmp_path, data)
    readings = benchmarks.audit(["minerva_math", "olympiadbench"], tmp_path)
    assert [(r.kind, r.reading) for r in readings["minerva_math"]] == [
        ("value", "3.83*10**35"), ("value", "-1/3"), ("string", "")]
    assert [r.normalized for r in readings["minerva_math"]][:2] == ["3.83\\times10^{35}", "-1/3"]
    assert [(r.kind, r.reading) for r in readings["olympiadbench"]] == [
        ("value", "Union({1}, Interval.open(-oo, 0))")]
    report = benchmarks.format_audit(readings)
    assert report.splitlines()[0] == "minerva_math: 3 golds, 2 values, 1 strings, 0 suspicious"
    assert report.splitlines()[1].startswith("  row 2 [string] '\\\\hbar")


def test_audit_command_fails_on_a_suspicious_gold(tmp_path, capsys):
    write_fixture(tmp_path, {"aime24": [{"problem": "p", "answer": "1.5e3m"}, {"problem": "q", "answer": "7"}]})
    assert benchmarks.main(["audit", "--data-dir", str(tmp_path), "--benchmarks", "aime24"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("aime24: 2 golds, 1 values, 0 strings, 1 suspicious\n  row 0 [suspicious] '1.5e3m'")


@pytest.mark.skipif(not SHARED_EVAL.is_dir(), reason=f"benchmark files not found at {SHARED_EVAL} "
                                                      "(set DFT_VERL_EVAL_DATA)")
def test_audit_of_the_benchmark_files():
    """Every one of the 1,517 golds reads as a value except the string golds listed above; none is suspicious."""
    readings = benchmarks.audit(BENCHMARKS, SHARED_EVAL)
    assert {b: len(rows) for b, rows in readings.items()} == {
        "math500": 500, "minerva_math": 272, "olympiadbench": 675, "aime24": 30, "amc23": 40}
    assert {b: [r.index for r in rows if r.kind != "value"] for b, rows in readings.items()} == STRING_GOLDS
    assert all(r.kind == "string" for rows in readings.values() for r in rows if r.kind != "value")
