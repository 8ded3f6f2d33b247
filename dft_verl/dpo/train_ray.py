"""DPO on verl's Ray SFT trainer: the DPO row on a Ray cluster, ranks placed by Ray on every node.

    python -m dft_verl.dpo.train_ray trainer.nnodes=2 trainer.n_gpus_per_node=8 \
        data.train_files=pairs_ref.parquet model.path=Qwen/Qwen2.5-Math-1.5B dpo.beta=0.1

Same config (``dpo``), loss, pair batching and checks as ``dft_verl.dpo.train`` (torchrun); the driver is
``verl.trainer.sft_trainer_ray``'s, with one ``TrainingWorker`` per rank (``dft_verl.trainer.sft_ray``'s group).
verl's Ray trainer reorders each batch's sequences by length across ranks when ``trainer.balance_batch`` is on,
which would split pairs: ``dpo.yaml`` turns it off and this trainer refuses it.
"""

from __future__ import annotations

import hydra
from verl.trainer.sft_trainer_ray import SFTTrainer as RaySFTTrainer

from dft_verl.dpo.data import check_dpo_files
from dft_verl.dpo.loss import DPOConfig, make_dpo_loss_fn
from dft_verl.dpo.train import DPOMixin, check_dpo_data_config
from dft_verl.trainer.sft import DataOrderMixin, select_platform
from dft_verl.trainer.sft_ray import connect_ray, ray_training_group


def check_ray_dpo_config(config) -> None:
    """Settings of verl's Ray trainer that would break pairs, refused with the key to change."""
    if config.trainer.get("balance_batch", False):
        raise ValueError("trainer.balance_batch=True reorders sequences across ranks and splits DPO pairs: set "
                         "trainer.balance_batch=False")


class DPORayTrainer(DPOMixin, DataOrderMixin, RaySFTTrainer):
    """verl's Ray SFT trainer optimising the DPO loss on preference pairs."""

    def data_parallel_size(self) -> int:
        world = int(self.config.trainer.nnodes) * int(self.config.trainer.n_gpus_per_node)
        return world // int(self.config.engine.get("ulysses_sequence_parallel_size", 1) or 1)

    def _build_engine(self):
        self.loss_fn = make_dpo_loss_fn(self.dpo_config)
        self.training_client = self.dpo_client(ray_training_group(self, self.loss_fn))


@hydra.main(config_path="../config", config_name="dpo", version_base=None)
def main(config) -> None:
    # fail before any worker starts
    DPOConfig.from_config(config.get("dpo"))
    check_dpo_data_config(config.data)
    check_ray_dpo_config(config)
    check_dpo_files(config.data.train_files, need_ref=True)
    if config.data.val_files:
        check_dpo_files(config.data.val_files, need_ref=True)
    select_platform(config)
    connect_ray()
    DPORayTrainer(config=config).fit()


if __name__ == "__main__":
    main()
