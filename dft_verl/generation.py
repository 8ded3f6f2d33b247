"""Sampling n responses per chat prompt, with the tokenizer's own chat template (add_generation_prompt=True).

Backends (same call, same output shape ``out[i][j]`` = j-th response to prompt i):
    "hf"    transformers ``generate`` on CPU (or whatever device the model loads on): batched with left
            padding, multinomial sampling at ``temperature`` / ``top_p``. Each batch reseeds torch with
            ``batch_seed(seed, b)``, so a rerun with the same seed and batch_size gives the same text, and
            batch b does not depend on whether batches < b ran (resumable callers may skip them).
    "vllm"  vLLM's offline ``LLM`` in this process (GPU), built once per process and reused. Prompt i gets
            ``SamplingParams(n=n, seed=batch_seed(seed, i))``: repeatable per prompt, whatever the batching.
    "verl"  verl's ``verl.trainer.main_generation_server`` in a subprocess: Ray + standalone vLLM rollout
            replicas over ``n_gpus_per_node * nnodes`` GPUs (multi-GPU / multi-node sampling). It takes no
            seed: repeatability is not promised.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
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
    **backend_kwargs,
) -> list[list[str]]:
    """Sample ``n`` responses (decoded, special tokens removed) to each chat prompt; returns ``out[i][j]``.

    ``batch_size`` counts sequences (prompt x sample) per forward for "hf". ``backend_kwargs`` go to the
    backend: "vllm" takes tensor_parallel_size, gpu_memory_utilization, max_model_len, dtype; "verl" takes
    n_gpus_per_node, nnodes, tensor_parallel_size, gpu_memory_utilization, max_prompt_length, extra_overrides.
    """
    prompts = [list(p) for p in prompts]
    _check_args(prompts, n, temperature, max_new_tokens, backend)
    if not prompts:
        return []
    if backend == "hf":
        return _generate_hf(model_path, prompts, n, temperature, top_p, max_new_tokens, seed, batch_size,
                            progress, **backend_kwargs)
    if backend == "vllm":
        return _generate_vllm(model_path, prompts, n, temperature, top_p, max_new_tokens, seed, progress,
                              **backend_kwargs)
    return _generate_verl_server(model_path, prompts, n, temperature, top_p, max_new_tokens, **backend_kwargs)


# --------------------------------------------------------------------------------------------------------
# hf
# --------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def load_hf(model_path: str, dtype: str = "float32"):
    """(model in eval mode, tokenizer with left padding) from an HF folder or a ``.gguf`` file; cached."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model path {model_path!r} does not exist")
    kwargs = {}
    if path.is_file() and path.suffix == ".gguf":
        kwargs["gguf_file"] = path.name
        path = path.parent
    tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype), **kwargs)
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer at {model_path!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _generate_hf(model_path, prompts, n, temperature, top_p, max_new_tokens, seed, batch_size, progress,
                 dtype: str = "float32") -> list[list[str]]:
    from dft_verl.rollout.sampler import SamplingParams, eos_token_ids, sample

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model, tokenizer = load_hf(str(model_path), dtype)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in chat_texts(tokenizer, prompts)]
    jobs = [i for i in range(len(prompts)) for _ in range(n)]
    out: list[list[str]] = [[] for _ in prompts]
    eos = eos_token_ids(model.generation_config, tokenizer)
    params = SamplingParams(temperature=temperature, top_p=top_p)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="generate", unit="seq")
    for b, s in enumerate(range(0, len(jobs), batch_size)):
        batch = jobs[s : s + batch_size]
        completions = sample(model, [ids[i] for i in batch], [max_new_tokens] * len(batch), params, eos,
                             tokenizer.pad_token_id, generator_seed=batch_seed(seed, b))
        for i, c in zip(batch, completions):
            out[i].append(tokenizer.decode(c.token_ids, skip_special_tokens=True))
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return out


# --------------------------------------------------------------------------------------------------------
# vllm (offline LLM)
# --------------------------------------------------------------------------------------------------------

VLLM_HINT = (
    "backend='vllm' needs vLLM on a CUDA machine (pip install 'dft_verl[gpu]'); "
    "on CPU use backend='hf'"
)


def _import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise RuntimeError(f"vLLM is not installed. {VLLM_HINT}") from e
    return vllm


@functools.lru_cache(maxsize=1)
def _vllm_engine(model_path: str, tensor_parallel_size: int, gpu_memory_utilization: float,
                 max_model_len: int | None, dtype: str):
    """One vLLM engine per process, reused across calls (the sample stage calls once per shard)."""
    vllm = _import_vllm()
    return vllm.LLM(model=model_path, tensor_parallel_size=tensor_parallel_size,
                    gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, dtype=dtype)


def _generate_vllm(model_path, prompts, n, temperature, top_p, max_new_tokens, seed, progress,
                   tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                   max_model_len: int | None = None, dtype: str = "auto") -> list[list[str]]:
    vllm = _import_vllm()
    llm = _vllm_engine(str(model_path), tensor_parallel_size, gpu_memory_utilization, max_model_len, dtype)
    tokenizer = llm.get_tokenizer()
    # Token ids, not text: the rendered template already holds BOS where the model wants one, and vLLM's
    # text path would tokenize with add_special_tokens=True and prepend a second one.
    token_prompts = [{"prompt_token_ids": tokenizer(t, add_special_tokens=False)["input_ids"]}
                     for t in chat_texts(tokenizer, prompts)]
    # One SamplingParams per prompt, each with its own seed: prompt i's n samples depend only on
    # (seed, i), not on how vLLM schedules the batch.
    params = [vllm.SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                  seed=batch_seed(seed, i) if temperature > 0 else None)
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


def _generate_verl_server(model_path, prompts, n, temperature, top_p, max_new_tokens,
                          extra_overrides: Sequence[str] = (), **override_kwargs) -> list[list[str]]:
    import pandas as pd

    _import_vllm()
    if temperature == 0:
        raise ValueError("verl's main_generation_server samples; use backend='vllm' for greedy decoding")
    with tempfile.TemporaryDirectory(prefix="dft_verl_gen_") as tmp:
        src, dst = os.path.join(tmp, "prompts.parquet"), os.path.join(tmp, "responses.parquet")
        pd.DataFrame({"prompt": prompts}).to_parquet(src)
        overrides = verl_generation_overrides(str(model_path), src, dst, n, temperature, top_p, max_new_tokens,
                                              **override_kwargs)
        cmd = [sys.executable, "-m", "verl.trainer.main_generation_server", *overrides, *extra_overrides]
        proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"verl main_generation_server failed (exit {proc.returncode}): {' '.join(cmd)}")
        responses = pd.read_parquet(dst)["responses"].tolist()
    out = [[str(r) for r in row] for row in responses]
    if len(out) != len(prompts) or any(len(r) != n for r in out):
        raise RuntimeError(f"main_generation_server returned {[len(r) for r in out]} for {len(prompts)} x n={n}")
    return out
