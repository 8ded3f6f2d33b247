#!/usr/bin/env bash
# Table 3, row "dpo": DPO on (correct, wrong) pairs of the base model's own samples, then evaluation.
# Step 1 stores the reference policy's log-probs of every pair (python -m dft_verl.dpo.ref_logprobs,
# tokenised as training tokenises it); step 2 trains with dft_verl.dpo.train (config
# dft_verl/config/dpo.yaml: verl's engine SFT trainer + the DPO loss).
#
# Usage: bash recipes/table3/run_dpo.sh [hydra overrides for dft_verl.dpo.train ...]
#   Settings (MODEL_PATH, DATA_DIR, NNODES, N_GPUS_PER_NODE, DPO_LR, ...): see common.sh.
#   With RAY_ADDRESS the training is one `ray job submit` of torchrun on one node (NNODES must be 1).
#   DRY_RUN=1 bash recipes/table3/run_dpo.sh     # print and config-check the commands, run nothing
set -xeuo pipefail

# common.sh first: it loads PRESET, whose values the defaults below yield to
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ---- user-adjustable ----
# Inverse temperature of the implicit reward (not in the paper: the usual 0.1)
DPO_BETA=${DPO_BETA:-0.1}

row=dpo
ckpt=$ckpt_root/$row
ref_data=$data_dir/ref_logprobs/dpo.parquet
extra_args=()

if [[ -n "$RAY_ADDRESS" && "$NNODES" != 1 ]]; then
    echo "run_dpo.sh: with RAY_ADDRESS the DPO trainer runs on one node; got NNODES=$NNODES" >&2
    exit 2
fi

# ref_logprobs skips its work when ref_data exists (delete it after changing the reference model).
node0_writes "$ref_data" "$runs_dir/$row/ref_logprobs.log" "${gpu1_python[@]}" -m dft_verl.dpo.ref_logprobs \
    --model "$model_path" --data "$dpo_data" --out "$ref_data" \
    --max-length "$DPO_MAX_LENGTH" --truncation right

train_once "$row" "${dpo_launcher[@]}" \
    "model.path=$model_path" \
    "data.train_files=$ref_data" \
    "data.max_length=$DPO_MAX_LENGTH" \
    data.truncation=right \
    "data.train_batch_size=$DPO_BATCH_SIZE" \
    "optim.lr=$DPO_LR" \
    "optim.lr_warmup_steps_ratio=$DPO_WARMUP_RATIO" \
    "dpo.beta=$DPO_BETA" \
    "trainer.total_epochs=$DPO_EPOCHS" \
    "trainer.nnodes=$NNODES" \
    "trainer.n_gpus_per_node=$N_GPUS_PER_NODE" \
    trainer.project_name=dft_verl_table3 \
    "trainer.experiment_name=$row" \
    "trainer.default_local_dir=$ckpt" \
    "checkpoint.save_contents=[model,optimizer,extra,hf_model]" \
    "${save_args[@]}" \
    "${train_seed_args[@]}" \
    "${engine_args[@]}" \
    "${extra_args[@]}" "$@"

drop_training_state "$ckpt" huggingface
evaluate_checkpoints "$row" "$ckpt" huggingface
