# shellcheck shell=bash
# shellcheck disable=SC2034  # read by common.sh and the run_*.sh sourcing it
# PRESET=cpu-tiny: every row for real in a few minutes on 2 CPU cores (CI). The data step builds its inputs
# offline: 8 generated addition questions, 8 held-out ones as the benchmark, and a tiny Llama (2 layers,
# hidden 64) fitted to the training questions so that some of its sampled answers are right.
# Sizes give 1-2 optimiser steps per row; Average@2 with 48 new tokens.
DEVICE=${DEVICE:-cpu}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-2}
RUNS_DIR=${RUNS_DIR:-runs/table3_cpu_tiny}
DATA_DIR=${DATA_DIR:-$RUNS_DIR/data}
CKPT_DIR=${CKPT_DIR:-$RUNS_DIR/checkpoints}
MODEL_BUILD=${MODEL_BUILD:-tiny}
MODEL_PATH=${MODEL_PATH:-$DATA_DIR/tiny_model}
DATA_GENERATE_TRAIN=${DATA_GENERATE_TRAIN:-8}
DATA_GENERATE_TEST=${DATA_GENERATE_TEST:-8}
DATA_GENERATE_FAMILIES=${DATA_GENERATE_FAMILIES:-add}
EVAL_DATA_DIR=${EVAL_DATA_DIR:-$DATA_DIR/bench}
SAMPLE_BACKEND=${SAMPLE_BACKEND:-hf}
SAMPLE_N=${SAMPLE_N:-4}
SAMPLE_MAX_NEW_TOKENS=${SAMPLE_MAX_NEW_TOKENS:-48}
VERIFY_USE_RAY=${VERIFY_USE_RAY:-false}
VERIFY_NUM_WORKERS=${VERIFY_NUM_WORKERS:-1}
SFT_BATCH_SIZE=${SFT_BATCH_SIZE:-4}
SFT_MICRO_BATCH_SIZE_PER_GPU=${SFT_MICRO_BATCH_SIZE_PER_GPU:-2}
SFT_MAX_LENGTH=${SFT_MAX_LENGTH:-256}
SFT_FUSED_KERNELS=${SFT_FUSED_KERNELS:-False}
DPO_BATCH_SIZE=${DPO_BATCH_SIZE:-4}
DPO_MAX_LENGTH=${DPO_MAX_LENGTH:-256}
RL_BATCH_SIZE=${RL_BATCH_SIZE:-4}
RL_MINI_BATCH_SIZE=${RL_MINI_BATCH_SIZE:-4}
RL_MICRO_BATCH_SIZE_PER_GPU=${RL_MICRO_BATCH_SIZE_PER_GPU:-2}
RL_MAX_PROMPT_LENGTH=${RL_MAX_PROMPT_LENGTH:-128}
RL_MAX_RESPONSE_LENGTH=${RL_MAX_RESPONSE_LENGTH:-48}
GRPO_N=${GRPO_N:-2}
EVAL_BACKEND=${EVAL_BACKEND:-hf}
# Fig. 2 for every row (cheap at this size)
TOKEN_PROBS=${TOKEN_PROBS:-1}
EVAL_ARGS=${EVAL_ARGS:---benchmarks math500 --k 2 --max-new-tokens 48 --batch-size 16 --num-workers 1}
# A checkpoint per step, each evaluated (the report's accuracy-vs-step figure)
SAVE_FREQ=${SAVE_FREQ:-1}
EVAL_EVERY_CHECKPOINT=${EVAL_EVERY_CHECKPOINT:-1}
# Only the HF weights of each checkpoint stay once a row has trained (KEEP_TRAINING_STATE in common.sh)
KEEP_TRAINING_STATE=${KEEP_TRAINING_STATE:-0}
