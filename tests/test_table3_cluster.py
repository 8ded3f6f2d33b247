"""What a failed step says it lost: Ray actors reported dead in its log (a real ActorDiedError from a killed actor
process) and nodes of its cluster. The two-node run with a killed raylet is tests/test_recipes_ray.py."""

from __future__ import annotations

import os
import signal

import pytest

from dft_verl.table3.cluster import died_actors, lost_nodes


class RolloutLike:
    def pid(self) -> int:
        return os.getpid()


def test_a_killed_actor_is_named_from_the_error_ray_prints(tmp_path):
    import ray

    here = os.path.dirname(os.path.abspath(__file__))  # the actor's class, importable in its worker
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", "")}})
    try:
        actor = ray.remote(num_cpus=0)(RolloutLike).options(name="replica_0").remote()
        pid = ray.get(actor.pid.remote())
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ray.exceptions.RayActorError) as err:
            ray.get(actor.pid.remote(), timeout=60)
    finally:
        ray.shutdown()
    log = f"step output\nTraceback ...\n{err.value}\n(again) {err.value}\n"
    assert died_actors(log) == [f"Ray actor RolloutLike (replica_0, pid {pid}, ip {died_ip(str(err.value))}) died"]
    assert died_actors("no actor died here") == []


def died_ip(message: str) -> str:
    return message.split("ip: ", 1)[1].split()[0]


def test_no_nodes_to_lose_answers_at_once():
    assert lost_nodes("http://127.0.0.1:9", set(), wait_s=30) == []
