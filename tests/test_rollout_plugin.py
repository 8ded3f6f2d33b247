"""The verl plugin registers the hf rollout backend and the cpu_sync trainer where verl looks them up, and only
in CPU processes (verl swallows a plugin's import errors, so only a fresh process shows what really registered).

Each check runs ``import verl`` in a new interpreter, as every Ray worker and torchrun rank does.
"""

import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json, sys
import verl
from verl.workers.rollout.replica import RolloutReplicaRegistry
from verl.workers.rollout import base
out = {"replicas": sorted(RolloutReplicaRegistry._registry), "adapters": sorted(n for n, _ in base._ROLLOUT_REGISTRY),
       "trainer_imported": "verl.trainer.ppo.v1.trainer_base" in sys.modules,
       "rollout_imported": "dft_verl.rollout.replica" in sys.modules}
if "hf" in out["replicas"]:
    from verl.trainer.ppo.v1 import get_trainer_cls
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class
    out["replica_cls"] = get_rollout_replica_class("hf").__module__ + "." + get_rollout_replica_class("hf").__name__
    out["adapter_cls"] = get_rollout_class("hf").__module__ + "." + get_rollout_class("hf").__name__
    trainer = get_trainer_cls("cpu_sync")
    out["trainer_cls"] = trainer.__module__ + "." + trainer.__name__
    out["trainer_mro"] = [c.__name__ for c in trainer.__mro__]
    from omegaconf import OmegaConf
    out["refused"] = {}
    for name in ("vllm", "sglang"):
        try:
            trainer(OmegaConf.create({"actor_rollout_ref": {"rollout": {"name": name}}}))
        except ValueError as e:
            out["refused"][name] = str(e)
print("PROBE" + json.dumps(out))
"""


def probe(env_update: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    env.update(env_update)
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("PROBE"))
    return json.loads(line[len("PROBE"):])


@pytest.fixture(scope="module")
def cpu_probe() -> dict:
    return probe({"VERL_PLATFORM": "cpu"})


def test_cpu_processes_get_the_hf_backend_and_the_cpu_trainer_mode(cpu_probe):
    out = cpu_probe
    assert "hf" in out["replicas"] and "hf" in out["adapters"]
    assert out["replica_cls"] == "dft_verl.rollout.replica.HFReplica"
    assert out["adapter_cls"] == "dft_verl.rollout.replica.HFServerAdapter"
    assert out["trainer_cls"] == "dft_verl.trainer.ppo_cpu.CPUSyncTrainer"
    assert "PPOTrainerSync" in out["trainer_mro"]  # verl's own sync trainer underneath


def test_gpu_processes_import_nothing_more():
    out = probe({})
    assert "hf" not in out["replicas"] and "hf" not in out["adapters"]
    assert not out["trainer_imported"] and not out["rollout_imported"]
    assert "vllm" in out["replicas"]  # verl's own registrations untouched


def test_dry_run_checks_the_cpu_mode_as_the_workers_will_see_it(tiny_model_dir):
    """`+platform=cpu` composes over the online configs; the checker registers what every Ray worker of that run
    registers (VERL_PLATFORM=cpu from the config), so the hf rollout and cpu_sync trainer resolve."""
    from dft_verl.table3.check import CheckError, check_command

    base = ["--config-path=pkg://dft_verl.config.online", "--config-name=grpo",
            f"actor_rollout_ref.model.path={tiny_model_dir}"]
    notes = " ".join(check_command("verl.trainer.main_ppo", base + ["+platform=cpu"]))
    assert "rollout=hf trainer=cpu_sync" in notes
    with pytest.raises(CheckError, match="Unknown trainer 'cpu_synk'"):
        check_command("verl.trainer.main_ppo", base + ["+platform=cpu", "trainer.v1.trainer_mode=cpu_synk"])
    with pytest.raises(CheckError, match="rollout.name=vllm does not run on the CPU platform"):
        check_command("verl.trainer.main_ppo", base + ["+platform=cpu", "actor_rollout_ref.rollout.name=vllm"])


def test_the_cpu_trainer_refuses_verls_vllm_rollout_at_start_up(cpu_probe):
    """rollout.name=vllm on the CPU platform stops in the trainer's constructor, before any worker or Ray actor
    starts, with the reason and the backend to use (docs/cpu.md: where verl's vLLM rollout stops on CPU)."""
    refused = cpu_probe["refused"]
    assert "distribution name 'vllm'" in refused["vllm"] and "no attribute 'weight_loader'" in refused["vllm"]
    assert "Use actor_rollout_ref.rollout.name=hf" in refused["vllm"]
    assert refused["sglang"] == ("actor_rollout_ref.rollout.name=sglang is not a CPU rollout; on the CPU platform "
                                 "use one of: hf")
