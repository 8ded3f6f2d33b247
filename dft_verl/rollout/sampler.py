"""Token-in/token-out sampling with a transformers causal LM, with vLLM's request semantics.

``sample(model, requests, params, eos_ids, pad_id)`` completes every request once in one left-padded batch and
returns, per request, the new token ids and (when asked) their log-probabilities. The decoding loop is this
module's own (one ``model(...)`` forward per step over a KV cache reserved once per batch, ``rollout.kv_cache``),
not ``model.generate``:

    prefill     the prompts, each distinct prompt once (its n samples copy its keys, values and next-token logits)
    step t      z = the logits of each row's next token               (float32; after the prefill: model(last
                                                                       tokens drawn, cache).logits[:, -1])
                w = transformers' warpers(z)                          (temperature, top-k, top-p, repetition penalty:
                                                                       only those asked for)
                y = min{v : cdf_w(v) > u}, cdf_w = cumsum softmax(w)  (float64 sums; u ~ U(0,1) one per row; T = 0:
                                                                       argmax z)
                log_prob_t = log_softmax(z / T)[y]                    (T = 1 when greedy)
    finished    a row that drew an EOS / stop id or reached its own max_tokens leaves the batch (its keys and values
                with it), so later steps compute only live rows

On SmolLM2-135M (batch 64, 2 cores) this is ~2x ``generate``'s tokens/s (bench/generation_speed.py): ``generate``
draws with ``torch.multinomial`` (an exponential variate per vocabulary entry: 67 ms of a ~350 ms bf16 step) and
keeps finished rows in the batch. It also applied transformers' default ``top_k=50`` to temperature sampling
whatever was asked; here only the given parameters apply.

``log_prob_t`` is what verl's actor computes for ``old_log_prob`` (logits divided by the rollout temperature, no
top-k/top-p renormalisation), so ``training/rollout_probs_diff_*`` measures only numerical differences between the
two forward passes.

vLLM semantics kept: a completion stops after the first EOS id (which it includes) unless ``ignore_eos``; each
request has its own ``max_tokens``; ``top_k <= 0`` and ``top_p = 1`` disable those filters. The model's own
``generation_config`` (a checkpoint's top_k=50, say) is never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from transformers import (DynamicCache, LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                          TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

from dft_verl.rollout.kv_cache import reserve


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


def warpers(params: SamplingParams) -> LogitsProcessorList:
    """transformers' own processors for the parameters asked for (vLLM's set): repetition penalty, then temperature
    (T != 1), top-k, top-p on a sampled request; only the repetition penalty on a greedy one (T = 0). Empty when none
    applies (the logits are then sampled as they are)."""
    chain = LogitsProcessorList()
    if params.repetition_penalty != 1:
        chain.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.temperature > 0:
        if params.temperature != 1:
            chain.append(TemperatureLogitsWarper(float(params.temperature)))
        if params.top_k > 0:
            chain.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1:
            chain.append(TopPLogitsWarper(params.top_p))
    return chain


CDF_BLOCK = 256  # vocabulary entries per block of ``inverse_cdf``'s first level


def inverse_cdf(scores: torch.Tensor, u: torch.Tensor, block: int = CDF_BLOCK) -> torch.Tensor:
    """Row i's token: the first v with ``cdf_i(v) > u_i * cdf_i(V-1)``, ``cdf_i`` the running sum of the weights
    ``e_i = exp(scores_i - max scores_i)`` (float32 terms, summed in float64); a -inf score has weight 0, an empty
    interval, and is never drawn. scores [B, V], u [B] in [0, 1): tokens [B].

    Two levels, so that no [B, V] float64 array is built (a fresh 25 MB buffer per step cost ~20-50 ms of page faults
    at B=64 over SmolLM2's 49,152 entries; this takes ~6 ms): the float64 sums of blocks of ``block`` weights
    locate the block holding the target ``u * total``, the running sum inside that block the token. The target is
    held below the block's own total (``nextafter``), so summation order can never step past its last token."""
    rows, vocab = scores.shape
    weights = (scores - scores.amax(-1, keepdim=True)).exp_()
    if vocab % block:
        weights = torch.nn.functional.pad(weights, (0, block - vocab % block))
    blocks = weights.view(rows, -1, block)
    ends = blocks.sum(-1, dtype=torch.float64).cumsum_(-1)  # [B, blocks]: cdf at each block's end
    target = u.double() * ends[:, -1]
    b = torch.searchsorted(ends, target.unsqueeze(-1), right=True).squeeze(-1).clamp_(max=ends.shape[1] - 1)
    before = torch.where(b > 0, ends.gather(1, (b - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1), 0.0)
    inside = blocks[torch.arange(rows, device=scores.device), b].double().cumsum_(-1).add_(before.unsqueeze(-1))
    target = torch.minimum(target, torch.nextafter(inside[:, -1], torch.zeros_like(before)))
    j = torch.searchsorted(inside, target.unsqueeze(-1), right=True).squeeze(-1)
    return b * block + j


class Uniforms:
    """One ``u ~ U(0,1)`` per live row per step: from row i's own ``torch.Generator`` seeded with ``seeds[i]``
    (its tokens then do not depend on the rows batched with it), or from torch's global RNG (seeds None)."""

    def __init__(self, seeds: Optional[Sequence[int]], device):
        self.generators = None if seeds is None else [torch.Generator(device=device).manual_seed(int(s))
                                                       for s in seeds]
        self.device = device

    def draw(self, rows: int) -> torch.Tensor:
        if self.generators is None:
            return torch.rand(rows, dtype=torch.float64, device=self.device)
        return torch.cat([torch.rand(1, generator=g, dtype=torch.float64, device=self.device)
                          for g in self.generators])

    def keep(self, live: list[int]) -> None:
        if self.generators is not None:
            self.generators = [self.generators[i] for i in live]


def prefill(model, ids: torch.Tensor, mask: torch.Tensor, share: bool = False,
            capacity: Optional[int] = None) -> tuple[DynamicCache, torch.Tensor]:
    """(transformers' ``DynamicCache`` of a left-padded batch's prompts, the float32 logits [B, V] of each prompt's
    next token). ``capacity``: positions reserved per row for the prompts and the tokens to come
    (``dft_verl.rollout.kv_cache``: decoding steps then write in place instead of concatenating). ``share``: each
    distinct row (ids and mask) is computed once and its keys, values and logits copied to
    the rows that repeat it (``Cache.reorder_cache`` with repeated indices): a prompt's n samples cost one prefill.
    Position ids are ``cumsum(mask) - 1`` (0 on padding), as ``generate`` gives a padded batch."""
    keep, index = list(range(len(ids))), list(range(len(ids)))
    if share:
        slot: dict[tuple, int] = {}  # distinct row -> its index among the distinct rows
        keep, index = [], []
        for i, row in enumerate(torch.cat([ids, mask], dim=1).tolist()):
            if tuple(row) not in slot:
                slot[tuple(row)] = len(keep)
                keep.append(i)
            index.append(slot[tuple(row)])
    cache = DynamicCache(config=model.config)
    if capacity is not None:
        reserve(cache, capacity)
    u_mask = mask[keep]
    logits = model(input_ids=ids[keep], attention_mask=u_mask, position_ids=(u_mask.cumsum(-1) - 1).clamp(min=0),
                   past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1].float()
    if len(keep) < len(index):
        spread = torch.tensor(index, device=ids.device)
        cache.reorder_cache(spread)
        logits = logits[spread]
    return cache, logits


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
) -> list[Completion]:
    """Complete every prompt (token ids) once; ``max_tokens[i]`` new tokens at most for prompt i.

    One left-padded batch (callers choose its size); the decoding loop is the module docstring's.
    ``generator_seed`` seeds torch's global RNG first, for reproducible sampling of the same batch.
    ``row_seeds``: prompt i draws from its own stream seeded with ``row_seeds[i]``: the same tokens in any order of
    the same batch, and whatever it is batched with up to float rounding of the logits, which differ between batch
    shapes and move a draw across a token boundary now and then (SmolLM2-135M, 64 prompts x <= 64 tokens in one
    batch of 64 against batches of 32 / 16: 2 / 5 of the 64 responses differed in float32, 30 / 46 in bfloat16;
    reversed order in the same batch: none).
    ``share_prompt_prefill``: repeated prompts (n samples of one question) are prefilled once; same tokens.
    """
    if len(prompts) != len(max_tokens):
        raise ValueError(f"{len(prompts)} prompts but {len(max_tokens)} max_tokens")
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt: every request needs at least one prompt token")
    if any(m < 1 for m in max_tokens):
        raise ValueError(f"max_tokens must be >= 1, got {min(max_tokens)}")
    if row_seeds is not None and len(row_seeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(row_seeds)} row_seeds")
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, width - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    uniforms = Uniforms(row_seeds if params.temperature > 0 else None, device)
    chain = warpers(params)
    stops = set() if params.ignore_eos else {*eos_ids, *params.stop_token_ids}
    scale = params.temperature if params.temperature > 0 else 1.0

    cache, logits = prefill(model, ids, mask, share=share_prompt_prefill, capacity=width + max(max_tokens))
    rows = list(range(len(prompts)))  # batch position -> request index, for the live rows
    # prompt + tokens so far, for the repetition penalty; padding reads as the row's last prompt token, so a row is
    # penalised for its own tokens only, whatever it is batched with (generate penalised the pad id as well)
    seen = torch.where(mask.bool(), ids, ids[:, -1:])
    positions = mask.sum(-1, keepdim=True) - 1  # of each row's last token
    tokens: list[list[int]] = [[] for _ in prompts]
    log_probs: list[list[float]] = [[] for _ in prompts]
    finished = [False] * len(prompts)
    while True:
        scores = chain(seen, logits) if chain else logits
        drawn = inverse_cdf(scores, uniforms.draw(len(rows))) if params.temperature > 0 else scores.argmax(-1)
        if params.logprobs:
            picked = (logits / scale).log_softmax(-1).gather(-1, drawn.unsqueeze(-1)).squeeze(-1).tolist()
        live = []
        for j, (r, y) in enumerate(zip(rows, drawn.tolist())):
            tokens[r].append(y)
            if params.logprobs:
                log_probs[r].append(picked[j])
            if y in stops:
                finished[r] = True
            elif len(tokens[r]) < max_tokens[r]:
                live.append(j)
        if not live:
            break
        if len(live) < len(rows):  # finished rows leave the batch, their keys and values with them
            index = torch.tensor(live, device=device)
            cache.reorder_cache(index)
            rows, drawn, mask, positions = [rows[j] for j in live], drawn[index], mask[index], positions[index]
            seen = seen[index] if chain else seen
            uniforms.keep(live)
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        positions = positions + 1
        if chain:
            seen = torch.cat([seen, drawn.unsqueeze(-1)], dim=1)
        logits = model(input_ids=drawn.unsqueeze(-1), attention_mask=mask, position_ids=positions,
                       past_key_values=cache, use_cache=True).logits[:, -1].float()
    return [Completion(token_ids=t, log_probs=lp if params.logprobs else None, finished_by_eos=f)
            for t, lp, f in zip(tokens, log_probs, finished)]
