#!/usr/bin/env bash
# Table 3 data (run before the rows): the offline-RL pipeline writes, under DATA_DIR,
#   prepare/rl.parquet   questions in verl's RL format          (ppo, grpo)
#   prepare/sft.parquet  gold worked solutions                   (sft, iw_sft_sft, dft_sft)
#   filter/sft.parquet   correct samples of the base model       (rft, iw_sft_offline, dft_offline)
#   filter/dpo.parquet   (correct, wrong) sample pairs           (dpo)
# Paper: questions from NuminaMath-CoT, 4 samples per question at temperature 1.0, judged by dft_verl/rewards.py.
# The CPU presets first build their inputs offline (generated questions, the held-out set, a model).
#
# Usage: bash recipes/table3/run_data.sh [pipeline overrides, e.g. filter.max_per_question=2 ...]
#   DRY_RUN=1 bash recipes/table3/run_data.sh    # print the commands and check them; run nothing
#   Every setting (MODEL_PATH, DATA_DIR, SAMPLE_*, ...): python -m dft_verl.table3 settings
set -euo pipefail

# ---- user-adjustable (environment variables; empty = the PRESET's value) ----
export DATA_SOURCE=${DATA_SOURCE:-}        # HF dataset id or local file (paper: AI-MO/NuminaMath-CoT)
export DATA_MAX_ROWS=${DATA_MAX_ROWS:-}    # questions kept from the source (100000)
export SAMPLE_N=${SAMPLE_N:-}              # samples per question (paper: 4)
export SAMPLE_BACKEND=${SAMPLE_BACKEND:-}  # verl (Ray + vLLM), vllm or hf

source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
"$PYTHON" -m dft_verl.table3 run data -- "$@"
