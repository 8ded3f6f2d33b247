#!/usr/bin/env bash
# Table 3, row "ppo": PPO (GAE with a learned critic) through verl's own trainer (verl.trainer.main_ppo,
# config dft_verl/config/online/ppo.yaml), scored by dft_verl/rewards.py:compute_score, then evaluation.
#
# Usage: bash recipes/table3/run_ppo.sh [hydra overrides for verl.trainer.main_ppo ...]
#   DRY_RUN=1 bash recipes/table3/run_ppo.sh    # print every command and check its config against verl; run nothing
#   Every setting (MODEL_PATH, RUNS_DIR, PRESET, NNODES, RAY_ADDRESS, ...): python -m dft_verl.table3 settings
#   The flat command, every override visible: python -m dft_verl.table3 print ppo
set -euo pipefail

# ---- user-adjustable (environment variables; empty = the PRESET's value) ----
export PPO_CRITIC_LR=${PPO_CRITIC_LR:-}    # critic learning rate (verl's examples: 1e-5, 10x the actor's)
export RL_LR=${RL_LR:-}                    # actor learning rate (paper: 1e-6)
export RL_BATCH_SIZE=${RL_BATCH_SIZE:-}    # prompts per step (paper: 256)

source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
"$PYTHON" -m dft_verl.table3 run ppo -- "$@"
