"""The recipes on a two-node Ray cluster on this machine: a head and a worker node on 127.0.0.1 (`ray start --head`
and `ray start --address=...`, each with its own ports and temp folder, each declaring one rank slot:
tests/ray_nodes.py), then

    NNODES=2 N_GPUS_PER_NODE=1 RAY_RANK_RESOURCE=rank_slot RAY_ADDRESS=http://127.0.0.1:<dashboard> \\
        PRESET=cpu-tiny bash recipes/table3/run_all.sh data dpo grpo

Every step is a `ray job submit`; DPO (dft_verl.dpo.train_ray) and GRPO (verl's main_ppo, trainer.nnodes=2) place
one rank on each node, the data step's sampling and each evaluation run one hf sampler actor on each node, and each
rank's or sampler's log line says which node it ran on. The outputs land where a local run puts them. Then a node is
lost mid-row: its raylet is killed while the dft_sft row (dft_verl.trainer.sft_ray, the SFT family's trainer) trains;
the run fails within a bounded time naming the row and the lost node, and the same command, once the node is back,
resumes from the last checkpoint to the step count of a clean run with a rank on each node, leaving the finished
rows as they were.

Nodes are stopped by ending the processes this test started (never `ray stop`, which would end every Ray process on
the machine).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from ray_nodes import AUTH, RANK_SLOT, LoopbackCluster
from test_recipes_e2e import RUN_ALL, checkpoint, outputs, run_all, tiny_env

from dft_verl.placement import placements
from dft_verl.trainer.metrics import metric_series

pytestmark = pytest.mark.slow

# sampling and evaluation in two hf processes each, which in a Ray job are Ray actors spread over the nodes
TWO_NODES = {"NNODES": "2", "N_GPUS_PER_NODE": "1", "RAY_RANK_RESOURCE": RANK_SLOT, "VERIFY_USE_RAY": "true",
             "SAMPLE_PROCESSES": "2", "SAMPLE_BATCH_SIZE": "8",
             "EVAL_ARGS": "--benchmarks math500 --k 2 --max-new-tokens 48 --batch-size 4 --num-workers 1 --processes 2",
             **AUTH}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = LoopbackCluster(tmp_path_factory.mktemp("nodes"))
    try:
        # CPUs are a logical count (the ranks take turns on the cores); the rank slot places one rank per node
        nodes.start_head(num_cpus=16, rank_slots=1)
        nodes.start_worker("worker", num_cpus=16, rank_slots=1)
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="module")
def two_node_run(cluster, tmp_path_factory):
    runs = tmp_path_factory.mktemp("table3_ray") / "runs"
    proc = run_all(runs, "data", "dpo", "grpo", RAY_ADDRESS=cluster.address, timeout=1800, **TWO_NODES)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return runs, proc.stdout


def test_rows_as_ray_jobs_land_where_the_local_run_puts_them(cluster, two_node_run):
    runs, out = two_node_run
    # every command of the rows went through `ray job submit` and the jobs succeeded
    submitted = re.findall(r"^\[\S+\] \S+: ray job submit --address=(\S+) .* -- python -m (\S+)", out, re.M)
    modules = [m for _, m in submitted]
    assert {a for a, _ in submitted} == {cluster.address}
    for module in ("dft_verl.demo.offline_inputs", "dft_verl.pipeline", "dft_verl.dpo.ref_logprobs", "dft_verl.dpo.train_ray", "verl.trainer.main_ppo", "dft_verl.eval"):
        assert module in modules, modules
    assert len(re.findall(r"Job '\S+' succeeded", out)) == len(submitted)
    # the same layout as a local run
    for name in ("prepare/rl.parquet", "prepare/sft.parquet", "filter/sft.parquet", "filter/dpo.parquet"):
        assert (runs / "data" / name).is_file(), name
    for row in ("dpo", "grpo"):
        model = checkpoint(runs, row)
        assert (model / "config.json").is_file(), row
        results = json.loads((runs / row / "eval" / "results.json").read_text())
        assert results["model"] == str(model) and results["benchmarks"]["math500"]["k"] == 2, row
    assert (runs / "report" / "table3.csv").is_file()


def test_every_trained_row_places_a_rank_on_each_node_and_sampling_spreads(cluster, two_node_run):
    runs, _ = two_node_run
    ids = cluster.node_ids()
    name = {node_id: node for node, node_id in ids.items()}
    assert set(ids) == {"head", "worker"}
    where = {}
    for row in ("dpo", "grpo"):
        lines = placements((runs / row / "train.log").read_text())
        ranks = {int(p["rank"]): name[p["node"]] for p in lines if p["role"] == "trainer"}
        assert ranks == {0: ranks[0], 1: ranks[1]} and set(ranks.values()) == {"head", "worker"}, (row, lines)
        assert all(p["world"] == "2" for p in lines if p["role"] == "trainer"), row
        where[row] = ranks
        if row == "grpo":  # one rollout replica beside each rank
            replicas = {p["role"]: name[p["node"]] for p in lines if p["role"].startswith("rollout replica")}
            assert sorted(replicas.values()) == ["head", "worker"], lines
            where["grpo rollout"] = replicas
    # the data step's sampling and each evaluation: one hf sampler on each node
    for log in (runs / "data" / "pipeline.log", runs / "dpo" / "eval.log", runs / "grpo" / "eval.log"):
        samplers = {p["role"]: name[p["node"]] for p in placements(log.read_text()) if p["role"].startswith("hf sampler")}
        assert sorted(samplers.values()) == ["head", "worker"], (log, samplers)
        where[str(log.relative_to(runs))] = samplers
    print("where each rank ran:", json.dumps(where, sort_keys=True))


def test_a_lost_node_fails_the_row_naming_it_and_the_rerun_resumes(cluster, two_node_run):
    """Kill the worker node's raylet (by PID) while dft_sft trains; the run fails naming the row and the node; with the
    node back (a new `ray start --address`), the same command resumes from the last checkpoint to a clean run's end."""
    runs, _ = two_node_run
    env = tiny_env(runs, RAY_ADDRESS=cluster.address, SFT_EPOCHS="3", KEEP_TRAINING_STATE="1", EVAL="0", **TWO_NODES)
    before = outputs(runs)
    ckpt = runs / "checkpoints" / "dft_sft"
    tracker = ckpt / "latest_checkpointed_iteration.txt"
    log = runs.parent / "lost_node.log"
    worker = cluster.nodes["worker"]
    lost_id = cluster.node_ids()["worker"]
    with open(log, "w") as f:
        proc = subprocess.Popen(["bash", str(RUN_ALL), "dft_sft"], stdout=f, stderr=subprocess.STDOUT, env=env,
                                cwd=runs.parent)
        try:
            deadline = time.time() + 600
            while not (tracker.is_file() and int(tracker.read_text().strip() or 0) >= 2):
                assert proc.poll() is None, log.read_text()[-4000:]
                assert time.time() < deadline, log.read_text()[-4000:]
                time.sleep(0.5)
            os.kill(worker.raylet_pid(), signal.SIGKILL)
            killed_at, saved = time.time(), int(tracker.read_text().strip())
            rc = proc.wait(timeout=300)  # bounded: no hang
        finally:
            if proc.poll() is None:
                proc.kill()
    failed_after = time.time() - killed_at
    # the head's rank keeps training until the job is stopped: a checkpoint may land after the kill (seen: 3 of 6)
    last = int(tracker.read_text().strip())
    out = log.read_text()
    assert rc != 0
    assert re.search(r"Job '\S+' failed", out), out[-3000:]  # the job failed, and so did the script, naming its log
    assert f"FAILED (exit 1): dft_sft/train; full log: {runs / 'dft_sft' / 'train.log'}" in out, out[-3000:]
    assert f"lost during the step: Ray node {lost_id}" in out, out[-3000:]
    assert failed_after < 120, failed_after
    print(f"killed the worker's raylet after checkpoint {saved}; the run failed {failed_after:.0f} s later:",
          next(line for line in out.splitlines() if "lost during the step" in line))

    worker.stop()
    cluster.start_worker("worker", num_cpus=16, rank_slots=1)  # the node back, as a new Ray node
    resumed = subprocess.run(["bash", str(RUN_ALL), "dft_sft"], capture_output=True, text=True, env=env,
                             cwd=runs.parent, timeout=900)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert "resuming an unfinished run with the same inputs" in resumed.stdout
    train_log = (runs / "dft_sft" / "train.log").read_text()
    attempt = train_log.rsplit("==== ", 1)[1]  # the rerun's part of the log
    import pandas as pd

    rows = len(pd.read_parquet(re.search(r"data\.train_files=(\S+)", attempt).group(1)))
    total = rows // 4 * 3  # a clean run: SFT_BATCH_SIZE=4 (cpu-tiny), SFT_EPOCHS=3, the last partial batch dropped
    steps = sorted(metric_series(attempt, "train/loss"))
    latest = int(tracker.read_text().strip())
    assert saved <= last < total, (saved, last, total)
    assert steps and steps[0] == last + 1 and steps[-1] == total == latest, (steps, saved, last, total)
    print(f"last checkpoint before the failure: {last}; rerun resumed at step {steps[0]} and finished at {latest} "
          f"of {total}")
    # the SFT family's Ray trainer (sft_ray) placed a rank on each node, the worker being the new node
    assert f"ray job submit --address={cluster.address}" in resumed.stdout and "python -m dft_verl.trainer.sft_ray" \
        in resumed.stdout
    name = {node_id: node for node, node_id in cluster.node_ids().items()}
    ranks = {int(p["rank"]): name.get(p["node"]) for p in placements(attempt) if p["role"] == "trainer"}
    assert sorted(ranks) == [0, 1] and set(ranks.values()) == {"head", "worker"}, ranks
    # the finished rows are untouched
    own = ("dft_sft/", "checkpoints/dft_sft/", "tensorboard/dft_sft/", "timings.tsv", "report")  # report/, .log
    assert {k: v for k, v in outputs(runs).items() if not k.startswith(own) and k in before} == \
        {k: v for k, v in before.items() if not k.startswith(own)}
