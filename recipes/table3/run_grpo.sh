#!/usr/bin/env bash
# Table 3, row "grpo": GRPO through verl's own trainer (python -m verl.trainer.main_ppo), scored by
# dft_verl/rewards.py:compute_score (the judge of the offline pipeline and of eval), then evaluation.
# Config: dft_verl/config/online/grpo.yaml (verl's ppo_trainer + paper values); overrides below.
#
# Usage: bash recipes/table3/run_grpo.sh [hydra overrides for verl.trainer.main_ppo ...]
#   Settings (MODEL_PATH, DATA_DIR, NNODES, N_GPUS_PER_NODE, RL_LR, ...): see common.sh.
#   e.g. GRPO_N=8 bash recipes/table3/run_grpo.sh actor_rollout_ref.rollout.gpu_memory_utilization=0.7
#   DRY_RUN=1 bash recipes/table3/run_grpo.sh    # print and config-check the commands, run nothing
set -xeuo pipefail

# common.sh first: it loads PRESET, whose values the defaults below yield to
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ---- user-adjustable ----
# Paper: GRPO group size 4
GRPO_N=${GRPO_N:-4}
# Not in the paper: verl's GRPO example KL-loss coefficient (0 disables the reference model)
GRPO_KL_COEF=${GRPO_KL_COEF:-0.001}

row=grpo
ckpt=$ckpt_root/$row
extra_args=()
if [[ "$GRPO_KL_COEF" == 0 ]]; then
    extra_args+=(actor_rollout_ref.actor.use_kl_loss=false)
fi

train_once "$row" "${ppo_launcher[@]}" \
    --config-name=grpo \
    "${rl_common_args[@]}" \
    "actor_rollout_ref.rollout.n=$GRPO_N" \
    "actor_rollout_ref.actor.kl_loss_coef=$GRPO_KL_COEF" \
    "trainer.experiment_name=$row" \
    "trainer.default_local_dir=$ckpt" \
    "${extra_args[@]}" "$@"

drop_training_state "$ckpt" actor/huggingface
evaluate_checkpoints "$row" "$ckpt" actor/huggingface
