"""SFT-family trainers: verl's engine SFT trainer with the loss chosen by ``loss.type``."""

from dft_verl.trainer.overrides import cpu_overrides

__all__ = ["cpu_overrides"]
