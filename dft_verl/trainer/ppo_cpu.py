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

from dft_verl.platform.workers import GlooReadyActorRolloutRefWorker, GlooReadyTrainingWorker

TRAINER_MODE = "cpu_sync"
_CPU_WORKERS = {ActorRolloutRefWorker: GlooReadyActorRolloutRefWorker, TrainingWorker: GlooReadyTrainingWorker}


@dataclass
class CPUResourcePoolManager(ResourcePoolManager):
    """verl's resource pools, checked against the cluster's free CPUs (one per worker process)."""

    def _check_resource_available(self):
        free = sum(node.get("CPU", 0) for node in ray._private.state.available_resources_per_node().values())
        need = sum(sum(counts) for counts in self.resource_pool_spec.values())
        if free < need:
            raise ValueError(
                f"the Ray cluster has {free:g} free CPUs for {need} trainer worker processes "
                f"(trainer.nnodes x trainer.n_gpus_per_node); raise ray_kwargs.ray_init.num_cpus or start Ray "
                f"with more --num-cpus (a logical count: workers take turns on the cores)")


@register_trainer(TRAINER_MODE)
class CPUSyncTrainer(PPOTrainerSync):
    """verl's synchronous PPO/GRPO trainer with CPU-ready workers and CPU resource accounting."""

    def __init__(self, config):
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
