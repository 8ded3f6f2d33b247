"""Hydra overrides that put verl's SFT trainer on the CPU platform.

Used by the demo, tests and laptop runs; the matching environment is ``cpu_env()``.
"""

from __future__ import annotations

import os


def cpu_overrides(dtype: str = "float32") -> list[str]:
    """Overrides for ``dft_verl.trainer.sft`` on CPU: FSDP2 (FSDP1 needs an accelerator), SDPA
    attention (flash-attn is CUDA-only), no torch.compile, in-process data loading.

    dtype: "float32" computes in fp32 (FSDP mixed precision off: CPU bf16 autocast is slower and
    rounds the loss); "bfloat16" keeps verl's default bf16 compute."""
    precision = {"float32": "fp32", "bfloat16": "bf16"}[dtype]
    return [
        f"+engine.mixed_precision.param_dtype={precision}",
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
