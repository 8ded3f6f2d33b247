"""``torch.cpu`` plus the memory/RNG calls verl makes on its device module.

verl calls ``get_torch_device().memory_reserved()`` and friends as it would on ``torch.cuda``;
``torch.cpu`` has no such functions. Memory figures here are the process's resident set size
(bytes), so verl's "GPU memory" log lines report host memory on CPU runs.
"""

from __future__ import annotations

import resource

import psutil
import torch
from torch.cpu import *  # noqa: F401,F403  (Stream, Event, current_stream, synchronize, ...)
from torch.cpu import current_device, device_count, is_available, synchronize  # noqa: F401


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def memory_allocated(device=None) -> int:
    return _rss()


def memory_reserved(device=None) -> int:
    return _rss()


def max_memory_allocated(device=None) -> int:
    return _peak_rss()


def max_memory_reserved(device=None) -> int:
    return _peak_rss()


def mem_get_info(device=None) -> tuple[int, int]:
    vm = psutil.virtual_memory()
    return vm.available, vm.total


def reset_peak_memory_stats(device=None) -> None:
    pass


def reset_accumulated_memory_stats(device=None) -> None:
    pass


def empty_cache() -> None:
    pass


def ipc_collect() -> None:
    pass


def get_device_name(device=None) -> str:
    return "CPU"


def get_rng_state(device=None) -> torch.Tensor:
    return torch.get_rng_state()


def set_rng_state(state, device=None) -> None:
    torch.set_rng_state(state)


def manual_seed(seed: int) -> None:
    torch.manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    torch.manual_seed(seed)
