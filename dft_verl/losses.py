"""The SFT/DFT loss family for verl's engine SFT trainer.

Notation, per response token t of sequence i: ``lp_t = log p_theta(y_t | y_<t, x)`` (natural log,
nats), ``p_t = exp(lp_t)``, ``m_t`` the loss mask (1 on assistant tokens), ``sg`` = stop-gradient.
Every loss here is a weighted negative log-likelihood

    L = - sum_{i,t} w_t * m_t * lp_t / N,        N = number of masked tokens in the GLOBAL batch

with the weight ``w_t`` always detached (a weight, never a path for gradient):

    sft      w_t = 1                                     (verl's sft_loss)
    dft      w_t = sg(p_t)                               (Dynamic Fine-Tuning, token level: the method)
    dft_seq  w_t = sg(prod_{s in i} p_s)                 (ablation: sequence probability)
    dft_geo  w_t = sg(exp(mean_{s in i} lp_s))           (ablation: geometric-mean token probability)
    iw_sft   w_t = sg(clip(exp(sum_{s in i} (lp_s - lp_ref_s) / T_i), w_min, w_max))
                                                         (importance-weighted SFT; see ``iw_sft_weight``)

For dft the per-token gradient is ``-p_t * grad lp_t / N = -grad p_t / N``: SFT's 1/p_t factor is
cancelled. Normalisation matches verl's ``sft_loss`` exactly (``batch_num_tokens`` is the global
token count, ``dp_size`` undoes the data-parallel gradient average), so ``sft`` here reproduces
verl's loss and SFT/DFT curves are comparable. ``normalization="sequence"`` instead averages the
per-sequence token means (each sequence weighs the same).

Mask convention (verl 0.9.1): in ``no_padding`` mode ``log_probs`` is a jagged nested tensor whose
position t holds the log-prob of token t+1, so the flattened ``loss_mask`` is rolled left by one;
in padded modes ``response_mask`` is already aligned with ``log_probs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("sft", "dft", "dft_seq", "dft_geo", "iw_sft")
NORMALIZATIONS = ("token", "sequence")


@dataclass(frozen=True)
class LossConfig:
    """The ``loss:`` block of the ``dft_sft`` hydra config.

    type: one of LOSS_TYPES.
    normalization: "token" (global token mean, verl's default) or "sequence".
    iw_clip: (w_min, w_max) clip range of the iw-SFT importance weight.
    iw_length_normalize: divide the iw-SFT log-ratio by the sequence's token count T_i.
    """

    type: str = "dft"
    normalization: str = "token"
    iw_clip: tuple[float, float] = (0.5, 2.0)
    iw_length_normalize: bool = True

    def __post_init__(self):
        if self.type not in LOSS_TYPES:
            raise ValueError(f"loss.type={self.type!r} is not supported; choose one of {list(LOSS_TYPES)}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"loss.normalization={self.normalization!r} is not supported; choose one of {list(NORMALIZATIONS)}"
            )
        lo, hi = self.iw_clip
        if not 0 < lo <= hi:
            raise ValueError(f"loss.iw_clip must satisfy 0 < w_min <= w_max, got {self.iw_clip}")

    @classmethod
    def from_config(cls, cfg) -> "LossConfig":
        """Build from an omegaconf/dict ``loss`` block (missing keys take the defaults)."""
        cfg = dict(cfg or {})
        known = {"type", "normalization", "iw_clip", "iw_length_normalize"}
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"unknown key(s) in loss config: {sorted(unknown)}; supported: {sorted(known)}")
        if "iw_clip" in cfg:
            cfg["iw_clip"] = tuple(float(x) for x in cfg["iw_clip"])
        return cls(**cfg)


# ---------------------------------------------------------------------------
# Per-sequence reductions over a flat token axis
# ---------------------------------------------------------------------------


def segment_sum(values: torch.Tensor, seg: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Sum ``values`` (N,) into ``num_segments`` bins given segment ids ``seg`` (N,)."""
    out = torch.zeros(num_segments, dtype=values.dtype, device=values.device)
    return out.index_add(0, seg, values)


def token_weights(
    loss_type: str,
    log_prob: torch.Tensor,
    mask: torch.Tensor,
    seg: torch.Tensor,
    num_seqs: int,
    ref_log_prob: torch.Tensor | None = None,
    iw_clip: tuple[float, float] = (0.5, 2.0),
    iw_length_normalize: bool = True,
) -> torch.Tensor:
    """Detached weight ``w_t`` (N,) of each token for ``loss_type`` (see module docstring).

    log_prob, mask, seg: flat (N,) tensors; mask is 0/1 float; seg gives each token's sequence id.
    ref_log_prob: flat (N,) reference-policy log-probs, required by iw_sft only.
    """
    lp = log_prob.detach().float()
    if loss_type == "sft":
        return torch.ones_like(lp)
    if loss_type == "dft":
        return lp.exp()
    seq_count = segment_sum(mask, seg, num_seqs).clamp_min(1.0)
    if loss_type == "dft_seq":
        return segment_sum(lp * mask, seg, num_seqs).exp()[seg]
    if loss_type == "dft_geo":
        return (segment_sum(lp * mask, seg, num_seqs) / seq_count).exp()[seg]
    if loss_type == "iw_sft":
        if ref_log_prob is None:
            raise ValueError(
                "loss.type=iw_sft needs reference-policy log-probs (column 'ref_log_probs' in the SFT parquet); "
                "compute them with `python -m dft_verl.trainer.ref_logprobs`"
            )
        w = iw_sft_weight(lp, ref_log_prob.detach().float(), mask, seg, num_seqs, iw_clip, iw_length_normalize)
        return w[seg]
    raise ValueError(f"loss type {loss_type!r} is not supported; choose one of {list(LOSS_TYPES)}")


def iw_sft_weight(
    log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    mask: torch.Tensor,
    seg: torch.Tensor,
    num_seqs: int,
    clip: tuple[float, float] = (0.5, 2.0),
    length_normalize: bool = True,
) -> torch.Tensor:
    """Per-sequence importance weight of iw-SFT (Qin & Springenberg, 2025), shape (num_seqs,).

    iw-SFT maximises ``E_{tau in D+}[ q(tau)/pi_ref(tau) * log p_theta(tau) ]``: a tighter lower bound
    on the sparse-reward RL objective than SFT. ``pi_ref`` is the policy that produced (or best
    explains) the curated data: the sampling model for self-generated data, the base model for
    given SFT data; its per-token log-probs must be supplied. ``q`` is taken as the current policy,
    detached. For variance control the log-ratio is optionally divided by the sequence length
    (a per-token geometric-mean ratio) and the weight is clipped to ``[w_min, w_max]``:

        w_i = clip(exp(sum_t m_t (lp_t - lp_ref_t) / T_i), w_min, w_max),  T_i = sum_t m_t (or 1)
    """
    log_ratio = segment_sum((log_prob - ref_log_prob) * mask, seg, num_seqs)
    if length_normalize:
        log_ratio = log_ratio / segment_sum(mask, seg, num_seqs).clamp_min(1.0)
    return log_ratio.exp().clamp(clip[0], clip[1])


# ---------------------------------------------------------------------------
# Layout handling: turn verl's model output + batch into flat (N,) tensors
# ---------------------------------------------------------------------------


@dataclass
class FlatTokens:
    """Flat view of a micro-batch: log_prob, mask, seg (sequence id), ref (optional), num_seqs."""

    log_prob: torch.Tensor
    mask: torch.Tensor
    seg: torch.Tensor
    num_seqs: int
    ref_log_prob: torch.Tensor | None = None


def flatten_batch(log_prob: torch.Tensor, data, no_padding: bool) -> FlatTokens:
    """Align verl's ``log_probs`` with the loss mask the way ``verl.workers.utils.losses.sft_loss`` does.

    no_padding: ``log_prob`` and ``data["loss_mask"]`` are jagged nested tensors (bsz, j); the
    flattened mask is rolled left by one token. Padded: ``data["response_mask"]`` (bsz, L) is used as is.
    If the batch carries ``ref_log_probs`` (same layout as the mask, aligned to the same tokens),
    it is flattened alongside.
    """
    ref = data.get("ref_log_probs", None) if hasattr(data, "get") else None
    if no_padding:
        if "loss_mask" not in data.keys():
            raise KeyError("batch has no 'loss_mask': the SFT dataset must produce one (verl MultiTurnSFTDataset)")
        loss_mask = data["loss_mask"]
        lp = log_prob.values()
        mask = torch.roll(loss_mask.values(), shifts=-1, dims=0).to(lp.dtype)
        lengths = log_prob.offsets().diff()
        num_seqs = lengths.numel()
        seg = torch.repeat_interleave(torch.arange(num_seqs, device=lp.device), lengths.to(lp.device))
        ref_flat = torch.roll(ref.values(), shifts=-1, dims=0) if ref is not None else None
    else:
        mask2d = data["response_mask"].to(log_prob.dtype)
        num_seqs, seqlen = log_prob.shape
        lp = log_prob.reshape(-1)
        mask = mask2d.reshape(-1)
        seg = torch.arange(num_seqs, device=lp.device).repeat_interleave(seqlen)
        ref_flat = ref.reshape(-1) if ref is not None else None
    return FlatTokens(lp, mask, seg, num_seqs, ref_flat)


def weighted_nll(
    flat: FlatTokens,
    weights: torch.Tensor,
    batch_num_tokens: float,
    dp_size: int,
    normalization: str = "token",
    global_num_seqs: float | None = None,
) -> torch.Tensor:
    """``-sum_t w_t m_t lp_t`` normalised like verl's sft_loss (see module docstring).

    token:    / batch_num_tokens * dp_size                      (global token mean after DP averaging)
    sequence: sum_i (per-sequence token sum / T_i) / global_num_seqs * dp_size
    """
    per_token = weights.to(flat.log_prob.dtype) * flat.mask * flat.log_prob
    if normalization == "token":
        return -per_token.sum() / batch_num_tokens * dp_size
    seq_count = segment_sum(flat.mask, flat.seg, flat.num_seqs).clamp_min(1.0)
    per_seq = segment_sum(per_token, flat.seg, flat.num_seqs) / seq_count
    return -per_seq.sum() / global_num_seqs * dp_size


def make_loss_fn(cfg: LossConfig):
    """Return ``loss_fn(model_output, data, dp_group=None) -> (loss, metrics)`` for verl's
    ``TrainingWorker.set_loss_fn`` (the call signature of ``partial(sft_loss, config=None)``).

    Metrics, each a global token mean over the batch (verl ``Metric`` with SUM aggregation, scaled
    like the loss so DP/micro-batch aggregation yields the global mean):
      ``dft/ce`` mean -lp_t (nats), ``dft/token_prob`` mean p_t, ``dft/weight`` mean w_t,
      ``dft/weighted_loss`` the optimised loss value.
    """
    from verl.utils import tensordict_utils as tu
    from verl.utils.dataset.dataset_utils import DatasetPadMode
    from verl.utils.metric import AggregationType, Metric

    def loss_fn(model_output, data, dp_group=None, config=None):
        pad_mode = tu.get_non_tensor_data(data=data, key="pad_mode", default=DatasetPadMode.NO_PADDING)
        dp_size = data["dp_size"]
        batch_num_tokens = data["batch_num_tokens"]
        flat = flatten_batch(model_output["log_probs"], data, no_padding=pad_mode == DatasetPadMode.NO_PADDING)
        weights = token_weights(
            cfg.type, flat.log_prob, flat.mask, flat.seg, flat.num_seqs, flat.ref_log_prob,
            cfg.iw_clip, cfg.iw_length_normalize,
        )
        global_num_seqs = None
        if cfg.normalization == "sequence":
            global_num_seqs = tu.get_non_tensor_data(data=data, key="global_batch_size", default=None)
            if global_num_seqs is None:
                raise ValueError("loss.normalization=sequence needs 'global_batch_size' in the batch meta info")
        loss = weighted_nll(flat, weights, batch_num_tokens, dp_size, cfg.normalization, global_num_seqs)

        with torch.no_grad():
            scale = dp_size / batch_num_tokens
            lp = flat.log_prob.detach().float()
            m = flat.mask.float()
            metrics = {
                "dft/ce": -(lp * m).sum() * scale,
                "dft/token_prob": (lp.exp() * m).sum() * scale,
                "dft/weight": (weights * m).sum() * scale,
            }
            metrics = {k: Metric(AggregationType.SUM, v.item()) for k, v in metrics.items()}
            metrics["dft/weighted_loss"] = Metric(AggregationType.SUM, loss.detach().item())
        return loss, metrics

    loss_fn.loss_config = cfg
    return loss_fn
