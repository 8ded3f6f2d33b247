#!/usr/bin/env bash
# Table 3, row "sft": standard SFT (cross-entropy) on the gold SFT data, then evaluation.
#
# Usage: bash recipes/table3/run_sft.sh [hydra overrides for dft_verl.trainer.sft ...]
#   Settings (MODEL_PATH, DATA_DIR, NNODES, N_GPUS_PER_NODE, SFT_LR, ...): see common.sh.
#   DRY_RUN=1 bash recipes/table3/run_sft.sh     # print and config-check the commands, run nothing
set -xeuo pipefail

# common.sh first: it loads PRESET, whose values the defaults below yield to
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ---- user-adjustable ----
# (all settings of this row are shared with the other rows: common.sh)

row=sft
ckpt=$ckpt_root/$row
extra_args=()

train_once "$row" "${sft_launcher[@]}" \
    loss.type=sft \
    "data.train_files=$sft_data" \
    "trainer.experiment_name=$row" \
    "trainer.default_local_dir=$ckpt" \
    "${sft_common_args[@]}" \
    "${extra_args[@]}" "$@"

drop_training_state "$ckpt" huggingface
evaluate_checkpoints "$row" "$ckpt" huggingface
