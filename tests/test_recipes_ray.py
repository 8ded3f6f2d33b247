"""The recipes through `ray job submit`: a Ray head on 127.0.0.1 (loopback only, its own temp folder), then
`RAY_ADDRESS=http://127.0.0.1:<dashboard> PRESET=cpu-tiny bash recipes/table3/run_all.sh data sft grpo`:
the data step, the SFT row (verl's Ray SFT trainer, dft_verl.trainer.sft_ray), GRPO (verl's main_ppo) and their
evaluations are Ray jobs; the outputs land where a local run puts them; a failing job fails the script.

The runner logs each submitted command ("[row] step: ray job submit ... -- python -m <module>"). The head is stopped by ending the processes this test started (never `ray stop`, which would end every Ray
process on the machine).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_recipes_e2e import checkpoint, outputs, run_all

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_under(folder: str) -> list[int]:
    """Pids whose command line names ``folder`` (every daemon of a Ray head started with --temp-dir=folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if folder.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def ray_head():
    # A short temp folder of its own: Ray's unix sockets live under it (path length limit) and its processes
    # can be found by it at teardown.
    temp = tempfile.mkdtemp(prefix="rayt", dir="/tmp")
    # Ray >= 2.5x turns token authentication on when ~/.ray/auth_token exists (left by any earlier local
    # ray.init); its job agent then never accepted jobs here. The head listens on loopback only: no tokens.
    auth = {"RAY_AUTH_MODE": "disabled"}
    dashboard = free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]), RAY_USAGE_STATS_ENABLED="0", **auth)
    head = subprocess.Popen(
        [os.path.join(venv_bin, "ray"), "start", "--head", "--block", f"--port={free_port()}", "--num-cpus=16",
         "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--temp-dir={temp}", "--include-dashboard=true"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 180
        while True:  # jobs are accepted once the dashboard and the node's job agent are up
            probe = subprocess.run([os.path.join(venv_bin, "ray"), "job", "submit", f"--address={address}", "--",
                                    "true"], capture_output=True, text=True, env=env)
            if probe.returncode == 0:
                break
            assert head.poll() is None, head.stdout.read()
            assert time.time() < deadline, probe.stderr[-2000:]
            time.sleep(3)
        yield address, auth
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` ends the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        for pid in processes_under(temp):  # any daemon that outlived it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_rows_as_ray_jobs_land_where_the_local_run_puts_them(ray_head, tmp_path):
    address, auth = ray_head
    runs = tmp_path / "runs"
    proc = run_all(runs, "data", "sft", "grpo", RAY_ADDRESS=address, timeout=1500, **auth)
    assert proc.returncode == 0, proc.stdout[-6000:]
    # every command of the rows went through `ray job submit` and the jobs succeeded
    submitted = re.findall(r"^\[\S+\] \S+: ray job submit --address=(\S+) .* -- python -m (\S+)", proc.stdout, re.M)
    modules = [m for _, m in submitted]
    assert {a for a, _ in submitted} == {address}
    for module in ("dft_verl.demo.offline_inputs", "dft_verl.pipeline", "dft_verl.trainer.sft_ray",
                   "verl.trainer.main_ppo", "dft_verl.eval"):
        assert module in modules, modules
    assert len(re.findall(r"Job '\S+' succeeded", proc.stdout)) == len(submitted)
    # the same layout as a local run
    for name in ("prepare/rl.parquet", "prepare/sft.parquet", "filter/sft.parquet", "filter/dpo.parquet"):
        assert (runs / "data" / name).is_file(), name
    for row in ("sft", "grpo"):
        model = checkpoint(runs, row)
        assert (model / "config.json").is_file(), row
        results = json.loads((runs / row / "eval" / "results.json").read_text())
        assert results["model"] == str(model) and results["benchmarks"]["math500"]["k"] == 2, row
    assert (runs / "report" / "table3.csv").is_file()

    # a job that fails fails the script, names the row's log, and leaves the finished rows as they were
    import shutil

    shutil.rmtree(runs / "sft")
    shutil.rmtree(runs / "checkpoints" / "sft")
    before = outputs(runs)
    bad = run_all(runs, "sft", "grpo", RAY_ADDRESS=address, SFT_LR="not-a-number", timeout=600, **auth)
    assert bad.returncode != 0
    assert re.search(r"Job '\S+' failed", bad.stdout), bad.stdout[-3000:]
    assert f"full log: {runs / 'sft' / 'train.log'}" in bad.stdout
    own = ("sft/", "tensorboard/sft/")  # the failed row's own files
    assert {k: v for k, v in outputs(runs).items() if not k.startswith(own)} == \
        {k: v for k, v in before.items() if not k.startswith(own)}
