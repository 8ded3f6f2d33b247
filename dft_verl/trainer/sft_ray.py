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
from dft_verl.platform.cpu import use_cpu_platform
from dft_verl.platform.workers import GlooReadyTrainingWorker
from dft_verl.trainer.sft import (
    LossFamilyMixin, SeededShuffleMixin, check_loss_setup, kl_anchor_reference, select_platform, training_client,
)


class DFTRaySFTTrainer(LossFamilyMixin, SeededShuffleMixin, RaySFTTrainer):
    """verl's Ray SFT trainer with the dft_verl loss family (``loss.type``)."""

    def _build_engine(self):
        from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
        from verl.workers.engine_workers import TrainingWorkerConfig

        self.loss_fn = make_loss_fn(self.loss_config, kl_anchor_reference(self.config, self.loss_config))
        config = TrainingWorkerConfig(
            model_type="language_model",
            model_config=self.model_config,
            engine_config=self.engine_config,
            optimizer_config=self.optimizer_config,
            checkpoint_config=self.checkpoint_config,
            profiler_config=self.profiler_config,
        )
        self.resource_pool = RayResourcePool(
            process_on_nodes=[self.config.trainer.n_gpus_per_node] * self.config.trainer.nnodes
        )
        worker = RayClassWithInitArgs(ray.remote(GlooReadyTrainingWorker), config=config)
        group = RayWorkerGroup(
            resource_pool=self.resource_pool, ray_cls_with_init=worker, device_name=self.config.trainer.device
        )
        group.set_loss_fn(loss_fn=self.loss_fn)
        group.reset()
        self.training_client = training_client(group, self.loss_config)


def run_sft_ray(config) -> None:
    if not ray.is_initialized():
        env = {"VERL_PLATFORM": "cpu"} if use_cpu_platform() else {}
        for key in ("HF_HUB_OFFLINE", "WANDB_MODE", "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS"):
            if key in os.environ:
                env[key] = os.environ[key]
        ray.init(runtime_env={"env_vars": env} if env else None)
    trainer = DFTRaySFTTrainer(config=config)
    trainer.fit()


@hydra.main(config_path="../config", config_name="dft_sft", version_base=None)
def main(config) -> None:
    check_loss_setup(config)
    select_platform(config)
    run_sft_ray(config)


if __name__ == "__main__":
    main()
