"""A CPU platform for verl, registered through ``verl.plugin.platform.PlatformRegistry``.

Select it with ``VERL_PLATFORM=cpu`` (or ``trainer.device=cpu`` with this package's entry points,
which set that variable before verl resolves its platform). With it, verl's engine SFT trainer
runs its FSDP2 engine on CPU tensors with a gloo process group: slow, but the same code path as a
GPU run, which is what debugging a recipe on a laptop needs.

Three things make that work, each through a seam verl offers:
- ``PlatformCPU``: device name "cpu", torch.cpu as the device module, gloo as the collective
  backend, no Ray GPU resource: a rank takes one Ray CPU, or, with ``DFT_VERL_RAY_RANK_RESOURCE=<name>``, one unit
  of the custom resource ``<name>`` that each node declares (``ray start --resources='{"<name>": N}'``), which plays
  the GPU's part: verl's one placement group per node (``STRICT_PACK``, N bundles) then lands on N slots of one
  node, so ``trainer.nnodes=2`` puts ranks on two nodes. Plain CPUs do not: Ray may pack both nodes' groups on one
  node that has the CPUs (measured: 9 of 10 trials on a two-node loopback cluster).
- the FSDP language-model engine is registered for device "cpu" in verl's ``EngineRegistry``
  (verl registers it for "cuda" and "npu" only).
- ``init_distributed()`` starts the default process group with plain ``gloo``: verl's own
  initialiser builds ``"cpu:gloo,<device>:<backend>"``, which torch rejects when both are cpu.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta
from types import ModuleType
from typing import Any, Optional

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

from dft_verl.placement import RANK_RESOURCE_ENV

CPU_PLATFORM = "cpu"


def rank_resource() -> str:
    """The Ray resource one trainer rank holds on the CPU platform: DFT_VERL_RAY_RANK_RESOURCE, else "CPU"."""
    return os.environ.get(RANK_RESOURCE_ENV, "").strip() or "CPU"


def check_rank_resources(ranks: int, cpus_per_rank: int) -> None:
    """Refuse, before verl waits forever on a placement group that cannot be placed, a Ray cluster without free room
    for ``ranks`` trainer ranks: that many rank slots (with a custom rank resource) and ``cpus_per_rank`` Ray CPUs
    each (verl's bundle: ``{"CPU": max_colocate_count, <slot>: 1}``), or ``ranks`` CPUs. Semi-private seam:
    ``ray._private.state.available_resources_per_node`` (tests/test_table3_cluster.py)."""
    import ray

    free = {}
    for node in ray._private.state.available_resources_per_node().values():
        for key, value in node.items():
            free[key] = free.get(key, 0) + value
    resource = rank_resource()
    cpus = ranks * (cpus_per_rank if resource != "CPU" else 1)
    where = "(trainer.nnodes x trainer.n_gpus_per_node)"
    if resource != "CPU" and free.get(resource, 0) < ranks:
        raise ValueError(f"the Ray cluster has {free.get(resource, 0):g} free {resource} for {ranks} trainer ranks "
                         f"{where}: start each node with --resources='{{\"{resource}\": <its ranks>}}' "
                         f"({RANK_RESOURCE_ENV}={resource})")
    if free.get("CPU", 0) < cpus:
        raise ValueError(f"the Ray cluster has {free.get('CPU', 0):g} free CPUs for {ranks} trainer ranks {where}"
                         f"{f' of {cpus_per_rank} Ray CPUs each' if cpus > ranks else ''}: start Ray with more "
                         "--num-cpus (a logical count: workers take turns on the cores) or raise "
                         "ray_kwargs.ray_init.num_cpus")


@PlatformRegistry.register(platform=CPU_PLATFORM)
class PlatformCPU(PlatformBase):
    """verl platform for CPU-only processes (device "cpu", collectives over gloo)."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        from dft_verl.platform import cpu_device

        return cpu_device

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check=False) -> bool:
        # Never auto-detected: a GPU cluster's CPU-only driver must keep resolving to its accelerator.
        return False

    def current_device(self) -> str:
        # fsdp_utils calls ``to_empty(device=current_device())``; "cpu" is the valid answer here.
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index) -> None:
        pass

    def synchronize(self, device_index: Optional[int] = None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def get_device_name(self, device_index: int = 0) -> str:
        # flops_counter looks up a device name to find peak FLOP/s.
        return "CPU"

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def ray_resource_name(self) -> str:
        return rank_resource()

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        """A rank's Ray options: one CPU, and its share of a rank slot when ranks count in a custom resource (the
        bundle verl reserves holds ``max_colocate_count`` CPUs and one slot)."""
        resource = rank_resource()
        if resource == "CPU":
            return {"num_cpus": max(1.0, float(num_gpus))}
        return {"num_cpus": 1, "resources": {resource: float(num_gpus)}}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def rollout_env_vars(self) -> dict[str, str]:
        return {"VLLM_TARGET_DEVICE": "cpu"}

    def get_collective_module(self) -> Any:
        return None

    def cudart(self) -> Any:
        return None


def _register_cpu_engines() -> None:
    """Register the FSDP engines (language and value model, ``dft_verl.platform.engines``) for device "cpu"."""
    from verl.workers.engine.base import EngineRegistry

    from dft_verl.platform.engines import CPUFSDPEngineWithLMHead, CPUFSDPEngineWithValueHead

    for model_type, engine_cls in (("language_model", CPUFSDPEngineWithLMHead), ("value_model", CPUFSDPEngineWithValueHead)):
        registry = EngineRegistry._engines.get(model_type, {})
        if all(CPU_PLATFORM in registry.get(b, {}) for b in ("fsdp", "fsdp2")):
            continue
        EngineRegistry.register(model_type=model_type, backend=["fsdp", "fsdp2"], device=[CPU_PLATFORM])(engine_cls)


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (x86 flags avx512_bf16 or amx_bf16 in /proc/cpuinfo): where it does
    not, torch emulates bf16 matmuls and fp32 is faster."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_cpu_platform() -> bool:
    """True when verl is (or will be) running on this CPU platform."""
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == CPU_PLATFORM


def init_distributed(timeout_s: int = 3600) -> tuple[int, int, int]:
    """Start torch.distributed for a torchrun-launched trainer; return (local_rank, rank, world_size).

    On the CPU platform the process group is plain gloo and the FSDP engine is registered for
    "cpu"; otherwise this defers to verl's ``initialize_global_process_group`` unchanged.
    """
    if not use_cpu_platform():
        from verl.utils.distributed import initialize_global_process_group

        return initialize_global_process_group()
    _register_cpu_engines()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
    return int(os.environ.get("LOCAL_RANK", 0)), torch.distributed.get_rank(), torch.distributed.get_world_size()


def init_ray_worker_distributed() -> None:
    """In a verl Ray worker on the CPU platform: register the CPU engines and start a plain gloo group
    from the RANK/WORLD_SIZE verl set (verl then skips its own initialiser). Elsewhere: nothing."""
    if not use_cpu_platform():
        return
    _register_cpu_engines()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend="gloo", rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"])
        )
