"""DPO training on verl's engine SFT trainer (torchrun, FSDP engine): no second framework.

    torchrun --standalone --nproc_per_node=8 -m dft_verl.dpo.train \
        data.train_files=pairs_ref.parquet model.path=Qwen/Qwen2.5-Math-1.5B dpo.beta=0.1

``pairs_ref.parquet`` is the pipeline's DPO parquet with reference log-probs added by
``python -m dft_verl.dpo.ref_logprobs`` (reference = the initial policy, computed once and stored;
no reference model is held during training). Config: ``dft_verl/config/dpo.yaml`` = verl's
``sft_trainer_engine`` + a ``dpo:`` block, the paper's DPO optimiser settings, and
``DPOPairDataset`` as ``data.custom_cls``. ``data.train_batch_size`` and
``data.micro_batch_size_per_gpu`` count PAIRS (two sequences each).

What this adds to verl's ``SFTTrainer``: the DPO loss (``set_loss_fn``), the pair collator on its
data loaders, ``force_group_size=2`` on every batch (whole pairs per micro-batch; see
``dft_verl.dpo.data``), and per-step metric reduction. ``trainer.device=cpu`` selects this
package's CPU platform.
"""

from __future__ import annotations

import hydra
from verl.trainer.sft_trainer import SFTTrainer

from dft_verl.dpo.data import DPODataError, DPOPairDataset, PairCollator, check_dpo_files, mark_pair_groups
from dft_verl.dpo.loss import DPOConfig, make_dpo_loss_fn
from dft_verl.trainer.metrics import ReducingClient
from dft_verl.trainer.sft import DataOrderMixin, select_platform


class PairGroupingClient:
    """Proxy over verl's ``TrainingWorker``: each batch is checked and marked by ``mark_pair_groups``
    before ``train_batch``/``infer_batch``; everything else passes through."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    def train_batch(self, data):
        return self._client.train_batch(mark_pair_groups(data))

    def infer_batch(self, data):
        return self._client.infer_batch(mark_pair_groups(data))


def check_dpo_data_config(data_config, dp_size: int | None = None) -> None:
    """Reject settings the pair batching cannot honour, naming the key."""
    if data_config.pad_mode != "no_padding":
        raise ValueError(f"DPO supports data.pad_mode=no_padding only, got {data_config.pad_mode!r}")
    if dp_size:
        pairs_per_rank, rem = divmod(int(data_config.train_batch_size), dp_size)
        if rem or pairs_per_rank == 0:
            raise ValueError(f"data.train_batch_size={data_config.train_batch_size} pairs must be a positive "
                             f"multiple of the {dp_size} data-parallel ranks")
        if not data_config.use_dynamic_bsz and pairs_per_rank % int(data_config.micro_batch_size_per_gpu):
            raise ValueError(f"{pairs_per_rank} pairs per rank (data.train_batch_size / dp) must be a multiple of "
                             f"data.micro_batch_size_per_gpu={data_config.micro_batch_size_per_gpu} (pairs)")


class DPOMixin:
    """What DPO adds to either of verl's SFT trainers (torchrun ``sft_trainer``, Ray ``sft_trainer_ray``): the
    ``dpo:`` block, the pair dataset check, the pair collator on the data loaders and the DPO loss behind a client
    that marks whole pairs per micro-batch and reduces the metrics. ``data_parallel_size()`` is the trainer's."""

    def _build_config(self):
        self.dpo_config = DPOConfig.from_config(self.config.get("dpo"))
        check_dpo_data_config(self.config.data)
        super()._build_config()

    def _build_dataset(self):
        super()._build_dataset()
        for name, dataset in (("train", self.train_dataset), ("val", self.val_dataset)):
            if dataset is not None and not isinstance(dataset, DPOPairDataset):
                raise DPODataError(f"the {name} dataset is {type(dataset).__name__}; DPO needs "
                                   f"data.custom_cls.path=pkg://dft_verl.dpo.data data.custom_cls.name=DPOPairDataset "
                                   f"(or a subclass)")

    def _build_dataloader(self):
        check_dpo_data_config(self.config.data, self.data_parallel_size())
        super()._build_dataloader()
        # verl's loaders batch dataset items (pairs); the pair collator expands them to sequences.
        self.collate_fn = PairCollator(self.config.data.pad_mode)
        self.train_dataloader.collate_fn = self.collate_fn
        if self.val_dataloader is not None:
            self.val_dataloader.collate_fn = self.collate_fn

    @staticmethod
    def dpo_client(client):
        """verl's training client (one worker or a Ray worker group, the DPO loss installed) for DPO batches."""
        return ReducingClient(PairGroupingClient(client))


class DPOTrainer(DPOMixin, DataOrderMixin, SFTTrainer):
    """verl's engine SFT trainer (torchrun) optimising the DPO loss on preference pairs."""

    def data_parallel_size(self) -> int:
        return self.engine.get_data_parallel_size()

    def _build_engine(self):
        super()._build_engine()
        self.loss_fn = make_dpo_loss_fn(self.dpo_config)
        self.training_client.set_loss_fn(loss_fn=self.loss_fn)
        self.training_client = self.dpo_client(self.training_client)


def run_dpo(config) -> None:
    from verl.utils.distributed import destroy_global_process_group

    from dft_verl.platform import init_distributed

    init_distributed()
    trainer = DPOTrainer(config=config)
    trainer.fit()
    destroy_global_process_group()


@hydra.main(config_path="../config", config_name="dpo", version_base=None)
def main(config) -> None:
    # fail before any process group starts
    DPOConfig.from_config(config.get("dpo"))
    check_dpo_data_config(config.data)
    check_dpo_files(config.data.train_files, need_ref=True)
    if config.data.val_files:
        check_dpo_files(config.data.val_files, need_ref=True)
    select_platform(config)
    run_dpo(config)


if __name__ == "__main__":
    main()
