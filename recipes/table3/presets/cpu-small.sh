# shellcheck shell=bash
# shellcheck disable=SC2034  # read by common.sh and the run_*.sh sourcing it
# PRESET=cpu-small: SmolLM2-135M-Instruct on the CPU platform at the sizes of `dft-verl demo` (dft_verl/demo/
# demo.yaml): 48 generated arithmetic questions, 4 samples each, 8 examples per step, 64 new tokens; 64 held-out
# questions x 2 samples.
# MODEL_PATH defaults to the packaged model, converted by the data step (no hub). That raw model rarely ends
# with \boxed{}: `dft-verl demo` passes its format-warmed base model as MODEL_PATH instead.
DEVICE=${DEVICE:-cpu}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-2}
RUNS_DIR=${RUNS_DIR:-runs/table3_cpu_small}
DATA_DIR=${DATA_DIR:-$RUNS_DIR/data}
CKPT_DIR=${CKPT_DIR:-$RUNS_DIR/checkpoints}
MODEL_BUILD=${MODEL_BUILD:-smollm2}
MODEL_PATH=${MODEL_PATH:-${DFT_VERL_SMOLLM2_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dft_verl/smollm2-135m-instruct}}
DATA_GENERATE_TRAIN=${DATA_GENERATE_TRAIN:-48}
DATA_GENERATE_TEST=${DATA_GENERATE_TEST:-64}
DATA_GENERATE_FAMILIES=${DATA_GENERATE_FAMILIES:-add,mul,word_add}
EVAL_DATA_DIR=${EVAL_DATA_DIR:-$DATA_DIR/bench}
SAMPLE_BACKEND=${SAMPLE_BACKEND:-hf}
SAMPLE_N=${SAMPLE_N:-4}
SAMPLE_MAX_NEW_TOKENS=${SAMPLE_MAX_NEW_TOKENS:-64}
# Sampling and evaluation: 32 sequences per generate call in 2 processes of 1 thread each (fp32 SmolLM2 on 2 cores,
# bench/generation_speed.py; 128 responses x 64 tokens: 77 s at batch 16 in one process, 49 s like this)
SAMPLE_BATCH_SIZE=${SAMPLE_BATCH_SIZE:-32}
SAMPLE_PROCESSES=${SAMPLE_PROCESSES:-2}
VERIFY_USE_RAY=${VERIFY_USE_RAY:-false}
VERIFY_NUM_WORKERS=${VERIFY_NUM_WORKERS:-1}
SFT_BATCH_SIZE=${SFT_BATCH_SIZE:-8}
SFT_MICRO_BATCH_SIZE_PER_GPU=${SFT_MICRO_BATCH_SIZE_PER_GPU:-4}
SFT_MAX_LENGTH=${SFT_MAX_LENGTH:-256}
SFT_FUSED_KERNELS=${SFT_FUSED_KERNELS:-False}
DPO_BATCH_SIZE=${DPO_BATCH_SIZE:-8}
DPO_MAX_LENGTH=${DPO_MAX_LENGTH:-256}
# Learning rates for a run of 4-10 optimiser steps: the paper's 1e-6 (PPO, GRPO, DPO) moves a model visibly only over
# its hundreds of steps; at 6 steps nothing changes. 1e-5 (measured: GRPO reward 0.28 -> 0.50 in 12 steps) keeps
# the SFT family's 5e-5 five times higher, as in the paper's ratio of SFT to RL step sizes (50x) scaled down.
RL_LR=${RL_LR:-1e-5}
DPO_LR=${DPO_LR:-1e-5}
RL_BATCH_SIZE=${RL_BATCH_SIZE:-8}
RL_MINI_BATCH_SIZE=${RL_MINI_BATCH_SIZE:-8}
RL_MICRO_BATCH_SIZE_PER_GPU=${RL_MICRO_BATCH_SIZE_PER_GPU:-4}
RL_MAX_PROMPT_LENGTH=${RL_MAX_PROMPT_LENGTH:-192}
RL_MAX_RESPONSE_LENGTH=${RL_MAX_RESPONSE_LENGTH:-64}
EVAL_BACKEND=${EVAL_BACKEND:-hf}
# Fig. 2 for every row (cheap at this size)
TOKEN_PROBS=${TOKEN_PROBS:-1}
# k=2: at temperature 1.0 a paired CI is set by the number of responses more than by k (most of the per-question
# spread is sampling noise), so 64 questions x 2 beat 32 x 4 at the same cost (dft_verl/demo/demo.yaml: task.n_test)
EVAL_ARGS=${EVAL_ARGS:---benchmarks math500 --k 2 --max-new-tokens 64 --batch-size 32 --processes 2 --num-workers 1}
# A laptop keeps only the HF weights of each trained row's checkpoints (0.5 of 2.1 GB each; KEEP_TRAINING_STATE in
# common.sh): the ten rows take ~5 GB instead of ~20, and a checkpoint every 2 steps (Fig. 1) fits.
KEEP_TRAINING_STATE=${KEEP_TRAINING_STATE:-0}
