"""The ten-row demo at CI size, end to end through `dft-verl demo`: it drives the Table-3 runner (dft_verl.table3,
preset cpu-tiny) for real, every row's outputs exist and agree with each other, the summary's numbers and the paired statistics
match an independent computation from the results files, and a rerun resumes (reuses every row, rewrites nothing).

The model is a tiny random Llama taught the training questions' gold solutions for a few seconds, so that at
temperature 1.0 it answers a share of them correctly (real correct and wrong samples for RFT, DFT, DPO and the RL
rewards). Every row runs its real trainer (torchrun, 2 ranks). The demo here runs six of the ten rows, the ones
its paired comparisons DFT-offline vs RFT and DPO, and DFT-SFT vs SFT need: all ten rows through the same runner, PPO
and GRPO by verl's main_ppo included, are tests/test_recipes_e2e.py's run (CI time).
"""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dft_verl.demo import tasks
from dft_verl.demo.run import ALL_ROWS
from dft_verl.tiny import teach_tiny_model

pytestmark = pytest.mark.slow

N_TRAIN, N_TEST, N_FORMAT = 8, 8, 4
ROWS = ("base", "sft", "dft_sft", "dpo", "rft", "dft_offline")  # table order, a subset of ALL_ROWS
TRAINED = [r for r in ROWS if r != "base"]


def run_cli(out: Path, model: str, *extra: str) -> dict:
    from dft_verl.cli import main

    main(["demo", "--out", str(out), "--model", model, "preset=cpu-tiny", f"task.n_train={N_TRAIN}",
          f"task.n_test={N_TEST}", "task.families=[add]", f"warmup.n_questions={N_FORMAT}", *extra])
    return json.loads((out / "report" / "summary.json").read_text())


def _files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    assert list(ROWS) == [r for r in ALL_ROWS if r in ROWS]
    root = tmp_path_factory.mktemp("demo")
    model = teach_tiny_model(root / "taught", tasks.make_problems(N_TRAIN, 0, ("add",)))
    out = root / "out"
    return out, str(model), run_cli(out, str(model), f"rows=[{','.join(ROWS)}]")


def _base_model(out: Path) -> Path:
    warm = out / "warmup" / "checkpoints" / "sft"
    return warm / f"global_step_{(warm / 'latest_checkpointed_iteration.txt').read_text().strip()}" / "huggingface"


def _hf_dir(out: Path, row: str) -> Path:
    ckpt = out / "checkpoints" / row
    step = (ckpt / "latest_checkpointed_iteration.txt").read_text().strip()
    return ckpt / f"global_step_{step}" / "huggingface"


def test_the_recipes_ran_every_row_from_the_warmed_up_model(demo_run):
    out, model, summary = demo_run
    # the warm-up: the recipes' SFT row on the format split, no evaluation; its checkpoint is the base model
    base_model = _base_model(out)
    assert (base_model / "config.json").is_file() and not (out / "warmup" / "sft" / "eval").exists()
    assert f"model.path={model}" in (out / "warmup" / "sft" / "train.log").read_text()
    assert len(pd.read_parquet(out / "warmup" / "data" / "prepare" / "sft.parquet")) == N_FORMAT
    # the runner ran the data step, all ten rows and the report, in order
    demo_log = (out / "demo.log").read_text()
    starts = [line.split("[table3] ")[1].split()[0] for line in demo_log.splitlines() if " start" in line and
              "==== [table3]" in line]
    assert starts[-len(ROWS) - 2:] == ["data", *ROWS, "report"]
    assert list(summary["row_seconds"]) == ["data", *ROWS, "report"]
    # the data step sampled the demo's training questions with the base model
    rl = pd.read_parquet(out / "data" / "prepare" / "rl.parquet")
    train_q = [json.loads(x)["question"] for x in (out / "task" / "train.jsonl").read_text().splitlines()]
    assert sorted(e["question"] for e in rl["extra_info"]) == sorted(train_q)
    assert f"sample.model_path={base_model}" in (out / "data" / "pipeline.log").read_text()
    # every trained row started from the base model and wrote an HF checkpoint that differs from it
    from safetensors.numpy import load_file

    base_w = load_file(str(base_model / "model.safetensors"))
    for row in TRAINED:
        log = (out / row / "train.log").read_text()
        assert str(base_model) in log, row
        trained = load_file(str(_hf_dir(out, row) / "model.safetensors"))
        moved = [k for k in base_w if k in trained and not np.allclose(base_w[k], trained[k].astype(base_w[k].dtype))]
        assert moved, f"{row}: no weight changed"


def test_every_row_evaluated_on_the_held_out_questions(demo_run):
    out, model, summary = demo_run
    bench = [json.loads(x) for x in (out / "bench" / "math500" / "test.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (out / "task" / "test.jsonl").read_text().splitlines()]
    assert [b["problem"] for b in bench] == [t["question"] for t in test] and len(bench) == N_TEST
    sizes = set()
    records = {r["row"]: r for r in summary["rows"]}
    assert list(records) == list(ROWS)
    for row in ROWS:
        res = json.loads((out / row / "eval" / "results.json").read_text())
        entry = res["benchmarks"]["math500"]
        samples = pd.read_parquet(out / row / "eval" / "samples" / "math500.parquet")
        assert res["k"] == 2 and len(entry["per_question_acc"]) == N_TEST and len(samples) == 2 * N_TEST
        # the summary's number is the mean of the per-question accuracies, which are the judged samples' means
        per_q = samples.groupby("index")["correct"].mean().sort_index().tolist()
        assert entry["per_question_acc"] == pytest.approx(per_q)
        assert records[row]["avg_at_k"] == pytest.approx(100 * np.mean(per_q))
        assert res["model"] == str(_base_model(out) if row == "base" else _hf_dir(out, row))
        # Fig. 2 data: the same offline-RL tokens scored by every row's model
        probs = np.load(out / row / "token_probs" / "token_probs.npy")
        assert probs.size and 0 <= probs.min() and probs.max() <= 1
        sizes.add(probs.size)
    assert len(sizes) == 1
    # cpu-tiny's SAVE_FREQ=1, EVAL_EVERY_CHECKPOINT=1: a checkpoint per step, each evaluated into eval/step_<N> (Fig. 1)
    for row in TRAINED:
        steps = sorted((out / "checkpoints" / row).glob("global_step_*"), key=lambda p: int(p.name.split("_")[-1]))
        assert steps, row
        for step in steps:
            assert (out / row / "eval" / step.name.replace("global_", "") / "results.json").is_file(), step
        # the newest checkpoint is evaluated once: its step point is a copy of the row's result
        last = out / row / "eval" / steps[-1].name.replace("global_", "")
        assert (last / "results.json").read_bytes() == (out / row / "eval" / "results.json").read_bytes(), row
        assert not (last / "samples").exists(), row
    md = (out / "report" / "summary.md").read_text()
    for row in ROWS:
        assert f"| {row} |" in md
    assert "sampled in float32, judge dft_verl.rewards" in md and "; trained in float32)" in md  # every trainer
    for png in ("fig1_accuracy_vs_step.png", "fig2_token_probs.png"):
        assert (out / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paired_statistics_match_the_results_files(demo_run):
    """Each paired comparison's A − B equals the mean over questions of the per-question accuracy differences, in
    points, computed here from the two rows' results.json."""
    out, _, summary = demo_run
    paired = pd.read_csv(out / "report" / "paired.csv")
    assert {(a, b) for a, b in zip(paired["a"], paired["b"])} == {
        ("dft_offline", "rft"), ("dft_offline", "dpo"), ("dft_sft", "sft")}  # those of COMPARISONS whose rows ran
    for rec in paired.to_dict("records"):
        acc = [json.loads((out / r / "eval" / "results.json").read_text())["benchmarks"]["math500"]["per_question_acc"]
               for r in (rec["a"], rec["b"])]
        diff = 100 * np.mean(np.subtract(acc[0], acc[1]))
        assert rec["diff"] == pytest.approx(diff, abs=1e-3)
        assert rec["ci_lo"] <= rec["diff"] + 1e-9 <= rec["ci_hi"] + 2e-9
        assert rec["n_questions"] == N_TEST
        assert (rec["verdict"] == "not distinguishable") == (rec["ci_lo"] <= 0 <= rec["ci_hi"])
    assert len(summary["paired"]) == len(paired)
    md = (out / "report" / "summary.md").read_text()
    assert "Ranks beside the paper's" in md and "Headline comparison DFT (offline RL) − RFT (offline RL)" in md


def test_rerun_resumes_and_a_deleted_row_is_redone_alone(demo_run):
    out, model, _ = demo_run
    # files the run's own bookkeeping rewrites each time; everything the rows made must stay untouched
    volatile = {"demo.log", "config.json", "timings.tsv", "warmup/timings.tsv", "report/summary.json",
                "report/summary.md"}
    before = _files(out)
    # KEEP_TRAINING_STATE changes what stays on disk, not a result: no reason to retrain
    second = run_cli(out, model, f"rows=[{','.join(ROWS)}]", "recipe_env.KEEP_TRAINING_STATE=1")
    after = _files(out)
    changed = sorted(k for k in before if k not in volatile and after.get(k) != before[k])
    assert changed == [] and sorted(set(after) - set(before)) == []
    assert {"task", "warmup", *(f"row {r}" for r in ROWS)} <= set(second["skipped"])

    # a row whose evaluation is lost is evaluated again, alone
    os.remove(out / "dft_sft" / "eval" / "results.json")
    third = run_cli(out, model, f"rows=[{','.join(ROWS)}]")
    assert (out / "dft_sft" / "eval" / "results.json").is_file()
    assert "row dft_sft" not in third["skipped"] and "row sft" in third["skipped"]


def test_more_seeds_retrain_the_rows_and_give_their_spread(demo_run):
    """seeds=2: the chosen rows again with SEED=1 into seeds/1/ from the same data; the summary's spread holds the
    two runs' scores, read back here from both results files."""
    out, model, _ = demo_run
    summary = run_cli(out, model, "seeds=2", "rows=[sft,dft_sft]")
    from safetensors.numpy import load_file

    for row in ("sft", "dft_sft"):
        assert "trainer.seed=1" in (out / "seeds" / "1" / row / "train.log").read_text()
        assert "trainer.seed=0" in (out / row / "train.log").read_text()
        # the seed reaches the data order: the two runs end with different weights
        seed1 = load_file(str(_hf_dir(out / "seeds" / "1", row) / "model.safetensors"))
        seed0 = load_file(str(_hf_dir(out, row) / "model.safetensors"))
        assert any(not np.array_equal(seed0[k], seed1[k]) for k in seed0), row
    assert not (out / "seeds" / "1" / "data").exists() and not (out / "seeds" / "1" / "base").exists()
    spread = {r["name"]: r for r in summary["seed_spread"]["rows"]}
    assert set(spread) == {"SFT (SFT data)", "DFT (SFT data)"}
    for row, name in (("sft", "SFT (SFT data)"), ("dft_sft", "DFT (SFT data)")):
        scores = [100 * np.mean(json.loads((d / row / "eval" / "results.json").read_text())
                                ["benchmarks"]["math500"]["per_question_acc"]) for d in (out, out / "seeds" / "1")]
        assert spread[name]["values"] == pytest.approx(scores)
    (pair,) = summary["seed_spread"]["paired"]
    assert pair["name"] == "DFT (SFT data) − SFT (SFT data)" and pair["n"] == 2
    assert "Spread across training seeds" in (out / "report" / "summary.md").read_text()


def test_a_larger_held_out_set_is_evaluated_without_retraining(demo_run):
    """task.n_test grows: the trained rows asked for are evaluated on the larger set, whose first questions are the
    old ones, sampling only the new questions (the saved samples stay); no checkpoint or training log changes; rows
    not asked for keep their results. Then a changed EVAL_ARGS samples that evaluation again from scratch."""
    out, model, _ = demo_run
    rows = ["base", "sft", "dft_sft"]
    bench = out / "bench" / "math500" / "test.jsonl"
    old_bench = bench.read_text().splitlines()
    kept = {k: v for k, v in _files(out).items() if k.startswith(("checkpoints/", "warmup/", "data/", "task/train",
                                                                  "task/format"))
            or k.endswith(("train.log", "steps/train.json"))}
    kept.pop("warmup/timings.tsv")  # each run's bookkeeping
    samples = {p: pd.read_parquet(p) for p in out.glob("*/eval/**/samples/math500.parquet")}
    assert {p.relative_to(out).parts[0] for p in samples} == set(ROWS)
    untouched = {k: v for k, v in _files(out).items() if k.startswith("dpo/eval/")}

    summary = run_cli(out, model, "task.n_test=12", f"rows=[{','.join(rows)}]")
    new_bench = bench.read_text().splitlines()
    assert len(new_bench) == 12 and new_bench[:N_TEST] == old_bench
    after = _files(out)
    assert {k: after.get(k) for k in kept} == kept  # nothing trained was touched
    assert {k: v for k, v in after.items() if k.startswith("dpo/eval/")} == untouched  # not asked for
    assert "[sft] eval: running (input grew at its end: " in (out / "demo.log").read_text()
    for path, old in samples.items():
        row, meta = path.relative_to(out).parts[0], json.loads(path.with_suffix(".json").read_text())
        if row in rows and "step_" not in str(path):  # the 8 old questions' samples kept, the 4 new ones added
            new = pd.read_parquet(path)
            assert meta["questions_kept"] == N_TEST and len(new) == len(old) * 12 // N_TEST, path
            assert new["response"][: len(old)].tolist() == old["response"].tolist(), path
            res = json.loads((path.parents[1] / "results.json").read_text())
            assert len(res["benchmarks"]["math500"]["per_question_acc"]) == 12, path
    assert {r["row"]: r["n_questions"] for r in summary["rows"] if r["row"] in rows} == {r: 12 for r in rows}

    k3 = "--benchmarks math500 --k 3 --max-new-tokens 48 --batch-size 16 --num-workers 1"
    run_cli(out, model, "task.n_test=12", "rows=[base]", f"recipe_env.EVAL_ARGS='{k3}'")
    meta = json.loads((out / "base" / "eval" / "samples" / "math500.json").read_text())
    assert meta["questions_kept"] == 0 and meta["settings"]["k"] == 3  # sampled again from scratch
    assert "[base] eval: running (inputs changed: args" in (out / "demo.log").read_text()


def test_a_changed_setting_reruns_what_it_changes_and_says_why(demo_run):
    """DPO_BETA changes DPO's training, not its reference log-probs: those stay, training and evaluation rerun (the
    old checkpoint removed first), every other row is untouched."""
    out, model, _ = demo_run
    before = _files(out)
    run_cli(out, model, "task.n_test=12", "rows=[sft,dpo]", "recipe_env.DPO_BETA=0.2")
    log = (out / "demo.log").read_text()
    assert "[dpo] ref_logprobs: skipped (finished" in log
    assert "[dpo] train: running (inputs changed: args)" in log
    assert f"[dpo] train: removing {out / 'checkpoints' / 'dpo'} (made from other inputs)" in log
    assert "dpo.beta=0.2" in (out / "dpo" / "train.log").read_text().split("====")[-1]
    assert "[dpo] eval: running (inputs changed: file " in log  # its model was retrained
    after = _files(out)
    assert {k: v for k, v in after.items() if k.startswith("sft/")} == \
        {k: v for k, v in before.items() if k.startswith("sft/")}
