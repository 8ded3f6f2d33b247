"""The DPO loss (Rafailov et al., 2023) for verl's engine trainer, with precomputed reference log-probs.

Per pair k = (prompt x, chosen y_c, rejected y_r), log-probs in nats summed over RESPONSE tokens only
(the loss mask: the assistant turn after the generation prompt, end-of-turn token included):

    pi_c  = sum_{t in y_c} log pi_theta(y_t | x, y_<t)        pi_r likewise for y_r
    ref_c, ref_r                                              the same sums under the frozen reference
                                                              policy (``dft_verl.dpo.ref_logprobs``)
    r_c = beta * (pi_c - ref_c),   r_r = beta * (pi_r - ref_r)   implicit rewards
    h   = r_c - r_r                                              reward margin
    l_k = -(1 - eps) * log sigmoid(h) - eps * log sigmoid(-h)    eps = label_smoothing (cDPO; 0 = DPO)

At pi_theta = pi_ref every h is 0 and l_k = log 2 for any eps. With eps = 0 the gradient is
dl/dpi_c = -beta * sigmoid(-h) < 0 and dl/dpi_r = +beta * sigmoid(-h) > 0: descent raises the chosen
response's log-prob and lowers the rejected one's.

Normalisation: the optimised loss is the mean of l_k over the GLOBAL batch of G pairs
(G = ``data.train_batch_size``, verl's ``global_batch_size``). Each micro-batch returns
``sum_{k in micro-batch} l_k * dp_size / G``; verl sums micro-batch gradients and FSDP averages them
over the dp_size ranks, so the update is the gradient of ``sum_k l_k / G``. The metrics use the same
scale with verl's SUM aggregation (sum over micro-batches, mean over ranks): each is a global pair mean.

A micro-batch must hold whole pairs; ``dft_verl.dpo.data`` guarantees it, and ``pair_sequence_logps``
raises if a pair arrives split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dft_verl.losses import flatten_batch, segment_sum


@dataclass(frozen=True)
class DPOConfig:
    """The ``dpo:`` block of the ``dpo`` hydra config.

    beta: inverse temperature of the implicit reward (> 0); paper default 0.1.
    label_smoothing: eps in [0, 0.5), the assumed probability that a preference label is flipped.
    """

    beta: float = 0.1
    label_smoothing: float = 0.0

    def __post_init__(self):
        if not self.beta > 0:
            raise ValueError(f"dpo.beta must be > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"dpo.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")

    @classmethod
    def from_config(cls, cfg) -> "DPOConfig":
        """Build from an omegaconf/dict ``dpo`` block (missing keys take the defaults)."""
        cfg = dict(cfg or {})
        known = {"beta", "label_smoothing"}
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"unknown key(s) in dpo config: {sorted(unknown)}; supported: {sorted(known)}")
        return cls(**{k: float(v) for k, v in cfg.items()})


@dataclass
class PairTerms:
    """Per-pair tensors, shape (P,): losses l_k, rewards r_c and r_r, policy sums pi_c and pi_r."""

    losses: torch.Tensor
    reward_chosen: torch.Tensor
    reward_rejected: torch.Tensor
    logp_chosen: torch.Tensor
    logp_rejected: torch.Tensor

    @property
    def margin(self) -> torch.Tensor:
        return self.reward_chosen - self.reward_rejected


def dpo_pair_losses(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> PairTerms:
    """l_k of the module docstring for P pairs; all inputs (P,) response-summed log-probs in nats."""
    reward_chosen = beta * (logp_chosen - ref_chosen)
    reward_rejected = beta * (logp_rejected - ref_rejected)
    h = reward_chosen - reward_rejected
    losses = -(1.0 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
    return PairTerms(losses, reward_chosen, reward_rejected, logp_chosen, logp_rejected)


def pair_sequence_logps(seq_logp: torch.Tensor, is_chosen: torch.Tensor, pair_index: torch.Tensor):
    """Match a micro-batch's sequences into pairs: ``(chosen_pos, rejected_pos)`` index tensors (P,)
    into ``seq_logp`` (S,), ordered by pair index. Raises ValueError unless every pair index appears
    exactly once as chosen and once as rejected (a pair split across micro-batches would train on
    half a preference)."""
    is_chosen = is_chosen.bool()
    chosen_pos = torch.nonzero(is_chosen).flatten()
    rejected_pos = torch.nonzero(~is_chosen).flatten()
    chosen_pos = chosen_pos[pair_index[chosen_pos].argsort()]
    rejected_pos = rejected_pos[pair_index[rejected_pos].argsort()]
    ids_c, ids_r = pair_index[chosen_pos], pair_index[rejected_pos]
    if ids_c.shape != ids_r.shape or not torch.equal(ids_c, ids_r) or ids_c.unique().numel() != ids_c.numel():
        raise ValueError(
            f"DPO micro-batch does not hold whole pairs: chosen pair ids {ids_c.tolist()}, rejected pair ids "
            f"{ids_r.tolist()} (batches must be built by dft_verl.dpo.data.PairCollator and marked with "
            f"mark_pair_groups)"
        )
    return chosen_pos, rejected_pos


def make_dpo_loss_fn(cfg: DPOConfig):
    """``loss_fn(model_output, data, dp_group=None) -> (loss, metrics)`` for ``TrainingWorker.set_loss_fn``.

    Reads per-sequence ``pair_index``, ``is_chosen`` and ``ref_logp`` (dense (S,) tensors) and the
    ``no_padding`` ``log_probs``/``loss_mask`` of the micro-batch. Metrics (global pair means, see module
    docstring): ``dpo/reward_chosen``, ``dpo/reward_rejected``, ``dpo/reward_margin`` (beta-scaled, nats),
    ``dpo/reward_accuracy`` (fraction of pairs with r_c > r_r, ties count 0), ``dpo/logp_chosen``,
    ``dpo/logp_rejected`` (policy sums, nats).
    """
    from verl.utils import tensordict_utils as tu
    from verl.utils.dataset.dataset_utils import DatasetPadMode
    from verl.utils.metric import AggregationType, Metric

    def loss_fn(model_output, data, dp_group=None, config=None):
        pad_mode = tu.get_non_tensor_data(data=data, key="pad_mode", default=DatasetPadMode.NO_PADDING)
        if pad_mode != DatasetPadMode.NO_PADDING:
            raise ValueError(f"DPO supports data.pad_mode=no_padding only, got {pad_mode!r}")
        if "ref_logp" not in data.keys():
            raise KeyError(
                "DPO batch has no reference log-probs ('ref_logp'): add them to the pairs parquet with "
                "`python -m dft_verl.dpo.ref_logprobs` and train with the DPOPairDataset"
            )
        global_pairs = tu.get_non_tensor_data(data=data, key="global_batch_size", default=None)
        if global_pairs is None:
            raise ValueError("DPO loss needs 'global_batch_size' (pairs per step) in the batch meta info")
        dp_size = data["dp_size"]

        flat = flatten_batch(model_output["log_probs"], data, no_padding=True)
        seq_logp = segment_sum(flat.log_prob.double() * flat.mask.double(), flat.seg, flat.num_seqs)
        pair_index = data["pair_index"].to(seq_logp.device)
        chosen, rejected = pair_sequence_logps(seq_logp, data["is_chosen"].to(seq_logp.device), pair_index)
        ref = data["ref_logp"].to(seq_logp.device).double()
        terms = dpo_pair_losses(
            seq_logp[chosen], seq_logp[rejected], ref[chosen], ref[rejected], cfg.beta, cfg.label_smoothing
        )
        scale = dp_size / float(global_pairs)
        loss = (terms.losses.sum() * scale).to(flat.log_prob.dtype)

        with torch.no_grad():
            values = {
                "dpo/reward_chosen": terms.reward_chosen,
                "dpo/reward_rejected": terms.reward_rejected,
                "dpo/reward_margin": terms.margin,
                "dpo/reward_accuracy": (terms.margin > 0).double(),
                "dpo/logp_chosen": terms.logp_chosen,
                "dpo/logp_rejected": terms.logp_rejected,
            }
            metrics = {k: Metric(AggregationType.SUM, (v.detach().sum() * scale).item()) for k, v in values.items()}
        return loss, metrics

    loss_fn.dpo_config = cfg
    return loss_fn
