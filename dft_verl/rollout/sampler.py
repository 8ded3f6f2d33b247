"""Token-in/token-out sampling with a transformers causal LM, with vLLM's request semantics.

``sample(model, requests, params, eos_ids, pad_id)`` generates one completion per request in one
left-padded ``model.generate`` call and returns, per request, the new token ids and (when asked)
their log-probabilities. Keys and values live in transformers' dynamic cache (grown by concatenation every step);
``cache="static"`` preallocates prompt + budget and writes in place, which measured slower on CPU (SmolLM2-135M,
batch 64, fp32: 0.86x; bench/generation_speed.py):

    log_prob_t = log_softmax(z_t / T)[y_t]        z_t: the model's raw logits at step t, T: temperature

which is what verl's actor computes for ``old_log_prob`` (logits divided by the rollout temperature,
no top-k/top-p renormalisation), so ``training/rollout_probs_diff_*`` measures only numerical
differences between the two forward passes. Greedy requests (T = 0) report ``log_softmax(z_t)``.

vLLM semantics kept: a completion stops after the first EOS id (which it includes) unless
``ignore_eos``; each request has its own ``max_tokens``; ``top_k <= 0`` and ``top_p = 1`` disable
those filters. The model's own ``generation_config`` defaults (a checkpoint's top_k=50, say) are
never applied: only the parameters given here are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList


@dataclass(frozen=True)
class SamplingParams:
    """One request's sampling settings (vLLM's names and conventions).

    temperature: 0 = greedy. top_k: <= 0 disables. top_p: 1.0 disables.
    repetition_penalty: 1.0 disables (HF's multiplicative penalty, as vLLM's).
    logprobs: return the sampled tokens' log-probabilities.
    ignore_eos: generate max_tokens tokens whatever comes. stop_token_ids: extra ids that end a completion
    (kept in it, as the EOS ids are).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    logprobs: bool = False
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


def eos_token_ids(generation_config, tokenizer, hf_config=None) -> list[int]:
    """EOS ids as vLLM stops on them: the generation config's, then the tokenizer's and the model config's."""
    ids: list[int] = []
    for source in (getattr(generation_config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None),
                   getattr(hf_config, "eos_token_id", None)):
        for i in [source] if isinstance(source, int) else (source or []):
            if int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("the model and tokenizer define no eos token: generation could never stop early")
    return ids


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]
    log_probs: Optional[list[float]]
    finished_by_eos: bool


class RowSeededSampling(LogitsProcessor):
    """Sampling with one random stream per row, so a row's tokens do not depend on the rows batched with it.

    Row i's next token is the inverse CDF of ``softmax(w_i)`` at ``u_i``: ``w_i`` its scores after transformers' own
    temperature, top-k and top-p warpers, ``u_i ~ U(0,1)`` one draw per step from row i's ``torch.Generator`` (seeded
    with ``seeds[i]``), the CDF summed in float64 (a filtered token has an empty interval and is never drawn). The
    scores returned are -inf except at the drawn token, for ``generate`` run greedily.
    """

    def __init__(self, params: SamplingParams, seeds: Sequence[int], device):
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.warpers = [TemperatureLogitsWarper(params.temperature)]
        if params.top_k > 0:
            self.warpers.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1:
            self.warpers.append(TopPLogitsWarper(params.top_p))
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        cdf = scores.double().softmax(-1).cumsum(-1)
        u = torch.cat([torch.rand(1, generator=g, device=scores.device, dtype=torch.float64) for g in self.generators])
        drawn = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).clamp(max=scores.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter_(-1, drawn, 0.0)


CACHES = ("static", "dynamic")


def _generation_config(params: SamplingParams, max_new_tokens: int, eos_ids: Sequence[int], pad_id: int,
                       row_seeded: bool = False, cache: Optional[str] = None):
    """``row_seeded``: greedy over RowSeededSampling's one-hot scores (which applies temperature, top-k, top-p).
    ``cache``: transformers' cache_implementation when generate builds the cache (None when the caller passes one)."""
    greedy = params.temperature == 0 or row_seeded
    return GenerationConfig(
        cache_implementation=cache,
        max_new_tokens=max_new_tokens,
        do_sample=not greedy,
        temperature=None if greedy else params.temperature,
        top_k=None if greedy or params.top_k <= 0 else params.top_k,
        top_p=None if greedy or params.top_p >= 1 else params.top_p,
        repetition_penalty=None if params.repetition_penalty == 1 else params.repetition_penalty,
        eos_token_id=None if params.ignore_eos else list(eos_ids),
        pad_token_id=pad_id,
        return_dict_in_generate=True,
        output_logits=params.logprobs,
    )


def prefill_shared_prompts(model, ids: torch.Tensor, mask: torch.Tensor, max_cache_len: Optional[int] = None):
    """KV cache of a left-padded batch's prompts, all but their last token, each distinct row computed once; a
    ``StaticCache`` of ``max_cache_len`` positions when given, else a ``DynamicCache``.

    The rows of one prompt (its n samples) get copies of that prompt's keys and values (``Cache.reorder_cache``
    with repeated indices), so the prefill costs (distinct prompts / rows) of a full one. Position ids follow
    ``generate``'s rule for padded batches (``cumsum(mask) - 1``, 0 on padding), so ``generate`` continuing from
    this cache sees the same keys and values as after its own prefill. None when no row repeats another.
    """
    from transformers import DynamicCache, StaticCache

    slot: dict[tuple, int] = {}  # distinct row (ids and mask) -> its index among the distinct rows
    keep, index = [], []  # first row of each distinct one; each row's distinct index
    for i, row in enumerate(torch.cat([ids, mask], dim=1).tolist()):
        if tuple(row) not in slot:
            slot[tuple(row)] = len(keep)
            keep.append(i)
        index.append(slot[tuple(row)])
    if len(keep) == len(index) or ids.shape[1] < 2:
        return None
    u_ids, u_mask = ids[keep, :-1], mask[keep, :-1]
    positions = (u_mask.cumsum(-1) - 1).clamp(min=0)
    cache = (StaticCache(config=model.config, max_cache_len=max_cache_len) if max_cache_len
             else DynamicCache(config=model.config))
    model(input_ids=u_ids, attention_mask=u_mask, position_ids=positions, past_key_values=cache, use_cache=True,
          logits_to_keep=1)
    cache.reorder_cache(torch.tensor(index, device=ids.device))
    return cache


@torch.no_grad()
def sample(
    model,
    prompts: Sequence[Sequence[int]],
    max_tokens: Sequence[int],
    params: SamplingParams,
    eos_ids: Sequence[int],
    pad_id: int,
    generator_seed: Optional[int] = None,
    share_prompt_prefill: bool = False,
    row_seeds: Optional[Sequence[int]] = None,
    cache: str = "dynamic",
) -> list[Completion]:
    """Complete every prompt (token ids) once; ``max_tokens[i]`` new tokens at most for prompt i.

    One ``model.generate`` call over the left-padded batch (callers choose the batch size).
    ``generator_seed`` seeds torch's global RNG first, for reproducible sampling of the same batch.
    ``row_seeds``: prompt i samples from its own stream seeded with ``row_seeds[i]`` (RowSeededSampling), the same
    tokens whatever it is batched with, up to float rounding of the logits: they differ in the last bit between batch
    shapes, which moves a draw across a token boundary with probability ~1e-7 per token.
    ``share_prompt_prefill``: repeated prompts (n samples of one question) are prefilled once
    (``prefill_shared_prompts``); same tokens.
    ``cache``: "dynamic" (transformers' default, grown by concatenation) or "static" (keys and values preallocated for
    the longest prompt + ``max(max_tokens)``, written in place); the same tokens up to float rounding.
    """
    if cache not in CACHES:
        raise ValueError(f"cache must be one of {CACHES}, got {cache!r}")
    if len(prompts) != len(max_tokens):
        raise ValueError(f"{len(prompts)} prompts but {len(max_tokens)} max_tokens")
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt: every request needs at least one prompt token")
    if any(m < 1 for m in max_tokens):
        raise ValueError(f"max_tokens must be >= 1, got {min(max_tokens)}")
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, width - len(p) :] = 1
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    if row_seeds is not None and len(row_seeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(row_seeds)} row_seeds")
    row_seeded = row_seeds is not None and params.temperature > 0
    eos_ids = list(dict.fromkeys([*eos_ids, *params.stop_token_ids]))
    processors = [RowSeededSampling(params, row_seeds, device)] if row_seeded else []
    ids, mask = ids.to(device), mask.to(device)
    static_len = width + max(max_tokens) if cache == "static" else None
    prefilled = prefill_shared_prompts(model, ids, mask, static_len) if share_prompt_prefill else None
    config = _generation_config(params, max(max_tokens), eos_ids, pad_id, row_seeded,
                                cache=None if prefilled is not None else {"static": "static", "dynamic": None}[cache])
    # transformers fills every setting left unset from model.generation_config (a checkpoint's top_k=50, say):
    # give it library defaults for the call, so only the parameters above apply.
    checkpoint_defaults, model.generation_config = model.generation_config, GenerationConfig()
    try:
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                             logits_processor=LogitsProcessorList(processors),
                             **({"past_key_values": prefilled} if prefilled is not None else {}))
    finally:
        model.generation_config = checkpoint_defaults
    new = out.sequences[:, width:].cpu()
    log_probs = None
    if params.logprobs:
        scale = params.temperature if params.temperature > 0 else 1.0
        # one step at a time: stacking [batch, steps, vocab] would double the memory the logits already take
        log_probs = torch.stack([(step.float().cpu() / scale).log_softmax(-1).gather(-1, new[:, t : t + 1]).squeeze(-1)
                                 for t, step in enumerate(out.logits)], dim=1)
    eos = set() if params.ignore_eos else set(eos_ids)
    results = []
    for i, limit in enumerate(max_tokens):
        tokens = new[i, :limit].tolist()
        stop = next((j for j, t in enumerate(tokens) if t in eos), None)
        if stop is not None:
            tokens = tokens[: stop + 1]
        lp = log_probs[i, : len(tokens)].tolist() if log_probs is not None else None
        results.append(Completion(token_ids=tokens, log_probs=lp, finished_by_eos=stop is not None))
    return results
