"""SFT/DFT training on verl's engine SFT trainer (torchrun, FSDP engine).

    torchrun --standalone --nproc_per_node=8 -m dft_verl.trainer.sft \
        data.train_files=train.parquet model.path=Qwen/Qwen2.5-Math-1.5B loss.type=dft

Config: ``dft_verl/config/dft_sft.yaml`` = verl's ``sft_trainer_engine`` + a ``loss:`` block. The
only behaviour added to verl's ``SFTTrainer`` is the loss (installed with ``set_loss_fn``), input
checks on the SFT parquet files, and per-step reduction of the loss's metrics before logging.
``trainer.device=cpu`` selects this package's CPU platform (see ``dft_verl.platform.cpu``).
"""

from __future__ import annotations

import os

import hydra
from omegaconf import open_dict
from verl.trainer.sft_trainer import SFTTrainer

from dft_verl.data import check_sft_files
from dft_verl.losses import LossConfig, make_loss_fn
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


class LossFamilyMixin:
    """Reads the ``loss:`` block and checks the SFT files; shared by the torchrun and Ray trainers."""

    def _build_config(self):
        self.loss_config = LossConfig.from_config(self.config.get("loss"))
        super()._build_config()

    def _build_dataset(self):
        need_ref = self.loss_config.type == "iw_sft"
        check_sft_files(self.config.data.train_files, self.config.data, need_ref=need_ref)
        if self.config.data.val_files:
            check_sft_files(self.config.data.val_files, self.config.data, need_ref=need_ref)
        if need_ref:
            use_reference_dataset(self.config.data)
        super()._build_dataset()


class DFTSFTTrainer(LossFamilyMixin, SFTTrainer):
    """verl's SFT trainer with the dft_verl loss family (``loss.type``)."""

    def _build_engine(self):
        super()._build_engine()
        self.loss_fn = make_loss_fn(self.loss_config)
        self.training_client.set_loss_fn(loss_fn=self.loss_fn)
        self.training_client = ReducingClient(self.training_client)


def run_sft(config) -> None:
    from verl.utils.distributed import destroy_global_process_group

    from dft_verl.platform import init_distributed

    init_distributed()
    trainer = DFTSFTTrainer(config=config)
    trainer.fit()
    destroy_global_process_group()


@hydra.main(config_path="../config", config_name="dft_sft", version_base=None)
def main(config) -> None:
    LossConfig.from_config(config.get("loss"))  # fail before any process group starts
    select_platform(config)
    run_sft(config)


if __name__ == "__main__":
    main()
