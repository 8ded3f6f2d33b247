#!/usr/bin/env bash
# Table 3, row "iw_sft_offline": iw-SFT on the base model's correct samples (the RFT data), then evaluation.
# Step 1 adds the reference policy's per-token log-probs to the data (dft_verl.trainer.ref_logprobs, tokenised as
# training tokenises it); step 2 trains with loss.type=iw_sft (dft_verl/losses.py states the weight and its clip).
#
# Usage: bash recipes/table3/run_iw_sft_offline.sh [hydra overrides for dft_verl.trainer.sft ...]
#   DRY_RUN=1 bash recipes/table3/run_iw_sft_offline.sh    # print every command and check its config against verl; run nothing
#   Every setting (MODEL_PATH, RUNS_DIR, PRESET, NNODES, RAY_ADDRESS, ...): python -m dft_verl.table3 settings
#   The flat command, every override visible: python -m dft_verl.table3 print iw_sft_offline
set -euo pipefail

# ---- user-adjustable (environment variables; empty = the PRESET's value) ----
export SFT_LR=${SFT_LR:-}                  # learning rate (paper: 5e-5)
export SFT_BATCH_SIZE=${SFT_BATCH_SIZE:-}          # sequences per step (paper: 256)
export SFT_MAX_LENGTH=${SFT_MAX_LENGTH:-}          # tokens per sequence (paper: 2048)
export SFT_EPOCHS=${SFT_EPOCHS:-}                  # epochs (paper: 1)
export IW_SFT_REF_MODEL=${IW_SFT_REF_MODEL:-}  # reference policy of the importance weight (empty: MODEL_PATH)
export IW_SFT_CLIP=${IW_SFT_CLIP:-}            # clip range of the weight ([0.5,2.0])

source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
"$PYTHON" -m dft_verl.table3 run iw_sft_offline -- "$@"
