"""The frozen reference model of the KL anchor (``loss.type=asft`` or ``loss.kl_anchor_coef > 0``).

How the reference distribution reaches the loss inside verl's engine:
- verl's FSDP engine hands the loss only ``log_probs`` of the target tokens, except when the
  ``distillation_use_topk`` meta flag is set: then it first calls the loss function as its
  logits processor with the full ``student_logits`` (the seam verl's top-K distillation uses).
  ``LogitsClient`` sets that flag on every batch; ``dft_verl.losses.make_loss_fn`` answers the
  logits-processor call with the per-token KL.
- ``FrozenReference`` is the starting model (``loss.kl_anchor_model``, default ``model.path``),
  loaded lazily on the first micro-batch in the process that runs the loss (the torchrun rank or
  the Ray worker), frozen, in the actor's compute dtype, and run with ``torch.no_grad`` on the same
  padded micro-batch. It is a full, unsharded copy per rank: +2 bytes/parameter per GPU in bf16
  (3.1 GB for a 1.5B model) plus one ``[tokens x vocab]`` reference-logits tensor per micro-batch.
  Nothing of it exists when the anchor is off (lambda = 0), so other losses pay nothing.
"""

from __future__ import annotations

import torch
from verl.utils import tensordict_utils as tu
from verl.utils.torch_dtypes import PrecisionType

from dft_verl.trainer.metrics import ReducingClient



class FrozenReference:
    """``reference(data) -> (T, V)`` logits of a frozen causal LM for the packed tokens of a verl
    no-padding micro-batch (``data["input_ids"]``, ``data["position_ids"]``: jagged (bsz, j)),
    row order = ``input_ids.values()``, the order of the engine's ``logits_rmpad``."""

    def __init__(self, model_path: str, dtype: str = "bf16", trust_remote_code: bool = False):
        try:
            PrecisionType.to_dtype(dtype)
        except RuntimeError:
            raise ValueError(f"reference dtype {dtype!r} is not supported; use fp32, bf16 or fp16") from None
        self.model_path = model_path
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self._model = None

    def __getstate__(self):  # shipped to Ray workers unloaded
        return {**self.__dict__, "_model": None}

    def _load(self, device):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            self.model_path, dtype=PrecisionType.to_dtype(self.dtype), trust_remote_code=self.trust_remote_code
        )
        model.requires_grad_(False)
        self._model = model.eval().to(device)

    @torch.no_grad()
    def __call__(self, data) -> torch.Tensor:
        input_ids = data["input_ids"]
        if self._model is None:
            self._load(input_ids.device)
        lengths = input_ids.offsets().diff()
        bsz, max_len = lengths.numel(), int(lengths.max())
        ids = torch.nested.to_padded_tensor(input_ids, padding=0, output_size=(bsz, max_len))
        positions = data["position_ids"]
        if positions.dim() != 2:
            raise ValueError("the KL anchor supports text models with (bsz, seq) position ids only")
        positions = torch.nested.to_padded_tensor(positions, padding=0, output_size=(bsz, max_len))
        valid = torch.arange(max_len, device=ids.device) < lengths.to(ids.device).unsqueeze(1)
        logits = self._model(input_ids=ids, attention_mask=valid.long(), position_ids=positions, use_cache=False).logits
        return logits[valid]


class LogitsClient(ReducingClient):
    """The training client with verl's ``distillation_use_topk`` flag set on every batch, so the FSDP
    engine passes the full logits to the loss (see the module docstring): the KL anchor and eaft's entropy.
    verl 0.9.1 seam: the flag is read in ``FSDPEngineWithLMHead.prepare_model_outputs``;
    tests/test_trainer_torchrun.py fails if the KL or the entropy stops arriving."""

    def _call(self, name, data):
        tu.assign_non_tensor(data, distillation_use_topk=True)
        return super()._call(name, data)
