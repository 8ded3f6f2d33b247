"""Platforms for verl: a CPU platform (gloo, no accelerator) for laptops and CI."""

from dft_verl.platform.cpu import CPU_PLATFORM, PlatformCPU, init_distributed, use_cpu_platform

__all__ = ["CPU_PLATFORM", "PlatformCPU", "init_distributed", "use_cpu_platform"]
