"""The rows of the paper's Table 3 and the comparisons it draws: the one definition every consumer reads.

A row says what it is (label, setting, the paper's average) and how it is trained: which trainer, which config, which
pipeline output it trains on, its own overrides, and whether it needs a reference model's log-probs first. How a
trainer is launched (torchrun, verl's main_ppo, `ray job submit`) is ``dft_verl.table3.launch``'s; the sizes are
the preset's (``dft_verl.table3.settings``). Adding a row (say another loss) is one entry in ``ROWS``.
"""

from __future__ import annotations

from dataclasses import dataclass

# Pipeline outputs under DATA_DIR (python -m dft_verl.pipeline: prepare -> sample -> verify -> filter)
DATA_FILES: dict[str, str] = {
    "rl": "prepare/rl.parquet",  # questions in verl's RL format (ppo, grpo)
    "sft": "prepare/sft.parquet",  # gold worked solutions (sft, iw_sft_sft, dft_sft)
    "rft": "filter/sft.parquet",  # correct samples of the base model (rft, iw_sft_offline, dft_offline)
    "dpo": "filter/dpo.parquet",  # (correct, wrong) sample pairs of the base model (dpo)
}

TRAINERS = ("sft", "dpo", "ppo")  # dft_verl.trainer.sft(_ray), dft_verl.dpo.train, verl.trainer.main_ppo


@dataclass(frozen=True)
class Row:
    """One Table-3 row.

    key: folder name under RUNS_DIR and CKPT_DIR; method, setting: the table's label; paper_average: the paper's
    average over the five benchmarks (None: not reported). trainer: None (evaluation only), "sft" (the loss family on
    verl's engine SFT trainer), "dpo" or "ppo" (verl's main_ppo with ``config``: ppo or grpo). data: key of
    DATA_FILES. overrides: the row's own hydra overrides. ref_logprobs: "iw_sft" or "dpo" when the data first gets
    a reference policy's per-token log-probs."""

    key: str
    method: str
    setting: str
    paper_average: float | None
    trainer: str | None = None
    config: str | None = None
    data: str | None = None
    overrides: tuple[str, ...] = ()
    ref_logprobs: str | None = None

    @property
    def label(self) -> str:
        return self.method if self.setting == "—" else f"{self.method} ({self.setting})"

    @property
    def hf_subdir(self) -> str:
        """Where a checkpoint keeps the HF weights evaluation reads (verl's main_ppo nests them under actor/)."""
        return "actor/huggingface" if self.trainer == "ppo" else "huggingface"


ROWS: tuple[Row, ...] = (
    Row("base", "Base model", "—", 15.92),
    Row("sft", "SFT", "SFT data", 16.81, "sft", "dft_sft", "sft", ("loss.type=sft",)),
    Row("iw_sft_sft", "iw-SFT", "SFT data", None, "sft", "dft_sft", "sft", ("loss.type=iw_sft",), "iw_sft"),
    Row("dft_sft", "DFT", "SFT data", 30.67, "sft", "dft_sft", "sft", ("loss.type=dft",)),
    Row("dpo", "DPO", "offline RL", 23.20, "dpo", "dpo", "dpo", (), "dpo"),
    Row("rft", "RFT", "offline RL", 23.97, "sft", "dft_sft", "rft", ("loss.type=sft",)),
    Row("ppo", "PPO", "online RL", 28.66, "ppo", "ppo", "rl"),
    Row("grpo", "GRPO", "online RL", 32.00, "ppo", "grpo", "rl"),
    Row("iw_sft_offline", "iw-SFT", "offline RL", 31.86, "sft", "dft_sft", "rft", ("loss.type=iw_sft",), "iw_sft"),
    Row("dft_offline", "DFT", "offline RL", 35.43, "sft", "dft_sft", "rft", ("loss.type=dft",)),
)
ROW_KEYS: tuple[str, ...] = tuple(r.key for r in ROWS)
# Steps that are not rows: the data (before every row) and the report (after them)
STAGES: tuple[str, ...] = ("data", *ROW_KEYS, "report")

# The comparisons the paper draws (A, B): DFT on offline-RL data against each RL baseline, DFT against SFT on SFT data.
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("dft_offline", "rft"), ("dft_offline", "dpo"), ("dft_offline", "ppo"), ("dft_offline", "grpo"),
    ("dft_offline", "iw_sft_offline"), ("dft_sft", "sft"),
)


def get_row(key: str) -> Row:
    for row in ROWS:
        if row.key == key:
            return row
    raise KeyError(f"unknown Table-3 row {key!r}; rows: {', '.join(ROW_KEYS)}")
