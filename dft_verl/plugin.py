"""verl plugin hook (entry point group ``verl.plugins``).

verl imports this module in every process that imports ``verl`` (drivers, torchrun ranks and
Ray workers), so registrations made here exist wherever verl looks them up. Importing it only
registers; it selects nothing: the CPU platform is used when ``VERL_PLATFORM=cpu``.
"""

from dft_verl.platform import cpu as _cpu  # noqa: F401  (registers the "cpu" platform and engine)
