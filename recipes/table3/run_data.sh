#!/usr/bin/env bash
# Table 3 data (run before the rows): the offline-RL pipeline writes, under DATA_DIR,
#   prepare/rl.parquet   questions in verl's RL format          (ppo, grpo)
#   prepare/sft.parquet  gold worked solutions                   (sft, iw_sft_sft, dft_sft)
#   filter/sft.parquet   correct samples of the base model       (rft, iw_sft_offline, dft_offline)
#   filter/dpo.parquet   (correct, wrong) sample pairs           (dpo)
# Paper: questions from NuminaMath-CoT, 4 samples per question at temperature 1.0, judged by
# dft_verl/rewards.py. Every stage resumes where it stopped (python -m dft_verl.pipeline).
# Offline runs (PRESET=cpu-tiny) first build their inputs (python -m dft_verl.demo.offline_inputs, skipped when
# present): DATA_GENERATE_TRAIN generated arithmetic questions as the source, DATA_GENERATE_TEST held-out ones as
# EVAL_DATA_DIR/math500/test.jsonl, and with MODEL_BUILD a model at MODEL_PATH. Logs: RUNS_DIR/data/*.log.
#
# Usage: bash recipes/table3/run_data.sh [pipeline overrides, e.g. filter.max_per_question=2 ...]
#   Settings (MODEL_PATH, DATA_DIR, NNODES, N_GPUS_PER_NODE): see common.sh.
#   DRY_RUN=1 bash recipes/table3/run_data.sh    # print and config-check the command, run nothing
set -xeuo pipefail

# common.sh first: it loads PRESET, whose values the defaults below yield to
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ---- user-adjustable ----
# HF dataset id or local .jsonl/.json/.parquet of math problems with solutions
DATA_SOURCE=${DATA_SOURCE:-AI-MO/NuminaMath-CoT}
# Generated questions instead of DATA_SOURCE (0: none): training questions (DATA_DIR/task/train.jsonl) and
# held-out questions (the evaluation benchmark, EVAL_DATA_DIR/math500/test.jsonl); problem families
DATA_GENERATE_TRAIN=${DATA_GENERATE_TRAIN:-0}
DATA_GENERATE_TEST=${DATA_GENERATE_TEST:-0}
DATA_GENERATE_FAMILIES=${DATA_GENERATE_FAMILIES:-add}
# Questions kept from the source (seeded subsample)
DATA_MAX_ROWS=${DATA_MAX_ROWS:-100000}
# Paper: 4 samples per question at temperature 1.0
SAMPLE_N=${SAMPLE_N:-4}
SAMPLE_TEMPERATURE=${SAMPLE_TEMPERATURE:-1.0}
SAMPLE_MAX_NEW_TOKENS=${SAMPLE_MAX_NEW_TOKENS:-2048}
# verl: Ray + vLLM replicas on NNODES x N_GPUS_PER_NODE GPUs; vllm: one process; hf: CPU/tests
SAMPLE_BACKEND=${SAMPLE_BACKEND:-verl}
# hf/vllm backends: sequences per generate call (empty: the pipeline's default)
SAMPLE_BATCH_SIZE=${SAMPLE_BATCH_SIZE:-}
# hf backend: processes the batches are spread over (cores/processes threads each; the same samples as one)
SAMPLE_PROCESSES=${SAMPLE_PROCESSES:-}
# Judge answers in Ray tasks (true) or a local process pool (false); judge processes (empty: all CPUs)
VERIFY_USE_RAY=${VERIFY_USE_RAY:-true}
VERIFY_NUM_WORKERS=${VERIFY_NUM_WORKERS:-}

row=data
source=$DATA_SOURCE

extra_args=()
# MODEL_BUILD builds MODEL_PATH only when it holds no model yet (a model passed in is used as it is)
build_model=
if [[ -n "$MODEL_BUILD" && ! -e "$model_path/config.json" ]]; then
    build_model=$MODEL_BUILD
fi
if [[ "$DATA_GENERATE_TRAIN" != 0 || "$build_model" == tiny ]]; then
    inputs_args=(--task-dir "$data_dir/task" --n-train "$DATA_GENERATE_TRAIN" --n-test "$DATA_GENERATE_TEST"
        --families "$DATA_GENERATE_FAMILIES")
    if [[ "$DATA_GENERATE_TRAIN" != 0 ]]; then
        source=$data_dir/task/train.jsonl
        if [[ -z "$eval_data_dir" ]]; then
            echo "run_data.sh: DATA_GENERATE_TRAIN needs EVAL_DATA_DIR (where the held-out questions go)" >&2
            exit 2
        fi
        inputs_args+=(--bench-dir "$eval_data_dir")
    fi
    if [[ "$build_model" == tiny ]]; then
        if [[ "$DATA_GENERATE_TRAIN" == 0 ]]; then
            echo "run_data.sh: MODEL_BUILD=tiny fits the model to generated questions: set DATA_GENERATE_TRAIN" >&2
            exit 2
        fi
        inputs_args+=(--tiny-model "$model_path")
    fi
    run_logged "$runs_dir/$row/inputs.log" "${cpu_python[@]}" -m dft_verl.demo.offline_inputs "${inputs_args[@]}"
fi
if [[ "$build_model" == smollm2 ]]; then
    run_logged "$runs_dir/$row/inputs.log" "${cpu_python[@]}" -m dft_verl.demo.smollm2 --cache-dir "$model_path"
fi
if [[ -n "$SAMPLE_BATCH_SIZE" ]]; then
    extra_args+=("sample.batch_size=$SAMPLE_BATCH_SIZE")
fi
if [[ -n "$SAMPLE_PROCESSES" ]]; then
    extra_args+=("sample.processes=$SAMPLE_PROCESSES")
fi
if [[ -n "$VERIFY_NUM_WORKERS" ]]; then
    extra_args+=("verify.num_workers=$VERIFY_NUM_WORKERS")
fi
if [[ "$SAMPLE_BACKEND" == verl ]]; then
    # One shard is one Ray job: make it large
    extra_args+=(
        "+sample.backend_kwargs.n_gpus_per_node=$N_GPUS_PER_NODE"
        "+sample.backend_kwargs.nnodes=$NNODES"
        sample.shard_size=8192
    )
fi

run_logged "$runs_dir/$row/pipeline.log" "${cpu_python[@]}" -m dft_verl.pipeline \
    "out_dir=$data_dir" \
    "prepare.source=$source" \
    "prepare.max_rows=$DATA_MAX_ROWS" \
    "prepare.prompt_template=$PROMPT_TEMPLATE" \
    "sample.model_path=$model_path" \
    "sample.backend=$SAMPLE_BACKEND" \
    "sample.n=$SAMPLE_N" \
    "sample.temperature=$SAMPLE_TEMPERATURE" \
    "sample.max_new_tokens=$SAMPLE_MAX_NEW_TOKENS" \
    "verify.use_ray=$VERIFY_USE_RAY" \
    "${extra_args[@]}" "$@"
