"""Hydra overrides that put verl's SFT trainer on the CPU platform.

Used by the demo, tests and laptop runs; the matching environment is ``cpu_env()``.
"""

from __future__ import annotations

import os


def cpu_overrides(dtype: str = "float32") -> list[str]:
    """Overrides for ``dft_verl.trainer.sft`` on CPU: FSDP2 (FSDP1 needs an accelerator), SDPA
    attention (flash-attn is CUDA-only), no torch.compile, in-process data loading.

    dtype: the compute dtype (the Table-3 setting TRAIN_DTYPE). "float32": fp32 end to end. "bfloat16": FSDP2 mixed
    precision as verl runs it on GPUs: bf16 parameters in forward and backward (under bf16 autocast; on CPU verl
    takes the log-softmax of the bf16 logits in bf16, its fp32 cross-entropy kernel being flash-attn's), fp32 master
    weights (``engine.model_dtype``), optimiser state and gradient reduction. One SmolLM2 forward and backward
    (4 x 200 tokens, one thread, avx512_bf16) took 4.7-5.4 s in bf16 against 10.9 s in fp32;
    bench/train_dtype.py compares whole rows."""
    precision = {"float32": "fp32", "bfloat16": "bf16"}[dtype]
    # verl reduces gradients in fp32 by default; said explicitly where the parameters are bf16
    reduce = ["+engine.mixed_precision.reduce_dtype=fp32"] if precision == "bf16" else []
    return [
        f"+engine.mixed_precision.param_dtype={precision}",
        *reduce,
        "trainer.device=cpu",
        "engine.strategy=fsdp2",
        f"engine.dtype={dtype}",
        "engine.use_torch_compile=False",
        "+model.override_config.attn_implementation=sdpa",
        "model.enable_gradient_checkpointing=False",
        "data.num_workers=0",
    ]


def cpu_env(base: dict | None = None) -> dict[str, str]:
    """Environment for a CPU trainer process: CPU platform, no hub, no wandb, one thread per rank."""
    env = dict(os.environ if base is None else base)
    env.update(
        VERL_PLATFORM="cpu",
        HF_HUB_OFFLINE="1",
        WANDB_MODE="disabled",
        TOKENIZERS_PARALLELISM="false",
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    return env
