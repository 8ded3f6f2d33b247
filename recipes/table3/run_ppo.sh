#!/usr/bin/env bash
# Table 3, row "ppo": PPO (GAE with a learned critic) through verl's own trainer
# (python -m verl.trainer.main_ppo), scored by dft_verl/rewards.py:compute_score, then evaluation.
# Config: dft_verl/config/online/ppo.yaml (verl's ppo_trainer + paper values); overrides below.
#
# Usage: bash recipes/table3/run_ppo.sh [hydra overrides for verl.trainer.main_ppo ...]
#   Settings (MODEL_PATH, DATA_DIR, NNODES, N_GPUS_PER_NODE, RL_LR, ...): see common.sh.
#   DRY_RUN=1 bash recipes/table3/run_ppo.sh     # print and config-check the commands, run nothing
set -xeuo pipefail

# common.sh first: it loads PRESET, whose values the defaults below yield to
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ---- user-adjustable ----
# Not in the paper: verl's PPO examples train the critic 10x faster than the actor
PPO_CRITIC_LR=${PPO_CRITIC_LR:-1e-5}

row=ppo
ckpt=$ckpt_root/$row
extra_args=()
if [[ -n "$RL_MICRO_BATCH_SIZE_PER_GPU" ]]; then
    extra_args+=("critic.ppo_micro_batch_size_per_gpu=$RL_MICRO_BATCH_SIZE_PER_GPU")
fi

train_once "$row" "${ppo_launcher[@]}" \
    --config-name=ppo \
    "${rl_common_args[@]}" \
    "critic.optim.lr=$PPO_CRITIC_LR" \
    "critic.optim.lr_warmup_steps_ratio=$RL_WARMUP_RATIO" \
    "trainer.experiment_name=$row" \
    "trainer.default_local_dir=$ckpt" \
    "${extra_args[@]}" "$@"

drop_training_state "$ckpt" actor/huggingface
evaluate_checkpoints "$row" "$ckpt" actor/huggingface
