"""dft_verl: Dynamic Fine-Tuning (DFT) for verl.

DFT rescales the SFT token loss by the (detached) probability of the target token,
``L_t = sg(p_t) * (-log p_t)``, so its gradient is ``-grad p_t`` instead of SFT's
``-grad p_t / p_t``. The package adds this loss family to verl's engine SFT trainer, a CPU
platform for verl, the offline-RL data pipeline (sample, verify, filter), evaluation and the
Table-3 report.
"""

__version__ = "0.1.0"

# The verl release whose seams (SFTTrainer._build_engine, TrainingWorker.set_loss_fn, the
# tensordict keys sft_loss reads, PlatformRegistry, EngineRegistry) this package is built on.
VERL_VERSION = "0.9.1"
