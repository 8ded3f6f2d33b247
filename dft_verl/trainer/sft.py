"""SFT/DFT training on verl's engine SFT trainer (torchrun, FSDP engine).

    torchrun --standalone --nproc_per_node=8 -m dft_verl.trainer.sft \
        data.train_files=train.parquet model.path=Qwen/Qwen2.5-Math-1.5B loss.type=dft

Config: ``dft_verl/config/dft_sft.yaml`` = verl's ``sft_trainer_engine`` + a ``loss:`` block. The
only behaviour added to verl's ``SFTTrainer`` is the loss (installed with ``set_loss_fn``), input
checks on the SFT parquet files, start-up checks of the loss against the model/engine/data config
(``check_loss_setup``), the frozen reference of the KL anchor when one is asked for
(``dft_verl.trainer.kl_anchor``), per-step reduction of the loss's metrics before logging, and ``trainer.seed``
reaching the data order and a resumed run continuing it (``DataOrderMixin``).
``trainer.device=cpu`` selects this package's CPU platform (see ``dft_verl.platform.cpu``).
"""

from __future__ import annotations

import os

import hydra
from omegaconf import open_dict
from verl.trainer.sft_trainer import SFTTrainer

from dft_verl.data import check_sft_files
from dft_verl.losses import LossConfig, make_loss_fn
from dft_verl.trainer.kl_anchor import FrozenReference, LogitsClient
from dft_verl.trainer.metrics import ReducingClient


def select_platform(config) -> None:
    """Honour ``trainer.device=cpu`` by selecting the CPU platform before verl resolves devices."""
    if str(config.trainer.device).lower() == "cpu":
        from verl.plugin.platform import set_platform

        from dft_verl.platform.cpu import PlatformCPU

        os.environ["VERL_PLATFORM"] = "cpu"
        set_platform(PlatformCPU())
    else:
        from verl.utils.device import auto_set_device

        auto_set_device(config)


def use_reference_dataset(data_config) -> None:
    """iw-SFT reads per-token reference log-probs: select the dataset that carries them."""
    if data_config.pad_mode != "no_padding":
        raise ValueError(f"loss.type=iw_sft supports data.pad_mode=no_padding only, got {data_config.pad_mode!r}")
    if data_config.custom_cls.get("path") is None:
        with open_dict(data_config):
            data_config.custom_cls.path = "pkg://dft_verl.data"
            data_config.custom_cls.name = "RefLogProbSFTDataset"


def check_loss_setup(config) -> LossConfig:
    """Parse the ``loss:`` block and reject combinations that cannot run, before any process group starts.

    - fused kernels (``model.use_fused_kernels=True``) give the loss log-probs only: every weighting
      works except eaft, the KL anchor (which needs logits) does not; and under FSDP2 verl 0.9.1 shards an untied
      ``lm_head`` on its own, which its fused forward then multiplies as a DTensor with a plain
      tensor (``mixed torch.Tensor and DTensor``): refused for untied embeddings.
    - the KL anchor runs the reference on whole sequences: no Ulysses sequence parallelism.
    - ``normalization=micro_batch`` needs a known micro-batch count: no dynamic batch size.
    - the logits reach the loss (KL anchor, eaft) in verl 0.9.1's no-padding layout only.
    """
    loss = LossConfig.from_config(config.get("loss"))
    model, engine = config.model, config.get("engine", {})
    if model.get("use_fused_kernels", False):
        if loss.needs_logits:
            raise ValueError(
                "the KL anchor (loss.type=asft / loss.kl_anchor_coef > 0) and loss.type=eaft need the full logits, "
                "which model.use_fused_kernels=True never materialises: set model.use_fused_kernels=False"
            )
        from transformers import AutoConfig

        hf = AutoConfig.from_pretrained(model.path, trust_remote_code=model.get("trust_remote_code", False))
        tied = getattr(hf.get_text_config(), "tie_word_embeddings", getattr(hf, "tie_word_embeddings", False))
        if not tied and engine.get("strategy", "fsdp") == "fsdp2":
            raise ValueError(
                f"model.use_fused_kernels=True needs tied input/output embeddings under engine.strategy=fsdp2: "
                f"{model.path} has tie_word_embeddings=False, and verl 0.9.1 shards its lm_head separately, so the "
                "fused forward fails with 'mixed torch.Tensor and DTensor'. Set model.use_fused_kernels=False"
            )
    if loss.uses_kl_anchor and int(engine.get("ulysses_sequence_parallel_size", 1) or 1) > 1:
        raise ValueError("the KL anchor does not support engine.ulysses_sequence_parallel_size > 1")
    if loss.needs_logits and config.data.get("pad_mode", "no_padding") != "no_padding":
        raise ValueError(f"loss.type={loss.type} reads the logits, which verl 0.9.1 passes to the loss with "
                         f"data.pad_mode=no_padding only; got {config.data.get('pad_mode')!r}")
    if loss.normalization == "micro_batch" and config.data.get("use_dynamic_bsz", False):
        raise ValueError("loss.normalization=micro_batch needs data.use_dynamic_bsz=False (fixed micro-batches)")
    return loss


def kl_anchor_reference(config, loss: LossConfig) -> FrozenReference | None:
    """The frozen starting model of the KL anchor, in the actor's compute dtype; None without an anchor."""
    if not loss.uses_kl_anchor:
        return None
    precision = config.engine.get("mixed_precision", None) or {}
    return FrozenReference(
        loss.kl_anchor_model or config.model.path,
        dtype=str(precision.get("param_dtype", "bf16")),
        trust_remote_code=config.model.get("trust_remote_code", False),
    )


def training_client(client, loss: LossConfig):
    """verl's client wrapped for scalar metrics, and for logits reaching the loss (KL anchor, eaft)."""
    return LogitsClient(client) if loss.needs_logits else ReducingClient(client)


class DataOrderMixin:
    """The order of the training data: ``trainer.seed`` chooses it, and a run resumed from a checkpoint continues it.

    - verl 0.9.1's SFT trainers (torchrun and Ray) build their ``DistributedSampler(shuffle=True)`` without a seed, so
      every ``trainer.seed`` shuffled alike (the sampler's default seed 0) and repeated runs with other seeds were the
      same run.
    - A checkpoint saved after an epoch's last batch stores the data loader mid-iteration with nothing left to yield.
      verl resumes at epoch ``step // steps_per_epoch`` (the next one) and restores that state, so the resumed epoch
      yields no batch and the run ends one epoch short (measured: 8 of 10 steps after a resume at step 2 with 2 steps
      per epoch). Such a state is dropped: the next epoch starts afresh (its order from ``set_epoch``).

    Semi-private seams: ``_build_dataloader``, ``train_sampler``, ``resume_global_step``, ``steps_per_epoch`` and the
    ``StatefulDataLoader``'s ``next_iter_state`` (tests/test_demo_e2e.py checks that two seeds train different
    weights; tests/test_recipes_ray.py that a resumed row reaches a clean run's step count)."""

    def __init__(self, config):
        super().__init__(config)
        step = int(self.resume_global_step or 0)
        if step and step % self.steps_per_epoch == 0:
            self.train_dataloader.next_iter_state = None

    def _build_dataloader(self):
        super()._build_dataloader()
        self.train_sampler.seed = int(self.config.trainer.seed)


class LossFamilyMixin:
    """Reads the ``loss:`` block and checks the SFT files; shared by the torchrun and Ray trainers."""

    def _build_config(self):
        self.loss_config = check_loss_setup(self.config)
        super()._build_config()

    def _build_dataset(self):
        need_ref = self.loss_config.type == "iw_sft"
        check_sft_files(self.config.data.train_files, self.config.data, need_ref=need_ref)
        if self.config.data.val_files:
            check_sft_files(self.config.data.val_files, self.config.data, need_ref=need_ref)
        if need_ref:
            use_reference_dataset(self.config.data)
        super()._build_dataset()


class DFTSFTTrainer(LossFamilyMixin, DataOrderMixin, SFTTrainer):
    """verl's SFT trainer with the dft_verl loss family (``loss.type``)."""

    def _build_engine(self):
        super()._build_engine()
        self.loss_fn = make_loss_fn(self.loss_config, kl_anchor_reference(self.config, self.loss_config))
        self.training_client.set_loss_fn(loss_fn=self.loss_fn)
        self.training_client = training_client(self.training_client, self.loss_config)


def run_sft(config) -> None:
    from verl.utils.distributed import destroy_global_process_group

    from dft_verl.platform import init_distributed

    init_distributed()
    trainer = DFTSFTTrainer(config=config)
    trainer.fit()
    destroy_global_process_group()


@hydra.main(config_path="../config", config_name="dft_sft", version_base=None)
def main(config) -> None:
    check_loss_setup(config)  # fail before any process group starts
    select_platform(config)
    run_sft(config)


if __name__ == "__main__":
    main()
