#!/usr/bin/env bash
# Table 3 data (run before the rows): the offline-RL pipeline writes, under DATA_DIR,
#   prepare/rl.parquet   questions in verl's RL format          (ppo, grpo)
#   prepare/sft.parquet  gold worked solutions                   (sft, iw_sft_sft, dft_sft)
#   filter/sft.parquet   correct samples of the base model       (rft, iw_sft_offline, dft_offline)
#   filter/dpo.parquet   (correct, wrong) sample pairs           (dpo)
# Paper: questions from NuminaMath-CoT, 4 samples per question at temperature 1.0, judged by
# dft_verl/rewards.py. Every stage resumes where it stopped (python -m dft_verl.pipeline).
#
# Usage: bash recipes/table3/run_data.sh [pipeline overrides, e.g. filter.max_per_question=2 ...]
#   Settings (MODEL_PATH, DATA_DIR, NNODES, N_GPUS_PER_NODE): see common.sh.
#   DRY_RUN=1 bash recipes/table3/run_data.sh    # print and config-check the command, run nothing
set -xeuo pipefail

# ---- user-adjustable ----
# HF dataset id or local .jsonl/.json/.parquet of math problems with solutions
DATA_SOURCE=${DATA_SOURCE:-AI-MO/NuminaMath-CoT}
# Questions kept from the source (seeded subsample)
DATA_MAX_ROWS=${DATA_MAX_ROWS:-100000}
# Paper: 4 samples per question at temperature 1.0
SAMPLE_N=${SAMPLE_N:-4}
SAMPLE_TEMPERATURE=${SAMPLE_TEMPERATURE:-1.0}
SAMPLE_MAX_NEW_TOKENS=${SAMPLE_MAX_NEW_TOKENS:-2048}
# verl: Ray + vLLM replicas on NNODES x N_GPUS_PER_NODE GPUs; vllm: one process; hf: CPU/tests
SAMPLE_BACKEND=${SAMPLE_BACKEND:-verl}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

extra_args=()
if [[ "$SAMPLE_BACKEND" == verl ]]; then
    # One shard is one Ray job: make it large
    extra_args+=(
        "+sample.backend_kwargs.n_gpus_per_node=$N_GPUS_PER_NODE"
        "+sample.backend_kwargs.nnodes=$NNODES"
        sample.shard_size=8192
    )
fi

run_cmd "${cpu_python[@]}" -m dft_verl.pipeline \
    "out_dir=$data_dir" \
    "prepare.source=$DATA_SOURCE" \
    "prepare.max_rows=$DATA_MAX_ROWS" \
    "sample.model_path=$model_path" \
    "sample.backend=$SAMPLE_BACKEND" \
    "sample.n=$SAMPLE_N" \
    "sample.temperature=$SAMPLE_TEMPERATURE" \
    "sample.max_new_tokens=$SAMPLE_MAX_NEW_TOKENS" \
    "${extra_args[@]}" "$@"
