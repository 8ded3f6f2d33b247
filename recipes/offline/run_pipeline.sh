#!/usr/bin/env bash
# Offline-RL data for DFT / RFT / DPO: prepare -> sample (n=4, T=1.0) -> verify (math-verify) -> filter.
#
# Usage:
#   MODEL_PATH=Qwen/Qwen2.5-Math-1.5B SOURCE=AI-MO/NuminaMath-CoT BACKEND=vllm bash recipes/offline/run_pipeline.sh
#   # laptop / CI (CPU): a local GSM8K file and SmolLM2 (python -m dft_verl.demo.smollm2 prints its folder)
#   MODEL_PATH=$(python -m dft_verl.demo.smollm2) SOURCE=../shared/data/train/gsm8k/train.jsonl \
#     MAX_ROWS=64 MAX_NEW_TOKENS=256 bash recipes/offline/run_pipeline.sh
#   # any hydra override of dft_verl/config/pipeline/pipeline.yaml can be appended:
#   bash recipes/offline/run_pipeline.sh stages=[verify,filter] verify.timeout_s=5
#   DRY_RUN=1 bash recipes/offline/run_pipeline.sh    # print the command only
# Outputs: $OUT_DIR/{prepare,sample,verify,filter}/; train DFT/RFT on $OUT_DIR/filter/sft.parquet and
# DPO on $OUT_DIR/filter/dpo.parquet. Rerunning resumes: finished stages and shards are skipped.
set -xeuo pipefail

# ---- user-adjustable ----
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-Math-1.5B}
SOURCE=${SOURCE:-AI-MO/NuminaMath-CoT}
OUT_DIR=${OUT_DIR:-runs/offline}
MAX_ROWS=${MAX_ROWS:-100000}
N_SAMPLES=${N_SAMPLES:-4}
TEMPERATURE=${TEMPERATURE:-1.0}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-2048}
BACKEND=${BACKEND:-vllm}
SEED=${SEED:-42}
VERIFY_TIMEOUT_S=${VERIFY_TIMEOUT_S:-10}
DRY_RUN=${DRY_RUN:-0}
# --------------------------
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"

extra_args=()
if [[ "${BACKEND}" == "verl" ]]; then
    # one Ray job per shard: a single large shard keeps the vLLM servers up for the whole run
    extra_args+=("sample.shard_size=1000000")
fi

cmd=(
    "${PYTHON}" -m dft_verl.pipeline
    "out_dir=${OUT_DIR}"
    "seed=${SEED}"
    "prepare.source=${SOURCE}"
    "prepare.max_rows=${MAX_ROWS}"
    "sample.model_path=${MODEL_PATH}"
    "sample.backend=${BACKEND}"
    "sample.n=${N_SAMPLES}"
    "sample.temperature=${TEMPERATURE}"
    "sample.max_new_tokens=${MAX_NEW_TOKENS}"
    "verify.timeout_s=${VERIFY_TIMEOUT_S}"
    "${extra_args[@]}" "$@"
)

if [[ "${DRY_RUN}" == "1" ]]; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
"${cmd[@]}"
