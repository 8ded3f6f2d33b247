"""DPO pairs as training batches for verl's engine trainer: checks, dataset, collator, micro-batch groups.

Input: the pipeline's DPO parquet, one row per pair: ``prompt`` (list of ``{role, content}``
messages, no trailing assistant turn), ``chosen`` and ``rejected`` (non-empty response strings),
plus ``index`` and ``data_source``. For training it also carries the reference policy's
response-summed log-probs ``ref_chosen_logp``/``ref_rejected_logp`` (nats) and the response token
counts they were summed over, ``ref_chosen_tokens``/``ref_rejected_tokens``, written by
``python -m dft_verl.dpo.ref_logprobs`` with this dataset's own tokenisation.

How each pair's two sequences stay in one micro-batch (the DPO loss needs both):

1. Dataset: one item = one pair (``DPOPairDataset``). verl's trainer shuffles ITEMS with its
   ``DistributedSampler`` and batches ``data.train_batch_size / dp`` items per rank, so sampling,
   sharding and the batch size all count pairs and never separate a pair's sequences.
2. Collator: ``PairCollator`` (installed in place of verl's ``SFTTensorCollator`` by the trainer)
   emits the sequences interleaved, ``[c_0, r_0, c_1, r_1, ...]``, as verl's ``no_padding`` batch
   plus dense per-sequence ``pair_index``, ``is_chosen`` and ``ref_logp``.
3. Micro-batches: ``mark_pair_groups`` sets verl's ``force_group_size=2`` on the batch. verl's
   ``prepare_micro_batches`` then either cuts ``2 * micro_batch_size_per_gpu`` consecutive rows per
   micro-batch (``use_dynamic_bsz=False``; so ``data.micro_batch_size_per_gpu`` counts PAIRS) or
   balances token counts over atomic groups of 2 consecutive rows (``use_dynamic_bsz=True``). Both
   keep rows 2k and 2k+1, one pair, together. The loss re-checks it (``pair_sequence_logps``).

Every data error names the file, the row and the field.
"""

from __future__ import annotations

import os

import pandas as pd
import torch
from verl.utils.dataset.dataset_utils import SFTTensorCollator
from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset
from verl.utils.py_functional import convert_nested_value_to_list_recursive
from verl.utils.tokenizer.chat_template import extract_system_prompt_and_generation

PROMPT_KEY, CHOSEN_KEY, REJECTED_KEY = "prompt", "chosen", "rejected"
RESPONSE_KEYS = (CHOSEN_KEY, REJECTED_KEY)
REF_LOGP_KEYS = {CHOSEN_KEY: "ref_chosen_logp", REJECTED_KEY: "ref_rejected_logp"}
REF_TOKENS_KEYS = {CHOSEN_KEY: "ref_chosen_tokens", REJECTED_KEY: "ref_rejected_tokens"}
REF_KEYS = (*REF_LOGP_KEYS.values(), *REF_TOKENS_KEYS.values())
PAIR_GROUP_SIZE = 2


class DPODataError(ValueError):
    """A malformed DPO parquet file or pair; the message names file, row and field."""


def _as_list(paths) -> list[str]:
    if isinstance(paths, str):
        return [paths]
    return [str(p) for p in paths]


def read_dpo_file(path: str, need_ref: bool) -> pd.DataFrame:
    """Read and validate one DPO parquet file (see module docstring); returns its rows as read."""
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise DPODataError(f"{path}: DPO data file not found")
    frame = pd.read_parquet(path)
    required = [PROMPT_KEY, CHOSEN_KEY, REJECTED_KEY] + (list(REF_KEYS) if need_ref else [])
    missing = [c for c in required if c not in frame.columns]
    if missing:
        hint = (
            f"; add the reference columns with `python -m dft_verl.dpo.ref_logprobs --data {path} ...`"
            if set(missing) <= set(REF_KEYS) else ""
        )
        raise DPODataError(f"{path}: missing column(s) {missing}; columns are {list(frame.columns)}{hint}")
    for row, (prompt, chosen, rejected) in enumerate(zip(frame[PROMPT_KEY], frame[CHOSEN_KEY], frame[REJECTED_KEY])):
        _check_prompt(path, row, convert_nested_value_to_list_recursive(prompt))
        for key, text in ((CHOSEN_KEY, chosen), (REJECTED_KEY, rejected)):
            if not isinstance(text, str) or not text.strip():
                raise DPODataError(f"{path}: row {row}: field '{key}': expected a non-empty response string, "
                                   f"got {text!r:.80}")
    if need_ref:
        for key in REF_KEYS:
            bad = frame[key].isna()
            if bad.any():
                row = int(bad.to_numpy().nonzero()[0][0])
                raise DPODataError(f"{path}: row {row}: field '{key}': missing value")
    return frame


def _check_prompt(path: str, row: int, prompt) -> None:
    where = f"{path}: row {row}: field '{PROMPT_KEY}'"
    if not isinstance(prompt, list) or not prompt:
        raise DPODataError(f"{where}: expected a non-empty list of {{role, content}} messages, got {prompt!r:.80}")
    for i, msg in enumerate(prompt):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(msg.get("content"), str):
            raise DPODataError(f"{where}[{i}]: expected a dict with string 'role' and 'content', got {msg!r:.80}")
    if prompt[-1]["role"] == "assistant":
        raise DPODataError(f"{where}: the last prompt message is an assistant turn; the response must follow a "
                           f"user turn")


def check_dpo_files(paths, need_ref: bool = False) -> int:
    """Validate DPO parquet files before training; returns the number of pairs."""
    return sum(len(read_dpo_file(p, need_ref)) for p in _as_list(paths))


class DPOPairDataset(MultiTurnSFTDataset):
    """verl's ``MultiTurnSFTDataset`` over DPO pairs: item p = pair p of the concatenated files.

    Each response is tokenised exactly as verl tokenises an SFT conversation ``prompt + [assistant:
    response]`` (same chat template, per-turn sanity check, ``data.max_length``/``data.truncation``);
    the loss mask covers the final assistant turn only (earlier assistant turns in a multi-turn
    prompt are context). Only ``data.pad_mode=no_padding``. ``data.train_max_samples`` keeps the
    first N pairs.

    ``require_ref`` (default, for training): the files must carry the reference columns, and each
    item checks that its response token counts equal the ones the reference was summed over
    (a different tokenizer, max_length or truncation would misalign them).
    Select with ``data.custom_cls.path=pkg://dft_verl.dpo.data data.custom_cls.name=DPOPairDataset``.
    """

    def __init__(self, parquet_files, tokenizer, config, processor=None, max_samples: int = -1,
                 require_ref: bool = True):
        pad_mode = (config or {}).get("pad_mode", "right")
        if pad_mode != "no_padding":
            raise DPODataError(f"DPO supports data.pad_mode=no_padding only, got {pad_mode!r}")
        self.require_ref = require_ref
        super().__init__(parquet_files, tokenizer, config, processor=processor, max_samples=max_samples)

    def _read_files_and_process(self):
        frames, origin = [], []
        for path in self.parquet_files:
            frame = read_dpo_file(path, self.require_ref)
            frames.append(frame)
            origin += [(path, row) for row in range(len(frame))]
        pairs = pd.concat(frames, ignore_index=True)
        if 0 < self.max_samples < len(pairs):
            pairs, origin = pairs.iloc[: self.max_samples].reset_index(drop=True), origin[: self.max_samples]
        self.pairs, self.origin = pairs, origin
        print(f"DPO dataset: {len(pairs)} pairs")

        # The parent tokenises by row of self.dataframe: rows 2p and 2p+1 are pair p's two conversations.
        self.prompts = [convert_nested_value_to_list_recursive(p) for p in pairs[PROMPT_KEY]]
        messages = []
        for prompt, chosen, rejected in zip(self.prompts, pairs[CHOSEN_KEY], pairs[REJECTED_KEY]):
            for response in (chosen, rejected):
                messages.append([*prompt, {"role": "assistant", "content": response}])
        self.dataframe = pd.DataFrame({self.messages_key: messages})
        self.messages = messages
        self.tools = None
        self.enable_thinking = None
        self.system_prompt, self.generation_prompt = extract_system_prompt_and_generation(
            self.tokenizer, **self.apply_chat_template_kwargs
        )

    def __len__(self):
        return len(self.pairs)

    def _prompt_length(self, prompt: list[dict]) -> int:
        """Tokens before the final response, counted the way the parent concatenates turns."""
        return sum(
            len(self._process_single_message(index=i, message=m, full_message=prompt)[0]) for i, m in enumerate(prompt)
        )

    def sequence(self, item: int, key: str) -> dict:
        """Tokenised ``prompt + key`` of pair ``item``: verl's no_padding dict (input_ids, position_ids, loss_mask)."""
        path, row = self.origin[item]
        where = f"{path}: row {row}: field '{key}'"
        try:
            res = super().__getitem__(2 * item + RESPONSE_KEYS.index(key))
        except (ValueError, AssertionError) as e:
            raise DPODataError(f"{where}: {e}") from e
        prompt = self.prompts[item]
        if any(m["role"] == "assistant" for m in prompt):
            res["loss_mask"][: self._prompt_length(prompt)] = 0
        n_tokens = int(res["loss_mask"].sum())
        if n_tokens == 0:
            raise DPODataError(f"{where}: the response has no tokens left (data.max_length={self.max_length}, "
                               f"data.truncation={self.truncation!r}); drop the row or raise max_length")
        if self.require_ref:
            expected = int(self.pairs[REF_TOKENS_KEYS[key]].iloc[item])
            if expected != n_tokens:
                raise DPODataError(
                    f"{where}: {n_tokens} response tokens, but '{REF_LOGP_KEYS[key]}' was summed over {expected}: "
                    f"recompute it with dft_verl.dpo.ref_logprobs using this tokenizer, max_length and truncation"
                )
            res["ref_logp"] = float(self.pairs[REF_LOGP_KEYS[key]].iloc[item])
        return res

    def __getitem__(self, item):
        return {"pair_index": item, **{key: self.sequence(item, key) for key in RESPONSE_KEYS}}


class PairCollator:
    """Collate pair items into verl's ``no_padding`` batch of 2B sequences ``[c_0, r_0, c_1, r_1, ...]``
    (verl's ``SFTTensorCollator`` on the sequences) plus dense (2B,) ``pair_index`` (int64),
    ``is_chosen`` (bool) and, when the items carry them, ``ref_logp`` (float64, nats)."""

    def __init__(self, pad_mode="no_padding"):
        self.sequences = SFTTensorCollator(pad_mode)

    def __call__(self, items: list[dict]) -> dict:
        seqs, pair_index, is_chosen, ref = [], [], [], []
        for item in items:
            for key in RESPONSE_KEYS:
                seq = dict(item[key])
                if "ref_logp" in seq:
                    ref.append(seq.pop("ref_logp"))
                seqs.append(seq)
                pair_index.append(item["pair_index"])
                is_chosen.append(key == CHOSEN_KEY)
        batch = self.sequences(seqs)
        batch["pair_index"] = torch.tensor(pair_index, dtype=torch.int64)
        batch["is_chosen"] = torch.tensor(is_chosen, dtype=torch.bool)
        if ref:
            if len(ref) != len(seqs):
                raise DPODataError("some pairs carry reference log-probs and some do not")
            batch["ref_logp"] = torch.tensor(ref, dtype=torch.float64)
        return batch


def mark_pair_groups(data):
    """Check a collated TensorDict is laid out as ``[c_0, r_0, c_1, r_1, ...]`` and set verl's
    ``force_group_size=2`` so ``prepare_micro_batches`` never separates rows 2k and 2k+1. Returns ``data``."""
    from verl.utils import tensordict_utils as tu

    for key in ("pair_index", "is_chosen"):
        if key not in data.keys():
            raise KeyError(f"DPO batch has no '{key}': batches must come from dft_verl.dpo.data.PairCollator")
    is_chosen, pair_index = data["is_chosen"].bool(), data["pair_index"]
    n = is_chosen.shape[0]
    if n % PAIR_GROUP_SIZE or not (is_chosen[0::2].all() and not is_chosen[1::2].any()) or not torch.equal(
        pair_index[0::2], pair_index[1::2]
    ):
        raise ValueError("DPO batch is not laid out as [chosen_0, rejected_0, chosen_1, rejected_1, ...]")
    tu.assign_non_tensor(data, force_group_size=PAIR_GROUP_SIZE)
    return data
