"""SFT/DFT training on verl's Ray SFT trainer: the same loss family on a Ray cluster.

    python -m dft_verl.trainer.sft_ray trainer.nnodes=2 trainer.n_gpus_per_node=8 \
        data.train_files=train.parquet model.path=Qwen/Qwen2.5-Math-1.5B loss.type=dft

The driver connects to (or starts) Ray and places one ``TrainingWorker`` per GPU, exactly as
``verl.trainer.sft_trainer_ray`` does, so SFT/DFT rows share a cluster with verl's PPO/GRPO jobs.
Same config (``dft_sft``) and losses as ``dft_verl.trainer.sft``. On the CPU platform each worker
takes one CPU and a plain gloo process group.
"""

from __future__ import annotations

import os

import hydra
import ray
from verl.trainer.sft_trainer_ray import SFTTrainer as RaySFTTrainer

from dft_verl.losses import make_loss_fn
from dft_verl.platform.cpu import check_rank_resources, use_cpu_platform
from dft_verl.platform.workers import GlooReadyTrainingWorker
from dft_verl.trainer.sft import (
    LossFamilyMixin, DataOrderMixin, check_loss_setup, kl_anchor_reference, select_platform, training_client,
)


def ray_training_group(trainer, loss_fn):
    """verl's worker group of one ``TrainingWorker`` per rank (``trainer.n_gpus_per_node`` on each of
    ``trainer.nnodes`` nodes: one Ray placement group per node) with ``loss_fn`` installed, as
    ``verl.trainer.sft_trainer_ray.SFTTrainer._build_engine`` builds it, but with the gloo-ready worker (CPU
    platform). Semi-private seam: the trainer's ``*_config`` attributes and verl's ``RayWorkerGroup``
    (tests/test_trainer_torchrun.py and tests/test_recipes_ray.py run it)."""
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl.workers.engine_workers import TrainingWorkerConfig

    config = TrainingWorkerConfig(
        model_type="language_model",
        model_config=trainer.model_config,
        engine_config=trainer.engine_config,
        optimizer_config=trainer.optimizer_config,
        checkpoint_config=trainer.checkpoint_config,
        profiler_config=trainer.profiler_config,
    )
    cpu = use_cpu_platform()
    trainer.resource_pool = RayResourcePool(  # on CPU one process per bundle: one Ray CPU per rank
        process_on_nodes=[trainer.config.trainer.n_gpus_per_node] * trainer.config.trainer.nnodes,
        **({"max_colocate_count": 1} if cpu else {}),
    )
    if cpu:
        check_rank_resources(trainer.resource_pool.world_size, trainer.resource_pool.max_colocate_count)
    worker = RayClassWithInitArgs(ray.remote(GlooReadyTrainingWorker), config=config)
    group = RayWorkerGroup(
        resource_pool=trainer.resource_pool, ray_cls_with_init=worker, device_name=trainer.config.trainer.device
    )
    group.set_loss_fn(loss_fn=loss_fn)
    group.reset()
    return group


def connect_ray() -> None:
    """Join the Ray cluster of RAY_ADDRESS (a Ray job's own) or start a local one, passing the CPU platform and the
    variables a worker needs on every node."""
    if ray.is_initialized():
        return
    env = {"VERL_PLATFORM": "cpu"} if use_cpu_platform() else {}
    for key in ("HF_HUB_OFFLINE", "WANDB_MODE", "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS"):
        if key in os.environ:
            env[key] = os.environ[key]
    ray.init(runtime_env={"env_vars": env} if env else None)


class DFTRaySFTTrainer(LossFamilyMixin, DataOrderMixin, RaySFTTrainer):
    """verl's Ray SFT trainer with the dft_verl loss family (``loss.type``)."""

    def _build_engine(self):
        self.loss_fn = make_loss_fn(self.loss_config, kl_anchor_reference(self.config, self.loss_config))
        self.training_client = training_client(ray_training_group(self, self.loss_fn), self.loss_config)


def run_sft_ray(config) -> None:
    connect_ray()
    trainer = DFTRaySFTTrainer(config=config)
    trainer.fit()


@hydra.main(config_path="../config", config_name="dft_sft", version_base=None)
def main(config) -> None:
    check_loss_setup(config)
    select_platform(config)
    run_sft_ray(config)


if __name__ == "__main__":
    main()
