"""Row costs from the records steps leave under RUNS_DIR, against counts worked by hand; the report's compute table,
CSV columns, FLOPs ratios and accuracy-vs-compute figure.

Hand arithmetic (N = 1,000 parameters; FLOPs = 6 N trained + 2 N (generated + scored)):
  data stage: 1,000 generated -> 2e6 FLOPs; 100 s wall, 150 CPU core-s.
  dft_offline: two attempts of training; attempt 0 logged steps 1 (300 tokens) and 2 (111, lost with the crash),
      attempt 1 logged step 2 again (200) -> trained 500 -> 3e6; plus the data stage -> 5e6 FLOPs, 40 + 100 s wall,
      60 + 150 core-s. Eval (apart): 50 generated tokens, 5 s.
  grpo: step 1: T = 120, R = 10, P = 5 -> 8 sequences, 80 generated; actor update 120 trained; old_log_prob and ref
      passes 240 scored -> 6e3*120 + 2e3*(80 + 240) = 720,000 + 640,000 = 1.36e6 FLOPs.
  ppo (on a GPU node, 8 GPUs): T = 60, R = 4, P = 2 -> 10 sequences, 40 generated; actor + critic 120 trained;
      old_log_prob and values 120 scored -> 720,000 + 2e3 * 160 = 1.04e6; 10 s x 8 GPUs = 80 GPU-s.
  dpo (a Ray job on CPU): CPU time not measured -> device-s None; reference log-probs 70 scored + 130 trained
      -> 140,000 + 780,000 = 920,000 FLOPs of its own, + 2e6 sampling = 2.92e6.
"""

import csv
import json

import pytest

from dft_verl import cost, report
from dft_verl.benchmarks import BENCHMARKS
from dft_verl.table3.rows import ROWS, get_row

N = 1000


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def manifest(root, stage, step, seconds, cpu=None, device="cpu", gpus=0, launch="local"):
    rec = {"step": step, "inputs": {}, "finished": "t", "seconds": seconds, "device": device, "gpus": gpus,
           "launch": launch}
    if cpu is not None:
        rec["cpu_seconds"] = cpu
    write(root / stage / "steps" / f"{step.replace('/', '_')}.json", rec)


def metrics(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"step": s, "data": d}) + "\n" for s, d in records))


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    manifest(root, "data", "pipeline", 100, cpu=150)
    write(root / "data" / "cost" / "pipeline.json", {"sample": {"sequences": 10, "generated_tokens": 1000, "params": N}})
    manifest(root, "dft_offline", "train", 40, cpu=60)
    metrics(root / "dft_offline" / "metrics" / "train.0.jsonl",
            [(1, {"train/global_tokens": 300}), (2, {"train/global_tokens": 111})])
    metrics(root / "dft_offline" / "metrics" / "train.jsonl", [(2, {"train/global_tokens": 200, "train/loss": 1.0})])
    manifest(root, "dft_offline", "eval", 5, cpu=9)
    write(root / "dft_offline" / "cost" / "eval.json", {"eval": {"sequences": 4, "generated_tokens": 50, "params": N}})
    manifest(root, "grpo", "train", 30, cpu=50)
    metrics(root / "grpo" / "metrics" / "train.jsonl", [(1, {
        "perf/total_num_tokens": 120, "response_length/mean": 10.0, "prompt_length/mean": 5.0,
        "timing_s/gen": 1.0, "timing_s/old_log_prob": 0.1, "timing_s/ref": 0.1, "timing_s/update_actor": 0.3})])
    manifest(root, "grpo", "eval", 4, cpu=6)
    write(root / "grpo" / "cost" / "eval.json", {"eval": {"sequences": 4, "generated_tokens": 40, "params": N}})
    manifest(root, "ppo", "train", 10, device="gpu", gpus=8)
    metrics(root / "ppo" / "metrics" / "train.jsonl", [(1, {
        "perf/total_num_tokens": 60, "response_length/mean": 4.0, "prompt_length/mean": 2.0, "timing_s/values": 0.1,
        "timing_s/old_log_prob": 0.1, "timing_s/update_critic": 0.2, "timing_s/update_actor": 0.2})])
    write(root / "ppo" / "cost" / "train.json", {})
    manifest(root, "dpo", "ref_logprobs", 3, cpu=0.5, launch="ray")
    write(root / "dpo" / "cost" / "ref_logprobs.json", {"ref_logprobs": {"sequences": 4, "scored_tokens": 70,
                                                                          "params": N}})
    manifest(root, "dpo", "train", 20, cpu=0.2, launch="ray")
    metrics(root / "dpo" / "metrics" / "train.jsonl", [(1, {"train/global_tokens": 130})])
    return root


def test_row_costs_match_the_hand_counts(runs):
    dft = cost.row_cost(runs, get_row("dft_offline"))
    assert dft.params == N
    assert (dft.train.trained_tokens, dft.train.generated_tokens, dft.train.scored_tokens) == (500, 0, 0)
    assert dft.data is not None and dft.data.generated_tokens == 1000
    assert dft.total_flops == pytest.approx(5e6)
    assert (dft.total.wall_s, dft.total.device_s) == (140, 210)
    assert (dft.eval.generated_tokens, dft.eval.wall_s) == (50, 5)

    grpo = cost.row_cost(runs, get_row("grpo"))
    assert (grpo.train.generated_tokens, grpo.train.trained_tokens, grpo.train.scored_tokens) == (80, 120, 240)
    assert grpo.data is None and grpo.total_flops == pytest.approx(1.36e6)

    ppo = cost.row_cost(runs, get_row("ppo"))
    assert ppo.params == 0 and ppo.total_flops is None  # no eval, no sampling: N unknown, FLOPs not guessed
    assert (ppo.train.generated_tokens, ppo.train.trained_tokens, ppo.train.scored_tokens) == (40, 120, 120)
    assert ppo.train.flops(N) == pytest.approx(1.04e6)
    assert ppo.train.device_s == 80 and ppo.train.device == "gpu"

    dpo = cost.row_cost(runs, get_row("dpo"))
    assert dpo.train.device_s is None  # a Ray job's CPU time is the cluster's
    assert (dpo.train.scored_tokens, dpo.train.trained_tokens) == (70, 130)
    assert dpo.total_flops == pytest.approx(2.92e6)

    assert not cost.row_cost(runs, get_row("sft")).recorded


def test_report_shows_the_compute_beside_the_scores(runs):
    for row, p in (("base", 0.25), ("dft_offline", 0.75), ("grpo", 0.5), ("dpo", 0.5)):
        benches = {b: {"n_questions": 2, "k": 4, "avg_at_k": 100 * p, "ci95": None, "per_question_acc": [p, p]}
                   for b in BENCHMARKS}
        write(runs / row / "eval" / "results.json", {"model": "m", "k": 4, "temperature": 1.0, "max_new_tokens": 64,
                                                     "benchmarks": benches, "average": None})
    written = report.report(runs)
    md = written["table3.md"].read_text()
    assert "FLOPs ≈ 6·N·trained + 2·N·(generated + scored)" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| DFT (offline RL) †"))
    assert "| 140 | 210 | 1,000 | 500 | 0 | 5e+06 | 5 | 50 |" in line
    assert "| SFT (SFT data) | no cost records |" in md
    assert "shared by the offline-RL rows: 100 s wall, 150 device-s, 1,000 generated tokens, 2e+06 FLOPs" in md
    with open(written["table3.csv"]) as f:
        rows = {r["row"]: r for r in csv.DictReader(f)}
    assert rows["grpo"]["flops"] == "1360000" and rows["grpo"]["generated_tokens"] == "80"
    assert rows["dpo"]["device_s"] == "" and rows["dpo"]["includes_sampling"] == "True"
    assert rows["sft"]["flops"] == ""
    with open(written["paired.csv"]) as f:
        paired = {(r["a"], r["b"]): r for r in csv.DictReader(f)}
    assert float(paired[("dft_offline", "grpo")]["flops_ratio"]) == pytest.approx(5e6 / 1.36e6, rel=1e-3)
    assert ("dft_offline", "ppo") not in paired  # ppo has no results
    assert written["accuracy_vs_compute.png"].stat().st_size > 0
    points, label, base = report.compute_points(report.collect(runs), cost.table_costs(runs, ROWS))
    assert label == "Avg" and base == pytest.approx(25.0)
    assert sorted((p[0], p[1]) for p in points) == sorted([("DFT (offline RL)", 5e6), ("GRPO (online RL)", 1.36e6),
                                                          ("DPO (offline RL)", 2.92e6)])


def test_records_written_by_a_step_and_refused_when_garbled(tmp_path, monkeypatch):
    target = tmp_path / "cost" / "eval.json"
    cost.record("eval", generated_tokens=3)  # no DFT_VERL_COST_FILE: nothing written anywhere
    monkeypatch.setenv(cost.ENV, str(target))
    cost.record("eval", generated_tokens=3, params=N)
    cost.record("sample", generated_tokens=4)
    assert json.loads(target.read_text()) == {"eval": {"generated_tokens": 3, "params": N},
                                              "sample": {"generated_tokens": 4}}
    bad = tmp_path / "metrics" / "train.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"step": 1, "data": {}}\nnot json\n')
    with pytest.raises(ValueError, match=r"train.jsonl: line 2: not a verl file-logger record"):
        cost.metrics_by_step([bad])


def test_a_resumed_trainer_keeps_the_metrics_of_its_earlier_attempts(tmp_path):
    path = cost.metrics_file(tmp_path, "train")
    metrics(path, [(1, {"train/global_tokens": 5})])
    cost.keep_metrics(path)
    metrics(path, [(2, {"train/global_tokens": 7})])
    cost.keep_metrics(path)
    metrics(path, [(3, {"train/global_tokens": 9})])
    assert [p.name for p in cost.metrics_files(tmp_path, "train")] == ["train.0.jsonl", "train.1.jsonl", "train.jsonl"]
    assert cost.trainer_tokens(cost.metrics_by_step(cost.metrics_files(tmp_path, "train"))).trained_tokens == 21


def test_params_counted_from_the_config_match_the_loaded_model(tmp_path):
    from transformers import AutoModelForCausalLM

    from dft_verl.tiny import build_tiny_model

    path = build_tiny_model(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(path)
    assert cost.count_params(path) == sum(p.numel() for p in model.parameters())
