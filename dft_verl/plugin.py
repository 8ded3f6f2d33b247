"""verl plugin hook (entry point group ``verl.plugins``).

verl imports this module in every process that imports ``verl`` (drivers, torchrun ranks and
Ray workers), so registrations made here exist wherever verl looks them up. It selects nothing.

- always: the "cpu" platform (``dft_verl.platform.cpu``; a cheap import), used when ``VERL_PLATFORM=cpu``; the
  OmegaConf resolver ``${dft_verl_config:<file>}``, the absolute path of a file under ``dft_verl/config`` (verl
  takes some settings as file paths, e.g. ``rollout.router_config_path``, which a packaged config cannot spell).
- in processes running with ``VERL_PLATFORM=cpu`` only (``register_cpu_mode``): the ``hf`` rollout
  backend (``dft_verl.rollout``) and the ``cpu_sync`` trainer mode (``dft_verl.trainer.ppo_cpu``).
  Their imports pull in verl's rollout and trainer modules (~1-2 s per process), which GPU processes
  never pay for. The CPU settings (``+platform=cpu``) put ``VERL_PLATFORM=cpu`` into every Ray worker.

verl logs a plugin that fails to import at debug level only; tests/test_rollout_plugin.py asserts
the registrations in a fresh process.
"""

from pathlib import Path

from omegaconf import OmegaConf

from dft_verl.platform import cpu as _cpu

CONFIG_DIR = Path(__file__).resolve().parent / "config"


def register_cpu_mode() -> None:
    """Register the hf rollout backend and the cpu_sync trainer mode with verl (idempotent)."""
    from dft_verl import rollout
    from dft_verl.trainer import ppo_cpu  # noqa: F401  (register_trainer("cpu_sync") at import)

    rollout.register()


def config_path(name: str) -> str:
    """Absolute path of ``dft_verl/config/<name>`` (the ``dft_verl_config`` resolver); the file must exist."""
    path = CONFIG_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"${{dft_verl_config:{name}}}: no file {path}")
    return str(path)


if not OmegaConf.has_resolver("dft_verl_config"):
    OmegaConf.register_new_resolver("dft_verl_config", config_path)
if _cpu.use_cpu_platform():
    register_cpu_mode()
