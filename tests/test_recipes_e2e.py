"""`PRESET=cpu-tiny bash recipes/table3/run_all.sh` (python -m dft_verl.table3 run) for real: data (inputs built offline, prepare -> sample ->
verify -> filter), every Table-3 row trained by its real trainer (torchrun SFT/DPO, verl's main_ppo for PPO/GRPO),
evaluated by `python -m dft_verl.eval`, then the report. Then the resume behaviour: a second run starts no
command and changes no output; a failing row stops the run naming its log and leaves the other rows as they
were; deleting one row's results and checkpoint redoes that row alone.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RUN_ALL = REPO / "recipes" / "table3" / "run_all.sh"
SFT_TRAINED = ("sft", "iw_sft_sft", "dft_sft", "dpo", "rft", "iw_sft_offline", "dft_offline")
RL_TRAINED = ("ppo", "grpo")


def table3_rows() -> list[str]:
    from dft_verl.table3.rows import ROW_KEYS

    return list(ROW_KEYS)


def tiny_env(runs: Path, **extra: str) -> dict[str, str]:
    """The caller's environment minus Table-3 settings, plus PRESET=cpu-tiny into ``runs``."""
    from dft_verl.table3.settings import NAMES

    env = {k: v for k, v in os.environ.items() if k not in NAMES}
    venv_bin = str(Path(sys.executable).parent)  # torchrun and ray of this interpreter
    env.update(PRESET="cpu-tiny", RUNS_DIR=str(runs), PYTHON=sys.executable, PYTHONPATH=str(REPO),
               PATH=venv_bin + os.pathsep + env.get("PATH", ""), HF_HUB_OFFLINE="1", WANDB_MODE="disabled",
               # the newest checkpoint of each row evaluated, not every one, and no token probabilities: cpu-tiny's
               # Fig. 1 and Fig. 2 are tests/test_demo_e2e.py's run of the same runner (CI time)
               EVAL_EVERY_CHECKPOINT="0", TOKEN_PROBS="0")
    env.pop("VERL_PLATFORM", None)  # DEVICE=cpu must be enough
    env.update(extra)
    return env


def run_all(runs: Path, *rows: str, timeout: int = 1800, **env: str) -> subprocess.CompletedProcess:
    log = runs.parent / f"run_all-{len(list(runs.parent.glob('run_all-*.log')))}.log"
    with open(log, "w") as f:
        proc = subprocess.run(["bash", str(RUN_ALL), *rows], stdout=f, stderr=subprocess.STDOUT, text=True,
                              env=tiny_env(runs, **env), timeout=timeout, cwd=runs.parent)
    proc.stdout = log.read_text()
    return proc


def outputs(runs: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under ``runs``."""
    return {str(p.relative_to(runs)): (p.stat().st_size, p.stat().st_mtime_ns) for p in runs.rglob("*") if p.is_file()}


def checkpoint(runs: Path, row: str) -> Path:
    ckpt = runs / "checkpoints" / row
    step = (ckpt / "latest_checkpointed_iteration.txt").read_text().strip()
    return ckpt / f"global_step_{step}" / ("actor/huggingface" if row in RL_TRAINED else "huggingface")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("table3") / "runs"
    proc = run_all(runs)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return runs, proc.stdout


def test_every_row_trains_evaluates_and_reports(tiny_run):
    runs, _ = tiny_run
    data = runs / "data"
    for name in ("prepare/rl.parquet", "prepare/sft.parquet", "filter/sft.parquet", "filter/dpo.parquet"):
        assert (data / name).is_file(), name
    base = data / "tiny_model"
    for row in table3_rows():
        results = json.loads((runs / row / "eval" / "results.json").read_text())
        model = base if row == "base" else checkpoint(runs, row)
        if row != "base":
            assert (model / "config.json").is_file() and (runs / row / "steps" / "train.json").is_file(), row
            assert (runs / row / "train.log").stat().st_size > 0, row
        assert results["model"] == str(model), row
        bench = results["benchmarks"]["math500"]
        assert bench["k"] == 2 and bench["n_questions"] == 8 and 0 <= bench["avg_at_k"] <= 100, row
    # the trainers moved the weights (a row that silently skipped training would equal the base model)
    from safetensors.torch import load_file

    before = load_file(str(base / "model.safetensors"))
    for row in ("sft", "dft_sft", "dpo", "grpo"):
        after = load_file(str(checkpoint(runs, row) / "model.safetensors"))
        assert max((after[k] - before[k]).abs().max().item() for k in before) > 0, row
    with open(runs / "report" / "table3.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["row"] for r in table] == table3_rows()
    assert all(r["math500"] != "" for r in table), table  # every row has its number in the report
    # KEEP_TRAINING_STATE=0 (cpu-tiny): after training, every checkpoint holds only the HF weights evaluation reads
    from dft_verl.checkpoints import NOTE_FILE

    for row in SFT_TRAINED + RL_TRAINED:
        steps = sorted((runs / "checkpoints" / row).glob("global_step_*"), key=lambda p: int(p.name.split("_")[-1]))
        assert steps, row  # SAVE_FREQ=1: one per step
        for step in steps:
            kept = sorted(str(p.relative_to(step)) for p in step.rglob("*") if p.is_file())
            hf = "actor/huggingface" if row in RL_TRAINED else "huggingface"
            assert NOTE_FILE in kept and all(k == NOTE_FILE or k.startswith(hf + "/") for k in kept), (row, kept)
        assert not list((runs / row / "eval").glob("step_*")), row  # EVAL_EVERY_CHECKPOINT=0: the newest only


def sequence_lengths(parquet: Path, tokenizer_path: Path, max_length: int) -> list[int]:
    """Token counts of an SFT parquet's sequences as verl's SFT dataset builds them (prompt and response)."""
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    config = OmegaConf.create({"pad_mode": "no_padding", "max_length": max_length, "truncation": "right",
                               "messages_key": "messages"})
    dataset = MultiTurnSFTDataset(parquet_files=str(parquet), tokenizer=AutoTokenizer.from_pretrained(tokenizer_path),
                                  config=config)
    return [len(dataset[i]["input_ids"]) for i in range(len(dataset))]


def test_every_row_records_what_it_cost(tiny_run):
    """Each row's compute (dft_verl.cost) against counts made here from the same data: the sampling's generated
    tokens by the tokenizer, the SFT row's trained tokens by verl's own SFT dataset (8 gold solutions, batch 4: both
    trained once), each GRPO step's sequences (batch 4 x n 2), and FLOPs = 6 N trained + 2 N (generated + scored) with
    N the loaded model's parameters; every step this machine ran has its CPU seconds; the report draws the figure."""
    import pandas as pd
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dft_verl import cost
    from dft_verl.table3.rows import get_row

    runs, _ = tiny_run
    model = runs / "data" / "tiny_model"
    n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model).parameters())
    tokenizer = AutoTokenizer.from_pretrained(model)
    responses = pd.read_parquet(runs / "data" / "sample" / "samples.parquet")["response"].tolist()
    generated = sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses)
    sampling = json.loads((runs / "data" / "cost" / "pipeline.json").read_text())["sample"]
    assert (sampling["generated_tokens"], sampling["sequences"], sampling["params"]) == (generated, 32, n_params)

    sft = cost.row_cost(runs, get_row("sft"))
    assert sft.train.trained_tokens == sum(sequence_lengths(runs / "data" / "prepare" / "sft.parquet", model, 256))
    assert sft.params == n_params and sft.data is None
    assert sft.total_flops == 6 * n_params * sft.train.trained_tokens
    assert sft.eval.generated_tokens > 0 and sft.eval.steps == 1  # the newest checkpoint (EVAL_EVERY_CHECKPOINT=0)

    dft = cost.row_cost(runs, get_row("dft_offline"))
    lengths = sorted(sequence_lengths(runs / "data" / "filter" / "sft.parquet", model, 256))
    trained_seqs = len(lengths) // 4 * 4  # batch 4, the last partial batch dropped
    assert sum(lengths[:trained_seqs]) <= dft.train.trained_tokens <= sum(lengths[-trained_seqs:])
    assert dft.total_flops == 6 * n_params * dft.train.trained_tokens + 2 * n_params * generated

    for row, per_step, models in (("grpo", 4 * 2, 1), ("ppo", 4 * 1, 2)):  # PPO also trains its critic
        steps = cost.metrics_by_step(cost.metrics_files(runs / row, "train"))
        assert steps, row
        for data in steps.values():
            sequences = data["perf/total_num_tokens"] / (data["prompt_length/mean"] + data["response_length/mean"])
            assert sequences == pytest.approx(per_step, abs=1e-6), row
        rl = cost.row_cost(runs, get_row(row))
        tokens = sum(data["perf/total_num_tokens"] for data in steps.values())
        assert rl.train.trained_tokens == models * tokens, row
        assert 0 < rl.train.generated_tokens <= per_step * 48 * len(steps), row
        assert rl.train.scored_tokens >= 2 * tokens, row  # old-policy log-probs, and the reference or the values

    for row in table3_rows():
        for manifest in (runs / row / "steps").glob("*.json"):
            if not manifest.name.endswith(".started.json"):
                rec = json.loads(manifest.read_text())
                ray = row in RL_TRAINED and manifest.stem == "train"  # main_ppo's own Ray cluster
                assert rec["launch"] == ("ray" if ray else "local") and rec["device"] == "cpu", manifest
                assert rec["cpu_seconds"] >= 0, manifest
                assert rec.get("dtype") == ("float32" if manifest.stem == "train" else None), manifest  # the report's
                if manifest.stem in ("train", "eval") and not ray:  # processes that compute (prune moves files)
                    assert rec["cpu_seconds"] > 0, manifest
    with open(runs / "report" / "table3.csv") as f:
        table = {r["row"]: r for r in csv.DictReader(f)}
    for row in SFT_TRAINED + RL_TRAINED:
        assert int(table[row]["flops"]) > 0, row
        assert float(table[row]["device_s"]) > 0 if row in SFT_TRAINED else table[row]["device_s"] == "", row
    assert table["dft_offline"]["includes_sampling"] == "True" and table["sft"]["includes_sampling"] == "False"
    assert (runs / "report" / "accuracy_vs_compute.png").stat().st_size > 0
    assert "; training dtype float32;" in (runs / "report" / "table3.md").read_text()


def test_every_row_is_on_one_tracking_board(tiny_run):
    """RUNS_DIR/tensorboard/<row>: each trained row's training scalars (verl's trainer.logger) and, for every row,
    its evaluation score at the step of the checkpoint evaluated, equal to its results.json."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs, _ = tiny_run
    assert sorted(p.name for p in (runs / "tensorboard").iterdir()) == sorted(table3_rows())
    for row in table3_rows():
        board = EventAccumulator(str(runs / "tensorboard" / row))
        board.Reload()
        tags = board.Tags()["scalars"]
        results = json.loads((runs / row / "eval" / "results.json").read_text())
        last = board.Scalars("eval/math500/avg_at_k")[-1]
        assert last.value == pytest.approx(results["benchmarks"]["math500"]["avg_at_k"], abs=1e-4), row
        if row == "base":
            assert last.step == 0 and all(t.startswith("eval/") for t in tags), tags
            continue
        step = int((runs / "checkpoints" / row / "latest_checkpointed_iteration.txt").read_text())
        assert last.step == step, row
        training = [t for t in tags if not t.startswith("eval/")]
        assert training, (row, tags)  # the trainer's own scalars
        if row in ("dft_sft", "dft_offline"):
            assert {"dft/weight", "dft/token_prob", "train/loss"} <= set(tags), tags
        if row == "dpo":
            assert "dpo/reward_margin" in tags, tags
        if row in RL_TRAINED:
            assert any("reward" in t for t in tags), tags


def test_second_run_skips_everything_and_rewrites_nothing(tiny_run):
    runs, _ = tiny_run
    before = outputs(runs)
    proc = run_all(runs, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    after = outputs(runs)
    # timings.tsv is the run's own bookkeeping: one line per stage per run (checked below); nothing else changes
    changed = sorted(k for k in set(before) | set(after) if after.get(k) != before.get(k) and k != "timings.tsv")
    assert not changed, changed
    for row in ["data", *table3_rows(), "report"]:
        assert f"==== [table3] {row} done in " in proc.stdout
    for row in table3_rows():
        if row != "base":
            assert f"[{row}] train: skipped (finished " in proc.stdout
        assert f"[{row}] eval: skipped (finished " in proc.stdout
    assert "[report] report: skipped (finished " in proc.stdout and "running" not in proc.stdout
    # each stage's wall time appended: two runs, so two lines per stage
    lines = [line.split("\t") for line in (runs / "timings.tsv").read_text().splitlines()]
    for row in ["data", *table3_rows(), "report"]:
        assert sum(1 for fields in lines if fields[0] == row) == 2, row
    assert all(len(fields) == 3 and fields[1].isdigit() for fields in lines)


def test_failed_row_stops_with_its_log_and_redoing_one_row(tiny_run):
    runs, _ = tiny_run
    import shutil

    shutil.rmtree(runs / "dft_sft")  # delete one row's results and checkpoints
    shutil.rmtree(runs / "checkpoints" / "dft_sft")
    before = outputs(runs)
    # dft_sft fails (a learning rate its config rejects): the run stops there with its log's path
    bad = run_all(runs, "base", "dft_sft", "grpo", SFT_LR="not-a-number", timeout=600)
    assert bad.returncode != 0
    assert f"full log: {runs / 'dft_sft' / 'train.log'}" in bad.stdout
    assert "row 'dft_sft' failed" in bad.stdout
    assert "[grpo]" not in bad.stdout  # nothing after the failed row ran
    assert not (runs / "dft_sft" / "steps" / "train.json").exists()
    own = ("dft_sft/", "checkpoints/dft_sft/", "tensorboard/dft_sft/", "timings.tsv")  # the failed row's; bookkeeping
    assert {k: v for k, v in outputs(runs).items() if not k.startswith(own)} == \
        {k: v for k, v in before.items() if not k.startswith(own)}
    # a plain rerun redoes exactly the deleted row (and the report), nothing else
    ok = run_all(runs, timeout=900)
    assert ok.returncode == 0, ok.stdout[-4000:]
    after = outputs(runs)
    redone = {k.split("/")[0] for k in after if after[k] != before.get(k) and not k.startswith("data/")}
    # the report reruns only if a result's bytes changed (retraining the same rows with the same seeds may not)
    assert redone - {"report", "report.log"} == {"dft_sft", "checkpoints", "tensorboard", "timings.tsv"}, redone
    assert {k.split("/")[1] for k in after if k.startswith("checkpoints/") and after[k] != before.get(k)} == \
        {"dft_sft"}
    assert json.loads((runs / "dft_sft" / "eval" / "results.json").read_text())["model"] == str(
        checkpoint(runs, "dft_sft"))


def test_a_new_iw_sft_reference_model_reruns_its_log_probs_and_training(tiny_run, tmp_path):
    """IW_SFT_REF_MODEL is an input of the reference log-probs: changing it redoes them and what trained on them (the
    rerun says why), where the old recipes silently reused the stale file. (Runs after the tests that rerun every
    row: iw_sft_sft's evaluation is stale from here on.)"""
    runs, _ = tiny_run
    other = tmp_path / "ref"  # another model: the SFT row's (a copy of the base model would give the same file)
    import shutil

    shutil.copytree(checkpoint(runs, "sft"), other)
    before = outputs(runs)
    proc = run_all(runs, "iw_sft_sft", IW_SFT_REF_MODEL=str(other), EVAL="0", timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    (why,) = [line for line in proc.stdout.splitlines() if line.startswith("[iw_sft_sft] ref_logprobs: running")]
    assert "(inputs changed: args, file " in why and f"file {other}" in why  # the command and the model it reads
    assert "[iw_sft_sft] train: running (inputs changed: file " in proc.stdout
    assert f"--model {other}" in (runs / "iw_sft_sft" / "ref_logprobs.log").read_text().split("====")[-1]
    after = outputs(runs)
    redone = {k.split("/")[0] for k in set(after) | set(before) if after.get(k) != before.get(k)}
    assert redone <= {"iw_sft_sft", "checkpoints", "data", "tensorboard", "timings.tsv", "report", "report.log"}
    assert {k for k in after if k.startswith("data/") and after[k] != before.get(k)} == {
        "data/ref_logprobs/sft.parquet"}


def test_two_nodes_of_torchrun_train_the_one_node_model(tiny_run, tmp_path):
    """NNODES=2 without Ray: the same recipe started on two "nodes" (two launches on loopback, NODE_RANK 0 and 1,
    one rank each) trains one model together, with the same weights as the one-node run of two ranks above (same
    data, same seed, same world size); node 1 runs the training only and leaves everything else to node 0."""
    import shutil
    import socket

    import torch
    from safetensors.torch import load_file

    runs, _ = tiny_run
    two = tmp_path / "runs"
    shutil.copytree(runs / "data", two / "data")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    nodes = [subprocess.Popen(["bash", str(REPO / "recipes" / "table3" / "run_sft.sh")], cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=tiny_env(two, NNODES="2", N_GPUS_PER_NODE="1", NODE_RANK=str(rank),
                                           MASTER_ADDR="127.0.0.1", MASTER_PORT=port, EVAL="0"))
             for rank in (0, 1)]
    out = [node.communicate(timeout=900)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in out)
    assert "[sft] train: running" in out[0] and "[sft] train: running" in out[1]
    assert "node 0 runs it" in out[1] and "node 0 runs it" not in out[0]
    launches = [line for line in (two / "sft" / "train.log").read_text().splitlines() if line.startswith("====")]
    for rank in (0, 1):  # each node's torchrun, logged to the row's one train.log
        assert any(f"--nnodes=2 --node_rank={rank} " in line and "--nproc_per_node=1" in line for line in launches), \
            launches
    together = load_file(str(checkpoint(two, "sft") / "model.safetensors"))
    alone = load_file(str(checkpoint(runs, "sft") / "model.safetensors"))
    assert together.keys() == alone.keys()
    assert all(torch.equal(together[k], alone[k]) for k in alone)  # bitwise
