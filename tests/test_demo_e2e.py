"""A CI-sized demo, end to end through `dft-verl demo`: every stage's output exists and is well-formed, and a
rerun resumes (skips every finished stage and rewrites none of their files).

The real SmolLM2 is too slow for CI, so the model is a tiny random Llama taught the training questions' gold
solutions for a few seconds first: at temperature 1.0 it then answers a good share of them correctly, so the
filter stage keeps real correct samples for RFT and DFT, as with the real model. Training runs through verl's
trainer under torchrun (2 ranks) exactly as in the full demo.
"""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dft_verl.demo import tasks
from dft_verl.tiny import teach_tiny_model

pytestmark = pytest.mark.slow

N_TRAIN, N_TEST, N_SAMPLES, K, STEPS = 12, 4, 2, 2, 2
FAMILIES = ("add",)
MODELS = ("base", "sft", "rft", "dft")


def run_cli(out: Path, model: str) -> dict:
    from dft_verl.cli import main

    overrides = [
        f"task.families=[{','.join(FAMILIES)}]", f"task.n_train={N_TRAIN}", f"task.n_test={N_TEST}",
        f"sample.n={N_SAMPLES}", "sample.max_new_tokens=64", "sample.batch_size=24", "sample.shard_size=8",
        "warmup.steps=1", "warmup.n_questions=4",
        f"train.steps={STEPS}", "train.batch_size=4", "train.micro_batch_size=2", "train.lr=1e-3",
        "train.max_length=192", f"eval.k={K}", "eval.max_new_tokens=64", "eval.batch_size=16",
    ]
    main(["demo", "--out", str(out), "--model", model, *overrides])
    return json.loads((out / "report" / "summary.json").read_text())


def _files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    model = teach_tiny_model(root / "taught", tasks.make_problems(N_TRAIN, 0, FAMILIES))
    out = root / "out"
    first = run_cli(out, model)
    return out, model, first


def test_every_stage_output_is_well_formed(demo_run):
    from dft_verl.rewards import REASONS, verify_many

    out, model, summary = demo_run
    # task
    train = [json.loads(x) for x in (out / "task" / "train.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (out / "task" / "test.jsonl").read_text().splitlines()]
    fmt = [json.loads(x) for x in (out / "task" / "format.jsonl").read_text().splitlines()]
    assert len(train) == N_TRAIN and len(test) == N_TEST and len(fmt) == 4
    questions = [r["question"] for r in train + test + fmt]
    assert len(set(questions)) == len(questions)
    # prepare: RL rows for train and test, gold SFT rows for train
    rl = pd.read_parquet(out / "data/train/prepare/rl.parquet")
    gold = pd.read_parquet(out / "data/train/prepare/sft.parquet")
    assert len(rl) == N_TRAIN and len(gold) == N_TRAIN
    assert all(m[-1]["role"] == "assistant" and "\\boxed{" in m[-1]["content"] for m in gold["messages"])
    assert len(pd.read_parquet(out / "data/test/prepare/rl.parquet")) == N_TEST
    # sample: n per question, in two shards
    samples = pd.read_parquet(out / "data/train/sample/samples.parquet")
    assert len(samples) == N_TRAIN * N_SAMPLES
    assert sorted(samples.groupby("index").size().unique()) == [N_SAMPLES]
    assert len(list((out / "data/train/sample/shards").glob("shard-*.parquet"))) == 2
    # verify: a verdict per sample
    verified = pd.read_parquet(out / "data/train/verify/verified.parquet")
    assert len(verified) == len(samples) and set(verified["reason"]) <= set(REASONS)
    assert (verified["correct"] == (verified["reason"] == "ok")).all()
    # filter: only correct responses, and the judge agrees on each of them again
    filtered = pd.read_parquet(out / "data/train/filter/sft.parquet")
    assert 0 < len(filtered) <= int(verified["correct"].sum())
    by_index = {e["index"]: r["ground_truth"] for e, r in zip(rl["extra_info"], rl["reward_model"])}
    again = verify_many([m[-1]["content"] for m in filtered["messages"]],
                        [by_index[e["index"]] for e in filtered["extra_info"]], progress=False)
    assert all(v.correct for v in again)
    # train: an HF model per method, trained for STEPS steps, weights moved away from the base model
    from safetensors.numpy import load_file

    base_w = load_file(str(Path(model) / "model.safetensors"))
    for name, loss in (("sft", "sft"), ("rft", "sft"), ("dft", "dft")):
        folder = out / "train" / name
        hf = folder / f"global_step_{STEPS}" / "huggingface"
        assert (hf / "config.json").is_file() and (hf / "tokenizer_config.json").is_file()
        done = json.loads((folder / "_demo_done.json").read_text())
        assert sorted(int(s) for s in done["metrics"]) == list(range(1, STEPS + 1))
        assert f"loss.type={loss}" in done["command"]
        trained = load_file(str(hf / "model.safetensors"))
        moved = [k for k in base_w if k in trained and not np.allclose(base_w[k], trained[k].astype(base_w[k].dtype))]
        assert moved, f"{name}: no weight changed"
        first = done["metrics"]["1"]
        if loss == "dft":  # DFT's loss is the probability-weighted CE: below the plain CE of the same tokens
            assert first["train/loss"] < first["dft/ce"]
        else:
            assert first["train/loss"] == pytest.approx(first["dft/ce"], rel=1e-3)
    # eval: Average@k of each model on the held-out questions, consistent with its samples (two worker processes,
    # each logging to its own file)
    for name in MODELS:
        assert "Average@2" in (out / "eval" / name / "eval.log").read_text()
        res = json.loads((out / "eval" / name / "results.json").read_text())
        (bench, entry), = res["benchmarks"].items()
        assert res["k"] == K and len(entry["per_question_acc"]) == N_TEST
        evs = pd.read_parquet(out / "eval" / name / "samples" / f"{bench}.parquet")
        assert len(evs) == N_TEST * K
        assert entry["avg_at_k"] == pytest.approx(100 * evs["correct"].mean())
        assert res["average"] == pytest.approx(entry["avg_at_k"])
    # token probabilities of every model on the same filtered samples
    lengths = set()
    for name in MODELS:
        p = np.load(out / "token_probs" / name / "token_probs.npy")
        assert p.size > 0 and p.min() >= 0 and p.max() <= 1
        lengths.add(p.size)
    assert len(lengths) == 1
    # report
    md = (out / "report" / "table.md").read_text()
    for name in MODELS:
        assert f"| {name} |" in md
    table = pd.read_csv(out / "report" / "table.csv")
    assert list(table["model"]) == list(MODELS)
    for png in ("accuracy.png", "train_ce.png", "token_probs.png"):
        assert (out / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["table"][0]["model"] == "base"
    assert set(summary["timings"]) >= {"task", "warmup", "pipeline", "train", "eval", "report", "total"}
    # the warm-up made the base model that every method starts from
    warm = out / "train" / "warmup" / "global_step_1" / "huggingface"
    assert (warm / "config.json").is_file()
    for name in ("sft", "rft", "dft"):
        assert f"model.path={warm}" in json.loads((out / "train" / name / "_demo_done.json").read_text())["command"]


def test_rerun_resumes_and_rewrites_nothing(demo_run):
    out, model, _ = demo_run
    # files written by the run's own bookkeeping change on every run; everything the stages made must not
    volatile = {"demo.log", "config.json", "report/summary.json", "report/table.md", "report/table.csv",
                "report/accuracy.png", "report/train_ce.png", "report/token_probs.png"}
    before = _files(out)
    second = run_cli(out, model)
    after = _files(out)
    changed = sorted(k for k in before if k not in volatile and after.get(k) != before[k])
    assert changed == []
    assert sorted(set(after) - set(before)) == []
    assert {"task", "format/prepare", "train/prepare", "train/sample", "train/verify", "train/filter",
            "test/prepare", "train warmup", "train sft", "train rft", "train dft", "eval base", "eval dft",
            "token_probs dft"} <= set(
        second["skipped"])
    assert second["timings"]["train"] < 5 and second["timings"]["eval"] < 5

    # an interrupted evaluation (results.json missing) is redone alone
    os.remove(out / "eval" / "dft" / "results.json")
    third = run_cli(out, model)
    assert (out / "eval" / "dft" / "results.json").is_file()
    assert "eval dft" not in third["skipped"] and "eval sft" in third["skipped"]
