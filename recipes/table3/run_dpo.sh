#!/usr/bin/env bash
# Table 3, row "dpo": DPO on (correct, wrong) pairs of the base model's own samples, then evaluation.
# Step 1 stores the reference policy's log-probs of every pair (dft_verl.dpo.ref_logprobs); step 2 trains with
# dft_verl.dpo.train (config dft_verl/config/dpo.yaml: verl's engine SFT trainer + the DPO loss). With RAY_ADDRESS
# it is dft_verl.dpo.train_ray (verl's Ray SFT trainer + the same loss): ranks on every one of NNODES nodes.
#
# Usage: bash recipes/table3/run_dpo.sh [hydra overrides for dft_verl.dpo.train ...]
#   DRY_RUN=1 bash recipes/table3/run_dpo.sh    # print every command and check its config against verl; run nothing
#   Every setting (MODEL_PATH, RUNS_DIR, PRESET, NNODES, RAY_ADDRESS, ...): python -m dft_verl.table3 settings
#   The flat command, every override visible: python -m dft_verl.table3 print dpo
set -euo pipefail

# ---- user-adjustable (environment variables; empty = the PRESET's value) ----
export DPO_LR=${DPO_LR:-}                  # learning rate (paper: 1e-6)
export DPO_BATCH_SIZE=${DPO_BATCH_SIZE:-}  # pairs per step (paper: 128)
export DPO_WARMUP_RATIO=${DPO_WARMUP_RATIO:-}  # (paper: 0.05)
export DPO_BETA=${DPO_BETA:-}              # inverse temperature of the implicit reward (not in the paper: 0.1)

source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
"$PYTHON" -m dft_verl.table3 run dpo -- "$@"
