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
        pid, ip = ray.get(actor.pid.remote()), ray.util.get_node_ip_address()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ray.exceptions.RayActorError) as err:
            ray.get(actor.pid.remote(), timeout=60)
    finally:
        ray.shutdown()
    log = f"step output\nTraceback ...\n{err.value}\n(again) {err.value}\n"
    assert died_actors(log) == [f"Ray actor RolloutLike (replica_0, pid {pid}, ip {ip}) died"]
    # reported by a worker, each line as the driver forwards it: "(Name pid=N)" before it, colored on a terminal
    for prefix in ("\x1b[36m(AgentLoopWorkerTQ pid=11431)\x1b[0m ", "(AgentLoopWorkerTQ pid=11431, ip=10.0.0.2) "):
        forwarded = "".join(prefix + line + "\n" for line in f"Traceback ...\n{err.value}".splitlines())
        assert died_actors("driver output\n" + forwarded) == [
            f"Ray actor RolloutLike (replica_0, pid {pid}, ip {ip}) died"]
    assert died_actors("no actor died here") == []


def test_no_nodes_to_lose_answers_at_once():
    assert lost_nodes("http://127.0.0.1:9", set(), wait_s=30) == []


def test_a_cluster_without_room_for_the_ranks_is_refused_naming_the_flag(monkeypatch):
    """Before verl would wait forever on placement groups Ray cannot place: with RAY_RANK_RESOURCE, too few rank
    slots (or too few CPUs for verl's bundles of max_colocate_count CPUs) is an error naming what to start."""
    import ray

    from dft_verl.placement import RANK_RESOURCE_ENV
    from dft_verl.platform.cpu import PlatformCPU, check_rank_resources

    monkeypatch.setenv(RANK_RESOURCE_ENV, "rank_slot")
    assert PlatformCPU().ray_resource_options(0.5) == {"num_cpus": 1, "resources": {"rank_slot": 0.5}}
    ray.init(num_cpus=4, resources={"rank_slot": 1}, include_dashboard=False, logging_level="ERROR")
    try:
        check_rank_resources(1, 3)
        with pytest.raises(ValueError, match=r"1 free rank_slot for 2 trainer ranks .*--resources='\{\"rank_slot\""):
            check_rank_resources(2, 1)
        with pytest.raises(ValueError, match=r"4 free CPUs for 1 trainer ranks .* of 10 Ray CPUs each"):
            check_rank_resources(1, 10)
        monkeypatch.delenv(RANK_RESOURCE_ENV)  # plain CPUs: one per rank
        check_rank_resources(4, 3)
        with pytest.raises(ValueError, match="4 free CPUs for 5 trainer ranks"):
            check_rank_resources(5, 3)
    finally:
        ray.shutdown()
