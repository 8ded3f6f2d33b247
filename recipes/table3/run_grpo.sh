#!/usr/bin/env bash
# Table 3, row "grpo": GRPO through verl's own trainer (verl.trainer.main_ppo, config
# dft_verl/config/online/grpo.yaml), scored by dft_verl/rewards.py:compute_score, then evaluation.
#   e.g. GRPO_N=8 bash recipes/table3/run_grpo.sh actor_rollout_ref.rollout.gpu_memory_utilization=0.7
#
# Usage: bash recipes/table3/run_grpo.sh [hydra overrides for verl.trainer.main_ppo ...]
#   DRY_RUN=1 bash recipes/table3/run_grpo.sh    # print every command and check its config against verl; run nothing
#   Every setting (MODEL_PATH, RUNS_DIR, PRESET, NNODES, RAY_ADDRESS, ...): python -m dft_verl.table3 settings
#   The flat command, every override visible: python -m dft_verl.table3 print grpo
set -euo pipefail

# ---- user-adjustable (environment variables; empty = the PRESET's value) ----
export GRPO_N=${GRPO_N:-}                  # group size (paper: 4)
export GRPO_KL_COEF=${GRPO_KL_COEF:-}      # KL-loss coefficient (verl's example: 0.001; 0 drops the reference model)
export RL_LR=${RL_LR:-}                    # actor learning rate (paper: 1e-6)
export RL_BATCH_SIZE=${RL_BATCH_SIZE:-}    # prompts per step (paper: 256)

source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
"$PYTHON" -m dft_verl.table3 run grpo -- "$@"
