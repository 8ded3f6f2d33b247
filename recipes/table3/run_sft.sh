#!/usr/bin/env bash
# Table 3, row "sft": standard SFT (cross-entropy) on the gold SFT data (DATA_DIR/prepare/sft.parquet), then evaluation.
#
# Usage: bash recipes/table3/run_sft.sh [hydra overrides for dft_verl.trainer.sft ...]
#   DRY_RUN=1 bash recipes/table3/run_sft.sh    # print every command and check its config against verl; run nothing
#   Every setting (MODEL_PATH, RUNS_DIR, PRESET, NNODES, RAY_ADDRESS, ...): python -m dft_verl.table3 settings
#   The flat command, every override visible: python -m dft_verl.table3 print sft
set -euo pipefail

# ---- user-adjustable (environment variables; empty = the PRESET's value) ----
export SFT_LR=${SFT_LR:-}                  # learning rate (paper: 5e-5)
export SFT_BATCH_SIZE=${SFT_BATCH_SIZE:-}          # sequences per step (paper: 256)
export SFT_MAX_LENGTH=${SFT_MAX_LENGTH:-}          # tokens per sequence (paper: 2048)
export SFT_EPOCHS=${SFT_EPOCHS:-}                  # epochs (paper: 1)

source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
"$PYTHON" -m dft_verl.table3 run sft -- "$@"
