#!/usr/bin/env bash
# Table 3, row "iw_sft_offline": importance-weighted SFT (iw-SFT) on the correct self-samples, then evaluation.
# Step 1 adds the reference policy's per-token log-probs to the data (python -m
# dft_verl.trainer.ref_logprobs, tokenised exactly as training tokenises it); step 2 trains with
# loss.type=iw_sft, which reads them (dft_verl/losses.py states the weight and its clipping).
#
# Usage: bash recipes/table3/run_iw_sft_offline.sh [hydra overrides for dft_verl.trainer.sft ...]
#   Settings (MODEL_PATH, DATA_DIR, NNODES, N_GPUS_PER_NODE, SFT_LR, IW_SFT_*, ...): see common.sh.
#   DRY_RUN=1 bash recipes/table3/run_iw_sft_offline.sh     # print and config-check the commands, run nothing
set -xeuo pipefail

# common.sh first: it loads PRESET, whose values the defaults below yield to
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ---- user-adjustable ----
# (shared with the other rows: common.sh, including IW_SFT_REF_MODEL and IW_SFT_CLIP)

row=iw_sft_offline
ckpt=$ckpt_root/$row
ref_model=${IW_SFT_REF_MODEL:-$model_path}
ref_data=$data_dir/ref_logprobs/rft.parquet
extra_args=()

# ref_logprobs skips its work when ref_data exists (delete it after changing the reference model).
node0_writes "$ref_data" "$runs_dir/$row/ref_logprobs.log" "${gpu1_python[@]}" -m dft_verl.trainer.ref_logprobs \
    --model "$ref_model" --data "$rft_data" --out "$ref_data" --max-length "$SFT_MAX_LENGTH"

train_once "$row" "${sft_launcher[@]}" \
    loss.type=iw_sft \
    "loss.iw_clip=$IW_SFT_CLIP" \
    "data.train_files=$ref_data" \
    "trainer.experiment_name=$row" \
    "trainer.default_local_dir=$ckpt" \
    "${sft_common_args[@]}" \
    "${extra_args[@]}" "$@"

drop_training_state "$ckpt" huggingface
evaluate_checkpoints "$row" "$ckpt" huggingface
