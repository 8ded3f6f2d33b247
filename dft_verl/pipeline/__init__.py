"""Offline-RL data pipeline: prepare -> sample -> verify -> filter (one module per stage, each with main()).

    python -m dft_verl.pipeline out_dir=DIR prepare.source=DATA sample.model_path=MODEL [overrides...]

Config: dft_verl/config/pipeline/pipeline.yaml. Data contracts: RL / SFT / samples / verified / DPO parquet
as described in each stage's docstring.
"""

STAGES = ("prepare", "sample", "verify", "filter")
