"""The rollout server: one transformers model behind verl's token-in/token-out server API (a Ray actor).

verl's agent loop calls ``generate(prompt_ids, sampling_params, request_id)`` concurrently, one call
per sample; the server queues them, waits ``batch_wait_s`` for siblings, groups requests with equal
sampling settings, and runs each group through ``sampler.sample`` in batches of at most
``max_batch_size`` (one decoding loop per batch, each distinct prompt prefilled once, in a worker thread so the
actor keeps accepting requests). Weights arrive from the FSDP actor after every step (``begin_weight_update``,
``load_weights`` per bucket, ``finish_weight_update``); generation waits while they load.

With ``actor_rollout_ref.rollout.full_determinism`` (verl's switch; the CPU platform sets it) each request samples
from its own random stream (sampler.Uniforms) seeded with ``request_seed``: a hash of rollout.seed, the
global step, the request id verl gives under that switch (``det-<priority>``; verl 0.9.1's cpu_sync/v1 agent loop
passes no priority, so every id is ``det-0``), the prompt's tokens, and how many requests with that id and prompt
came before it in the step (the k-th of a question's n samples gets stream k). So a rerun of the same config samples
the same responses for each question, whatever order the requests arrive in; which requests share a batch matters
only through float rounding, which differs between batch shapes and now and then moves a draw (measured rates in
docs/recipes.md); which of a question's n sessions receives which response may change, as may the order of the
batch verl assembles. Without
the switch, one stream seeded with ``rollout.seed`` serves the batches in the order they form, which depends on
timing. The CPU platform routes requests to replicas by prompt (``dft_verl.rollout.router``), so a question's n
samples meet on one server, whose counter then numbers them.

Options (``actor_rollout_ref.rollout.engine_kwargs.hf``): ``max_batch_size`` (64 sequences),
``batch_wait_s`` (0.05 s), ``num_threads`` (torch intra-op threads; default: torch's).
On CPU there is no device memory to give back, so sleep/wake/KV-cache calls succeed and do nothing,
and abort has nothing to abort: a generate call always runs to completion.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, NamedTuple, Optional

import torch

from dft_verl.attention import for_inference
from dft_verl.placement import placement_line
from dft_verl.rollout import stable_hash
from dft_verl.rollout.sampler import SamplingParams, eos_token_ids, sample

logger = logging.getLogger(__name__)

DEFAULT_OPTIONS = {"max_batch_size": 64, "batch_wait_s": 0.05, "num_threads": None}
_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty", "logprobs", "ignore_eos", "stop_token_ids")


def server_options(rollout_config) -> dict[str, Any]:
    """The ``engine_kwargs.hf`` block merged over DEFAULT_OPTIONS; unknown keys are an error."""
    given = dict((rollout_config.engine_kwargs or {}).get("hf", None) or {})
    unknown = set(given) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown actor_rollout_ref.rollout.engine_kwargs.hf option(s) {sorted(unknown)}; "
                         f"supported: {sorted(DEFAULT_OPTIONS)}")
    options = {**DEFAULT_OPTIONS, **{k: v for k, v in given.items() if v is not None}}
    if int(options["max_batch_size"]) < 1 or float(options["batch_wait_s"]) < 0:
        raise ValueError(f"engine_kwargs.hf: need max_batch_size >= 1 and batch_wait_s >= 0, got {given}")
    return options


def request_seed(seed: int, global_steps: Optional[int], request_id: str, prompt: list[int], occurrence: int) -> int:
    """A request's sampling seed in [0, 2**63): a hash of (rollout seed, global step, request id, prompt token ids,
    the number of earlier requests with this id and prompt in the step)."""
    return stable_hash(f"{int(seed)}:{global_steps}:{request_id}:{occurrence}:" + ",".join(map(str, prompt))) % (2**63)


class _Request(NamedTuple):
    """A queued generate call: prompt token ids, token budget, sampling settings, its own seed (full_determinism;
    else None), and the future its caller awaits."""

    prompt: list[int]
    limit: int
    params: SamplingParams
    seed: Optional[int]
    done: asyncio.Future


def check_supported(model_config) -> None:
    """Fail at start-up for what the hf backend cannot do, rather than train against stale weights.

    model_config: verl's ``HFModelConfig`` (``actor_rollout_ref.model``)."""
    lora = dict(model_config.lora or {})
    lora_rank = int(lora.get("rank", 0) or model_config.lora_rank or 0)
    if lora_rank > 0 and not lora.get("merge", False):
        raise NotImplementedError(
            "the hf rollout backend syncs full weights only: with LoRA set actor_rollout_ref.model.lora.merge=True "
            "(adapters are merged into the weights before each sync)")
    hf_config = model_config.hf_config
    if any(hasattr(hf_config, key) for key in ("vision_config", "audio_config")):
        raise NotImplementedError(f"the hf rollout backend is text-only; {type(hf_config).__name__} is multimodal")


class HFRolloutServer:
    """One transformers causal LM serving verl's ``generate`` (run as a Ray actor by ``HFReplica``)."""

    def __init__(self, config, model_config, replica_rank: int):
        from transformers import AutoModelForCausalLM
        from verl.utils.config import omega_conf_to_dataclass
        from verl.utils.torch_dtypes import PrecisionType
        from verl.workers.config import HFModelConfig, RolloutConfig

        self.config: RolloutConfig = omega_conf_to_dataclass(config, dataclass_type=RolloutConfig)
        self.model_config: HFModelConfig = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        check_supported(self.model_config)
        self.replica_rank = replica_rank
        print(placement_line(f"rollout replica {replica_rank}"), flush=True)
        self.options = server_options(self.config)
        if self.options["num_threads"]:
            torch.set_num_threads(int(self.options["num_threads"]))
        try:
            dtype = PrecisionType.to_dtype(self.config.dtype)
        except RuntimeError:
            raise ValueError(f"actor_rollout_ref.rollout.dtype={self.config.dtype!r}: use float32, bfloat16 or float16") from None
        hf_config = self.model_config.hf_config
        attn = str((self.model_config.override_config or {}).get("attn_implementation", "sdpa"))
        # flash-attn kernels are CUDA-only; sdpa becomes gqa_sdpa (dft_verl.attention: no key/value copies)
        attn = for_inference("sdpa" if attn.startswith("flash") else attn)
        if "dummy" in self.config.load_format:  # verl's default: real weights arrive with the first sync
            self.model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation=attn)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(
                self.model_config.local_path, config=hf_config, dtype=dtype, attn_implementation=attn,
                trust_remote_code=self.model_config.trust_remote_code)
        self.model.eval()
        # rollout.seed (vLLM's sampling seed) seeds this server's sampling RNG: with the same requests in the same
        # order, a rerun samples the same responses; replicas differ by their rank
        torch.manual_seed(int(self.config.seed) + replica_rank)
        self.eos_ids = eos_token_ids(self.model_config.generation_config, self.model_config.tokenizer, hf_config)
        pad = getattr(self.model_config.tokenizer, "pad_token_id", None)
        self.pad_id = int(pad if pad is not None else self.eos_ids[0])
        self.max_model_len = int(self.config.max_model_len or hf_config.max_position_embeddings)
        self.global_steps: Optional[int] = None
        self._seen_step: Optional[int] = None  # full_determinism: requests so far per (id, prompt) in this step
        self._seen: dict[tuple, int] = {}
        self._queue: Optional[asyncio.Queue] = None
        self._lock: Optional[asyncio.Lock] = None
        self._params = dict(self.model.state_dict())
        self._loaded: set[str] = set()
        self._warned: set[str] = set()
        self.stats = {"requests": 0, "batches": 0, "generated_tokens": 0, "generate_s": 0.0, "weight_syncs": 0}

    async def ready(self) -> bool:
        return True

    # ---- generation ------------------------------------------------------------------------------
    def max_tokens(self, prompt_len: int, sampling_params: dict) -> int:
        """vLLM's rule: the request's max_tokens (or max_new_tokens), else the configured response
        budget, clamped to [1, max_model_len - prompt_len]; a prompt with no room left is an error."""
        room = self.max_model_len - prompt_len
        if room < 1:
            raise ValueError(f"prompt of {prompt_len} tokens leaves no room to generate within "
                             f"max_model_len={self.max_model_len}")
        if "max_tokens" in sampling_params:
            n = sampling_params.pop("max_tokens")
        elif "max_new_tokens" in sampling_params:
            n = sampling_params.pop("max_new_tokens")
        else:
            n = min(self.config.response_length, self.config.prompt_length + self.config.response_length - prompt_len)
        return max(1, min(int(n), room))

    def sampling(self, sampling_params: dict) -> SamplingParams:
        unknown = set(sampling_params) - set(_SAMPLING_KEYS) - self._warned
        if unknown:
            logger.warning("hf rollout: ignoring sampling parameter(s) %s (supported: %s)", sorted(unknown),
                           list(_SAMPLING_KEYS))
            self._warned |= unknown
        params = {k: sampling_params[k] for k in _SAMPLING_KEYS if sampling_params.get(k) is not None}
        if "stop_token_ids" in params:
            params["stop_token_ids"] = tuple(int(t) for t in params["stop_token_ids"])
        params.setdefault("repetition_penalty", self.config.repetition_penalty)
        params.setdefault("ignore_eos", self.config.ignore_eos)
        return SamplingParams(**params)

    async def generate(self, prompt_ids, sampling_params: dict, request_id: str, image_data=None,
                       video_data=None, audio_data=None, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        if image_data is not None or video_data is not None or audio_data is not None:
            raise NotImplementedError("the hf rollout backend generates from text only (no image/video/audio input)")
        self._start()
        sp = dict(sampling_params)
        prompt = [int(t) for t in prompt_ids]
        limit = self.max_tokens(len(prompt), sp)
        seed = self._request_seed(request_id, prompt) if self.config.full_determinism else None
        done = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(prompt, limit, self.sampling(sp), seed, done))
        completion = await done
        return TokenOutput(token_ids=completion.token_ids, log_probs=completion.log_probs, stop_reason="completed",
                           num_preempted=0, extra_fields={"global_steps": self.global_steps})

    def _request_seed(self, request_id: str, prompt: list[int]) -> int:
        """request_seed for this request; counts the step's requests per (id, prompt) (the event loop's one thread
        runs this, so the count needs no lock)."""
        if self._seen_step != self.global_steps:
            self._seen_step, self._seen = self.global_steps, {}
        key = (request_id, tuple(prompt))
        occurrence = self._seen.get(key, 0)
        self._seen[key] = occurrence + 1
        return request_seed(self.config.seed, self.global_steps, request_id, prompt, occurrence)

    def _start(self) -> None:
        if self._queue is None:
            self._queue, self._lock = asyncio.Queue(), asyncio.Lock()
            asyncio.get_running_loop().create_task(self._batch_loop())

    async def _batch_loop(self) -> None:
        while True:
            pending = [await self._queue.get()]
            await asyncio.sleep(self.options["batch_wait_s"])  # let sibling requests arrive
            while not self._queue.empty():
                pending.append(self._queue.get_nowait())
            groups: dict[SamplingParams, list[_Request]] = {}
            for item in pending:
                groups.setdefault(item.params, []).append(item)
            for params, items in groups.items():
                items.sort(key=lambda item: len(item.prompt))  # similar lengths share a batch: less padding
                size = int(self.options["max_batch_size"])
                for start in range(0, len(items), size):
                    await self._run_batch(params, items[start : start + size])

    async def _run_batch(self, params: SamplingParams, items: list[_Request]) -> None:
        try:
            async with self._lock:
                t0 = time.perf_counter()
                seeds = [i.seed for i in items]
                completions = await asyncio.to_thread(
                    sample, self.model, [i.prompt for i in items], [i.limit for i in items], params, self.eos_ids,
                    self.pad_id, row_seeds=None if None in seeds else seeds, share_prompt_prefill=True)
                self.stats["generate_s"] += time.perf_counter() - t0
            self.stats["batches"] += 1
            self.stats["requests"] += len(items)
            self.stats["generated_tokens"] += sum(len(c.token_ids) for c in completions)
            for item, completion in zip(items, completions):
                item.done.set_result(completion)
        except Exception as error:  # noqa: BLE001 - every waiting caller gets the error, the loop lives on
            for item in items:
                if not item.done.done():
                    item.done.set_exception(error)

    # ---- weights -----------------------------------------------------------------------------------
    async def begin_weight_update(self) -> None:
        self._start()
        await self._lock.acquire()  # no generation while weights are half-loaded
        self._loaded = set()

    async def load_weights(self, named_tensors: dict) -> int:
        """Copy one bucket of HF-named tensors into the model (any dtype; converted in place)."""
        unknown = [name for name in named_tensors if name not in self._params]
        if unknown:
            raise KeyError(f"hf rollout weight sync: unknown parameter(s) {unknown[:5]} for this model")
        for name, tensor in named_tensors.items():
            self._params[name].copy_(tensor)
        self._loaded.update(named_tensors)
        return len(named_tensors)

    async def finish_weight_update(self, global_steps: Optional[int] = None) -> dict:
        try:
            tied = {"lm_head.weight"} if getattr(self.model.config, "tie_word_embeddings", False) else set()
            missing = sorted(set(self._params) - self._loaded - tied - self._buffer_names())
            if missing:
                raise RuntimeError(f"hf rollout weight sync: {len(missing)} parameter(s) never arrived, e.g. {missing[:5]}")
            if global_steps is not None:
                self.global_steps = global_steps
            self.stats["weight_syncs"] += 1
            return {"tensors": len(self._loaded)}
        finally:
            self._lock.release()

    def _buffer_names(self) -> set[str]:
        return {name for name, _ in self.model.named_buffers()}

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    async def get_stats(self) -> dict:
        return dict(self.stats)

    # ---- lifecycle: nothing to free or restore on CPU ------------------------------------------------
    async def sleep(self) -> None:
        pass

    async def wake_up(self, tags: Optional[list[str]] = None) -> None:
        pass

    async def clear_kv_cache(self) -> None:
        pass

    async def release_kv_cache(self) -> None:
        pass

    async def resume_kv_cache(self) -> None:
        pass

    async def wait_for_requests_to_drain(self) -> None:
        pass

    async def abort_all_requests(self, reject_request: bool = False, **kwargs) -> dict:
        return {"aborted_count": 0, "request_ids": []}

    async def abort_request(self, request_id: str, **kwargs) -> dict:
        return {"aborted": False, "request_id": request_id}

    async def resume_generation(self) -> None:
        pass

    async def start_profile(self, **kwargs) -> None:
        pass

    async def stop_profile(self) -> None:
        pass
