"""SFT parquet checks and the dataset that carries reference log-probs for iw-SFT.

An SFT parquet (verl's ``MultiTurnSFTDataset`` format) has a ``messages`` column (name set by
``data.messages_key``): a list of ``{"role", "content"}`` dicts with at least one non-empty
assistant turn, which is what the loss is computed on. ``check_sft_files`` fails fast, before any
process group or model is built, naming the file, row and field of the first bad row.
"""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import torch
from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

REF_LOGPROBS_KEY = "ref_log_probs"


class SFTDataError(ValueError):
    """A malformed SFT parquet file; the message names file, row and field."""


def _as_list(paths) -> list[str]:
    if isinstance(paths, str):
        return [paths]
    return [str(p) for p in paths]


def check_sft_files(paths, data_config=None, need_ref: bool = False) -> int:
    """Validate SFT parquet files; return the number of rows checked.

    Raises SFTDataError for a missing file, a missing ``messages`` (or ``ref_log_probs`` when
    ``need_ref``) column, or a row whose messages are not a list of role/content dicts or have no
    non-empty assistant turn.
    """
    key = data_config.get("messages_key", "messages") if data_config is not None else "messages"
    total = 0
    for path in _as_list(paths):
        path = os.path.expanduser(path)
        if not os.path.exists(path):
            raise SFTDataError(f"{path}: SFT data file not found")
        table = pq.read_table(path)
        if key not in table.column_names:
            raise SFTDataError(
                f"{path}: missing column '{key}' (data.messages_key); columns are {table.column_names}"
            )
        if need_ref and REF_LOGPROBS_KEY not in table.column_names:
            raise SFTDataError(
                f"{path}: loss.type=iw_sft needs column '{REF_LOGPROBS_KEY}'; "
                f"add it with `python -m dft_verl.trainer.ref_logprobs --data {path} ...`"
            )
        for row, messages in enumerate(table.column(key).to_pylist()):
            _check_messages(path, row, key, messages)
        total += table.num_rows
    return total


def _check_messages(path: str, row: int, key: str, messages) -> None:
    where = f"{path}: row {row}: field '{key}'"
    if not isinstance(messages, list) or not messages:
        raise SFTDataError(f"{where}: expected a non-empty list of {{role, content}} messages, got {messages!r:.80}")
    has_target = False
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise SFTDataError(f"{where}[{i}]: expected a dict with 'role' and 'content', got {msg!r:.80}")
        if msg["role"] == "assistant" and isinstance(msg["content"], str) and msg["content"].strip():
            has_target = True
    if not has_target:
        raise SFTDataError(f"{where}: no non-empty assistant message, so the response (loss) mask would be empty")


class RefLogProbSFTDataset(MultiTurnSFTDataset):
    """``MultiTurnSFTDataset`` that also returns ``ref_log_probs`` for iw-SFT.

    The parquet column ``ref_log_probs`` holds, per row, a list aligned with the tokenised
    ``input_ids``: entry t is ``log pi_ref(input_ids[t] | input_ids[:t])`` (entry 0 is 0.0). It is
    written by ``dft_verl.trainer.ref_logprobs`` with this same tokenisation. Only the
    ``no_padding`` layout is supported. Select with
    ``data.custom_cls.path=pkg://dft_verl.data data.custom_cls.name=RefLogProbSFTDataset``.
    """

    def __getitem__(self, item):
        res = super().__getitem__(item)
        ref = self.dataframe.iloc[item][REF_LOGPROBS_KEY]
        n = res["input_ids"].shape[0]
        if ref is None or len(ref) < n:
            raise SFTDataError(
                f"row {item}: field '{REF_LOGPROBS_KEY}' has {0 if ref is None else len(ref)} entries, "
                f"input_ids has {n}: recompute it with dft_verl.trainer.ref_logprobs for this tokenizer"
            )
        res[REF_LOGPROBS_KEY] = torch.tensor(list(ref)[:n], dtype=torch.float32)
        return res
