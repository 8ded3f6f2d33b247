"""dft_verl.demo.offline_inputs: the cpu-tiny preset's generated inputs (no hub), each written once."""

import json

import pytest

from dft_verl.benchmarks import load_benchmark
from dft_verl.demo.offline_inputs import main, write_inputs


def test_writes_task_and_benchmark_once(tmp_path):
    task, bench = tmp_path / "task", tmp_path / "bench"
    first = write_inputs(task, 6, 4, bench_dir=bench)
    assert first == [f"wrote {task / 'train.jsonl'}, {task / 'test.jsonl'}", f"wrote {bench / 'math500' / 'test.jsonl'}"]
    test = [json.loads(line) for line in (task / "test.jsonl").read_text().splitlines()]
    train = [json.loads(line) for line in (task / "train.jsonl").read_text().splitlines()]
    assert len(train) == 6 and len(test) == 4
    assert not {r["question"] for r in train} & {r["question"] for r in test}  # held out
    # dft_verl.eval reads the folder as it reads a real benchmark: same questions, golds = the answers
    questions = load_benchmark("math500", data_dir=bench)
    assert [(q.question, q.gold) for q in questions] == [(r["question"], r["answer"]) for r in test]
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.jsonl")}
    main(["--task-dir", str(task), "--n-train", "6", "--n-test", "4", "--bench-dir", str(bench)])
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.jsonl")} == mtimes  # nothing rewritten


def test_rejects_a_benchmark_eval_does_not_know(tmp_path):
    with pytest.raises(ValueError, match="dft_verl.eval knows only"):
        write_inputs(tmp_path / "task", 2, 2, bench_dir=tmp_path / "bench", bench="arith")
