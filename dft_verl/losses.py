"""The SFT/DFT loss family for verl's engine SFT trainer.

Notation, per response token t of sequence i: ``lp_t = log p_theta(y_t | y_<t, x)`` (natural log,
nats), ``p_t = exp(lp_t)``, ``m_t`` the loss mask (1 on assistant tokens), ``sg`` = stop-gradient.
Every loss here is a weighted negative log-likelihood, optionally plus a KL anchor,

    l_t = - w_t * lp_t  +  lambda * KL(p_ref(.|y_<t, x) || p_theta(.|y_<t, x))      (KL only if lambda > 0)

with the weight ``w_t`` always detached (a weight, never a path for gradient):

    sft      w_t = 1                                     (verl's sft_loss)
    dft      w_t = max(sg(p_t)^q, c)                     (Dynamic Fine-Tuning; q = dft_power, c = dft_min_weight;
                                                          q=1, c=0 is the method, q=0 is SFT exactly, 0<q<1 is
                                                          "Beyond Log Likelihood"'s p^q family, c>0 a weight floor)
    dft_seq  w_t = sg(prod_{s in i} p_s)                 (ablation: sequence probability)
    dft_geo  w_t = sg(exp(mean_{s in i} lp_s))           (ablation: geometric-mean token probability)
    iw_sft   w_t = sg(clip(exp(sum_{s in i} (lp_s - lp_ref_s) / T_i), w_min, w_max))
                                                         (importance-weighted SFT; see ``iw_sft_weight``)
    asft     the dft weight plus the KL anchor, lambda = kl_anchor_coef (default 0.1; ASFT, arXiv 2509.23753)
    eaft     w_t = sg(H_k(t) / ln k)^alpha                (entropy-adaptive fine-tuning, arXiv 2601.02151;
                                                          H_k the entropy (nats) of the next-token distribution
                                                          restricted to its k most likely tokens and renormalised,
                                                          k = eaft_topk = 20, alpha = eaft_alpha = 1; see
                                                          ``topk_entropy``)

For dft (q=1) the per-token gradient is ``-p_t * grad lp_t / N = -grad p_t / N``: SFT's 1/p_t factor is
cancelled. The KL anchor is the full-vocabulary ``sum_v p_ref(v) (log p_ref(v) - log p_theta(v))`` against
the frozen starting model (``kl_anchor_per_token``); it needs the logits, not just ``lp_t``, and so does
eaft's entropy.

Normalisation of ``sum_{i,t} m_t l_t`` (``loss.normalization``):

    token        / N * dp_size, N = masked tokens in the GLOBAL batch (verl's sft_loss: ``batch_num_tokens``;
                 data-parallel gradient averaging undoes dp_size) -> the global token mean. Default.
    sequence     sum_i (sum_t m_t l_t / T_i) / B * dp_size, B = global number of sequences -> mean of
                 per-sequence token means (each sequence weighs the same).
    micro_batch  / n_k, n_k = masked tokens of micro-batch k on this rank (no dp_size: ranks are averaged by
                 the gradient all-reduce) -> the gradient of the SUM over the rank's M micro-batches of their
                 token means, averaged over ranks; the reported (logged) value is divided by M, the mean of the
                 micro-batch means. This is the official DFT trainer's update exactly (yongliang-wu/DFT,
                 verl/verl/trainer/fsdp_dft_trainer.py with balance_dp_token=False: lines 428-441 back-propagate
                 each micro-batch's token mean, lines 453-462 divide by M only the logged value), for
                 reproducing the paper's runs. Its gradient and grad_norm are M times the mean-of-means, so
                 ``optim.clip_grad`` clips at a different point than with ``token``: at M = 1 and equal
                 micro-batch token counts the two modes agree; otherwise tokens of short micro-batches weigh more.

Mask convention (verl 0.9.1): in ``no_padding`` mode ``log_probs`` is a jagged nested tensor whose
position t holds the log-prob of token t+1, so the flattened ``loss_mask`` is rolled left by one;
in padded modes ``response_mask`` is already aligned with ``log_probs``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOSS_TYPES = ("sft", "dft", "dft_seq", "dft_geo", "iw_sft", "asft", "eaft")
NORMALIZATIONS = ("token", "sequence", "micro_batch")
ASFT_KL_COEF = 0.1  # ASFT's default anchor weight (the authors' train.sh KL_WEIGHT)
_CONFIG_KEYS = (
    "type", "normalization", "dft_power", "dft_min_weight", "kl_anchor_coef", "kl_anchor_model",
    "iw_clip", "iw_length_normalize", "eaft_topk", "eaft_alpha",
)


@dataclass(frozen=True)
class LossConfig:
    """The ``loss:`` block of the ``dft_sft`` hydra config.

    type: one of LOSS_TYPES.
    normalization: one of NORMALIZATIONS (see module docstring).
    dft_power: q >= 0 of the dft weight sg(p_t)^q (dft/asft only; 1 = DFT, 0 = SFT).
    dft_min_weight: floor c in [0, 1] of the dft weight max(sg(p_t)^q, c) (dft/asft only; 0 = DFT).
    kl_anchor_coef: lambda >= 0 of the KL anchor; None = ASFT_KL_COEF for asft, 0 otherwise.
    kl_anchor_model: the frozen reference of the KL anchor; None = the starting model (model.path).
    iw_clip: (w_min, w_max) clip range of the iw-SFT importance weight.
    iw_length_normalize: divide the iw-SFT log-ratio by the sequence's token count T_i.
    eaft_topk: k >= 2, the number of most likely next tokens whose renormalised entropy weights eaft.
    eaft_alpha: alpha >= 0 of the eaft weight (H_k / ln k)^alpha (0 = SFT).
    """

    type: str = "dft"
    normalization: str = "token"
    dft_power: float = 1.0
    dft_min_weight: float = 0.0
    kl_anchor_coef: float | None = None
    kl_anchor_model: str | None = None
    iw_clip: tuple[float, float] = (0.5, 2.0)
    iw_length_normalize: bool = True
    eaft_topk: int = 20
    eaft_alpha: float = 1.0

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
        if not self.dft_power >= 0:
            raise ValueError(f"loss.dft_power must be >= 0 (1 = DFT, 0 = SFT), got {self.dft_power}")
        if not 0 <= self.dft_min_weight <= 1:
            raise ValueError(f"loss.dft_min_weight must be in [0, 1] (0 = DFT), got {self.dft_min_weight}")
        if self.weighting != "dft" and (self.dft_power != 1.0 or self.dft_min_weight != 0.0):
            raise ValueError(
                f"loss.dft_power / loss.dft_min_weight shape the dft weight; they do not apply to "
                f"loss.type={self.type!r} (use loss.type=dft or asft)"
            )
        if self.type != "eaft" and (self.eaft_topk != 20 or self.eaft_alpha != 1.0):
            raise ValueError(f"loss.eaft_topk / loss.eaft_alpha shape the eaft weight; they do not apply to "
                             f"loss.type={self.type!r} (use loss.type=eaft)")
        if not (isinstance(self.eaft_topk, int) and self.eaft_topk >= 2):
            raise ValueError(f"loss.eaft_topk must be an integer >= 2, got {self.eaft_topk!r}")
        if not self.eaft_alpha >= 0:
            raise ValueError(f"loss.eaft_alpha must be >= 0 (0 = SFT), got {self.eaft_alpha}")
        coef = self.kl_anchor_coef
        if coef is None:
            coef = ASFT_KL_COEF if self.type == "asft" else 0.0
        object.__setattr__(self, "kl_anchor_coef", float(coef))
        if not self.kl_anchor_coef >= 0:
            raise ValueError(f"loss.kl_anchor_coef must be >= 0, got {self.kl_anchor_coef}")
        if self.type == "asft" and self.kl_anchor_coef == 0:
            raise ValueError("loss.type=asft needs loss.kl_anchor_coef > 0 (with 0 it is loss.type=dft)")

    @property
    def weighting(self) -> str:
        """The ``token_weights`` rule: asft weights like dft."""
        return "dft" if self.type == "asft" else self.type

    @property
    def uses_kl_anchor(self) -> bool:
        return self.kl_anchor_coef > 0

    @property
    def needs_logits(self) -> bool:
        """The loss reads the full logits (KL anchor, eaft's entropy), not only the target log-probs."""
        return self.uses_kl_anchor or self.type == "eaft"

    @classmethod
    def from_config(cls, cfg) -> "LossConfig":
        """Build from an omegaconf/dict ``loss`` block (missing keys take the defaults)."""
        cfg = dict(cfg or {})
        unknown = set(cfg) - set(_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown key(s) in loss config: {sorted(unknown)}; supported: {sorted(_CONFIG_KEYS)}")
        if "iw_clip" in cfg:
            cfg["iw_clip"] = tuple(float(x) for x in cfg["iw_clip"])
        for key in ("dft_power", "dft_min_weight", "eaft_alpha"):
            if key in cfg:
                cfg[key] = float(cfg[key])
        if "eaft_topk" in cfg and float(cfg["eaft_topk"]) == int(cfg["eaft_topk"]):
            cfg["eaft_topk"] = int(cfg["eaft_topk"])
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
    dft_power: float = 1.0,
    dft_min_weight: float = 0.0,
    entropy: torch.Tensor | None = None,
    eaft_alpha: float = 1.0,
) -> torch.Tensor:
    """Detached weight ``w_t`` (N,) of each token for ``loss_type`` (see module docstring).

    log_prob, mask, seg: flat (N,) tensors; mask is 0/1 float; seg gives each token's sequence id.
    ref_log_prob: flat (N,) reference-policy log-probs, required by iw_sft only.
    dft_power, dft_min_weight: q and c of the dft weight max(p^q, c); p^q is computed as exp(q * lp),
    so q=1 is bit-identical to exp(lp) and q=0 gives exactly 1.
    entropy: flat (N,) normalised top-k entropy H_k / ln k in [0, 1] (``topk_entropy``), required by eaft only.
    dtype: the weight is computed (and returned) in float32 for bf16/fp16/fp32 log-probs and in float64 for
    float64 ones, i.e. in ``promote_types(log_prob.dtype, float32)``.
    """
    lp = log_prob.detach().to(torch.promote_types(log_prob.dtype, torch.float32))
    if loss_type == "sft":
        return torch.ones_like(lp)
    if loss_type == "dft":
        w = (lp * dft_power).exp() if dft_power != 1.0 else lp.exp()
        return w.clamp_min(dft_min_weight) if dft_min_weight > 0 else w
    if loss_type == "eaft":
        if entropy is None:
            raise ValueError("loss.type=eaft needs the top-k entropy of each position (computed from the logits)")
        h = entropy.detach().to(lp.dtype)
        return h.pow(eaft_alpha) if eaft_alpha != 1.0 else h
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
        w = iw_sft_weight(lp, ref_log_prob.detach().to(lp.dtype), mask, seg, num_seqs, iw_clip, iw_length_normalize)
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


def kl_anchor_per_token(student_logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """ASFT's anchor ``KL(p_ref || p_theta)`` per token, shape (T,), in nats, computed in fp32.

    ``sum_v softmax(ref)_v * (log_softmax(ref)_v - log_softmax(student)_v)`` over the vocabulary
    (``F.kl_div(log p_theta, log p_ref, log_target=True)`` summed over v). student_logits (T, V)
    carries the gradient; ref_logits (T, V) is the frozen model's and is detached here.
    """
    log_q = torch.log_softmax(student_logits.float(), dim=-1)
    log_p = torch.log_softmax(ref_logits.detach().float(), dim=-1)
    return torch.nn.functional.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)


def topk_entropy(logits: torch.Tensor, k: int) -> torch.Tensor:
    """eaft's normalised entropy per row of ``logits`` (T, V), shape (T,), in [0, 1], fp32, no gradient:

        H_k / ln k,   H_k = - sum_{v in top-k} q_v ln q_v,   q = softmax of the k largest logits

    (the next-token distribution restricted to its k most likely tokens and renormalised; 1 = those k
    equally likely, 0 = one certain token). With k >= V it is the full entropy over ln V."""
    k = min(int(k), logits.shape[-1])
    with torch.no_grad():
        top = torch.topk(logits.detach().float(), k, dim=-1).values
        log_q = torch.log_softmax(top, dim=-1)
        return -(log_q.exp() * log_q).sum(-1) / math.log(k)


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


def rolled_loss_mask(data) -> torch.Tensor:
    """The no-padding ``loss_mask`` flattened and rolled left by one, so position t (which predicts
    token t+1) is trained iff token t+1 is an assistant token. Shape (total_nnz,)."""
    if "loss_mask" not in data.keys():
        raise KeyError("batch has no 'loss_mask': the SFT dataset must produce one (verl MultiTurnSFTDataset)")
    return torch.roll(data["loss_mask"].values(), shifts=-1, dims=0)


def flatten_batch(log_prob: torch.Tensor, data, no_padding: bool) -> FlatTokens:
    """Align verl's ``log_probs`` with the loss mask the way ``verl.workers.utils.losses.sft_loss`` does.

    no_padding: ``log_prob`` and ``data["loss_mask"]`` are jagged nested tensors (bsz, j); the
    flattened mask is rolled left by one token. Padded: ``data["response_mask"]`` (bsz, L) is used as is.
    If the batch carries ``ref_log_probs`` (same layout as the mask, aligned to the same tokens),
    it is flattened alongside.
    """
    ref = data.get("ref_log_probs", None) if hasattr(data, "get") else None
    if no_padding:
        lp = log_prob.values()
        mask = rolled_loss_mask(data).to(lp.dtype)
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


def flat_values(tensor: torch.Tensor) -> torch.Tensor:
    """(N,) values of a per-token model output in the same layout as ``log_probs`` (jagged or padded)."""
    return tensor.values() if tensor.is_nested else tensor.reshape(-1)


@dataclass(frozen=True)
class Normalizer:
    """What ``reduce_token_losses`` divides by (see the module docstring); each normalisation needs
    only its own fields, the others stay None.

    token:       batch_num_tokens (masked tokens in the global batch), dp_size (data-parallel ranks).
    sequence:    global_num_seqs (sequences in the global batch), dp_size.
    micro_batch: num_micro_batches (micro-batches on this rank; divides the reported value only)."""

    normalization: str
    batch_num_tokens: float | None = None
    dp_size: int | None = None
    global_num_seqs: float | None = None
    num_micro_batches: int | None = None

    def __post_init__(self):
        needs = {"token": ("batch_num_tokens", "dp_size"), "sequence": ("global_num_seqs", "dp_size"),
                 "micro_batch": ("num_micro_batches",)}
        if self.normalization not in needs:
            raise ValueError(f"normalization {self.normalization!r} is not one of {list(NORMALIZATIONS)}")
        missing = [f for f in needs[self.normalization] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"normalization={self.normalization} needs {missing}")


def reduce_token_losses(per_token: torch.Tensor, flat: FlatTokens, norm: Normalizer) -> torch.Tensor:
    """Reduce per-token losses ``l_t`` (N,) of one micro-batch to the scalar verl back-propagates.

    token:       sum_t m_t l_t / batch_num_tokens * dp_size
    sequence:    sum_i (sum_{t in i} m_t l_t / T_i) / global_num_seqs * dp_size
    micro_batch: value L_k / num_micro_batches, gradient dL_k, where L_k = sum_t m_t l_t / max(sum_t m_t, 1):
                 verl back-propagates every micro-batch's loss and logs the sum of their values, so the
                 step's gradient is sum_k dL_k and its logged loss mean_k L_k, as in the official trainer.
                 (verl 0.9.1: ``FSDPEngine.forward_backward_batch`` calls ``backward`` on the returned loss,
                 ``TrainingWorker._postprocess_output`` sums the values; tests/test_trainer_torchrun.py checks
                 the resulting grad_norm on the real trainer, tests/test_official_parity.py the update.)
    """
    masked = per_token * flat.mask
    if norm.normalization == "token":
        return masked.sum() / norm.batch_num_tokens * norm.dp_size
    if norm.normalization == "micro_batch":
        mean = masked.sum() / flat.mask.sum().clamp_min(1.0)
        return mean - mean.detach() * (1.0 - 1.0 / norm.num_micro_batches)
    seq_count = segment_sum(flat.mask, flat.seg, flat.num_seqs).clamp_min(1.0)
    per_seq = segment_sum(masked, flat.seg, flat.num_seqs) / seq_count
    return per_seq.sum() / norm.global_num_seqs * norm.dp_size


def batch_normalizer(normalization: str, data) -> Normalizer:
    """Read the normaliser's counts from verl's micro-batch meta info (keys set by the engine and the
    SFT trainer: batch_num_tokens, dp_size, global_batch_size, micro_batch_size_per_gpu, use_dynamic_bsz).

    micro_batch: M = global_batch_size / dp_size / micro_batch_size_per_gpu, rounded up (verl 0.9.1's
    ``prepare_micro_batches`` requires the division to be exact; the official trainer's ``split`` rounds up)."""
    from verl.utils import tensordict_utils as tu

    def meta(key):
        return tu.get_non_tensor_data(data=data, key=key, default=None)

    if normalization == "token":
        return Normalizer(normalization, batch_num_tokens=data["batch_num_tokens"], dp_size=data["dp_size"])
    global_num_seqs = meta("global_batch_size")
    if global_num_seqs is None:
        raise ValueError(f"loss.normalization={normalization} needs 'global_batch_size' in the batch meta info")
    if normalization == "sequence":
        return Normalizer(normalization, dp_size=data["dp_size"], global_num_seqs=global_num_seqs)
    if meta("use_dynamic_bsz"):
        raise ValueError(
            "loss.normalization=micro_batch needs fixed-size micro-batches (data.use_dynamic_bsz=False): "
            "with dynamic batching the loss cannot see how many micro-batches a rank runs"
        )
    per_rank = int(global_num_seqs) // int(data["dp_size"])
    micro = int(meta("micro_batch_size_per_gpu"))
    return Normalizer(normalization, num_micro_batches=max(1, -(-per_rank // micro)))


def make_loss_fn(cfg: LossConfig, reference=None):
    """Return ``loss_fn(model_output, data, dp_group=None) -> (loss, metrics)`` for verl's
    ``TrainingWorker.set_loss_fn`` (the call signature of ``partial(sft_loss, config=None)``).

    reference: with a KL anchor (``cfg.uses_kl_anchor``), a callable ``reference(data) -> (T, V)``
    giving the frozen model's logits for the micro-batch's packed tokens (``dft_verl.trainer.kl_anchor``).
    verl's FSDP engine then calls the same function first as its logits processor,
    ``loss_fn(student_logits=(1, T, V), data=micro_batch)`` (the seam its top-K distillation uses,
    switched on by the ``distillation_use_topk`` meta flag) whenever ``cfg.needs_logits``, which returns
    ``{"kl_anchor": (1, T)}`` and/or eaft's ``{"eaft_entropy": (1, T)}``; the engine hands each back as
    ``model_output[key]``, aligned like ``log_probs``.

    Metrics, each a global token mean over the batch (verl ``Metric`` with SUM aggregation, scaled
    like the loss so DP/micro-batch aggregation yields the global mean):
      ``dft/ce`` mean -lp_t (nats), ``dft/token_prob`` mean p_t, ``dft/weight`` mean w_t,
      ``dft/kl_anchor`` mean KL (nats, with a KL anchor), ``dft/topk_entropy`` mean H_k / ln k (eaft),
      ``dft/weighted_loss`` the optimised loss value.
    """
    from verl.utils import tensordict_utils as tu
    from verl.utils.dataset.dataset_utils import DatasetPadMode
    from verl.utils.metric import AggregationType, Metric

    if cfg.uses_kl_anchor and reference is None:
        raise ValueError("a loss with a KL anchor (loss.type=asft or loss.kl_anchor_coef > 0) needs a reference model")

    def logits_processor(student_logits, data):
        """The per-token quantities that need the logits, each (1, T) like the engine's packed tokens."""
        logits = student_logits.squeeze(0)
        out = {}
        if cfg.type == "eaft":  # every row: under sequence parallelism the engine gathers the shards
            out["eaft_entropy"] = topk_entropy(logits, cfg.eaft_topk).unsqueeze(0)
        if cfg.uses_kl_anchor:
            mask = rolled_loss_mask(data).to(logits.device)
            if mask.numel() != logits.shape[0]:
                raise ValueError(
                    f"the KL anchor expects one logits row per packed token ({mask.numel()}), got {logits.shape[0]}: "
                    "Ulysses sequence parallelism and static padding are not supported with it"
                )
            rows = mask.nonzero().squeeze(-1)  # only trained positions: the KL of prompt tokens is never used
            ref_logits = reference(data)
            kl = logits.new_zeros(logits.shape[0], dtype=torch.float32)
            kl = kl.index_put((rows,), kl_anchor_per_token(logits[rows], ref_logits[rows]))
            out["kl_anchor"] = kl.unsqueeze(0)
        return out

    def loss_fn(model_output=None, data=None, dp_group=None, config=None, student_logits=None):
        if student_logits is not None:
            return logits_processor(student_logits, data)
        pad_mode = tu.get_non_tensor_data(data=data, key="pad_mode", default=DatasetPadMode.NO_PADDING)
        flat = flatten_batch(model_output["log_probs"], data, no_padding=pad_mode == DatasetPadMode.NO_PADDING)
        entropy = None
        if cfg.type == "eaft":
            if "eaft_entropy" not in model_output:
                raise RuntimeError(
                    "loss.type=eaft needs the engine to pass the logits to the loss (meta flag distillation_use_topk="
                    "True, set by dft_verl.trainer's logits client)"
                )
            entropy = flat_values(model_output["eaft_entropy"])
        weights = token_weights(
            cfg.weighting, flat.log_prob, flat.mask, flat.seg, flat.num_seqs, flat.ref_log_prob,
            cfg.iw_clip, cfg.iw_length_normalize, cfg.dft_power, cfg.dft_min_weight, entropy, cfg.eaft_alpha,
        )
        per_token = -weights.to(flat.log_prob.dtype) * flat.log_prob
        kl = None
        if cfg.uses_kl_anchor:
            if "kl_anchor" not in model_output:
                raise RuntimeError(
                    "the KL anchor needs the engine to pass the logits to the loss (meta flag "
                    "distillation_use_topk=True, set by dft_verl.trainer's KL-anchor client)"
                )
            kl = flat_values(model_output["kl_anchor"]).to(per_token.dtype)
            per_token = per_token + cfg.kl_anchor_coef * kl
        norm = batch_normalizer(cfg.normalization, data)
        loss = reduce_token_losses(per_token, flat, norm)

        with torch.no_grad():
            scale = data["dp_size"] / data["batch_num_tokens"]
            lp = flat.log_prob.detach().float()
            m = flat.mask.float()
            metrics = {
                "dft/ce": -(lp * m).sum() * scale,
                "dft/token_prob": (lp.exp() * m).sum() * scale,
                "dft/weight": (weights * m).sum() * scale,
            }
            if kl is not None:
                metrics["dft/kl_anchor"] = (kl.detach().float() * m).sum() * scale
            if entropy is not None:
                metrics["dft/topk_entropy"] = (entropy.float() * m).sum() * scale
            metrics = {k: Metric(AggregationType.SUM, v.item()) for k, v in metrics.items()}
            metrics["dft/weighted_loss"] = Metric(AggregationType.SUM, loss.detach().item())
        return loss, metrics

    loss_fn.loss_config = cfg
    return loss_fn
