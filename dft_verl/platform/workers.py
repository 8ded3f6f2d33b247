"""verl's Ray workers, ready for the CPU platform: a plain gloo process group and the CPU engines.

verl's ``TrainingWorker`` starts its process group with ``cpu:gloo,<device>:<backend>``, which torch
rejects when the device is also "cpu" (``verl/utils/distributed.py``, ``initialize_global_process_group_ray``).
These subclasses start a plain gloo group first (verl skips its own when one exists) and register
the CPU engines before verl looks one up. Off the CPU platform they are verl's workers unchanged.
Used by the Ray SFT trainer (``dft_verl.trainer.sft_ray``) and the CPU trainer mode for
``main_ppo`` (``dft_verl.trainer.ppo_cpu``).
"""

from __future__ import annotations

from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

from dft_verl.platform.cpu import init_ray_worker_distributed
from dft_verl.placement import placement_line


class GlooReadyTrainingWorker(TrainingWorker):
    def __init__(self, config):
        init_ray_worker_distributed()
        print(placement_line("trainer"), flush=True)
        super().__init__(config)


class GlooReadyActorRolloutRefWorker(ActorRolloutRefWorker):
    """verl's actor/rollout/reference worker; its inner actor and reference workers are gloo-ready."""

    actor_worker_cls = GlooReadyTrainingWorker
    ref_worker_cls = GlooReadyTrainingWorker
