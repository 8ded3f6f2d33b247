#!/usr/bin/env bash
# Table 3, row "base": the untrained base model, evaluation only (and, TOKEN_PROBS=1, the "before training" token
# probabilities of Fig. 2).
#
# Usage: bash recipes/table3/run_base.sh
#   DRY_RUN=1 bash recipes/table3/run_base.sh    # print the command and check it; run nothing
#   Every setting (MODEL_PATH, RUNS_DIR, EVAL_*, ...): python -m dft_verl.table3 settings
set -euo pipefail

# ---- user-adjustable (environment variables; empty = the PRESET's value) ----
export MODEL_PATH=${MODEL_PATH:-}          # the base model (paper: Qwen/Qwen2.5-Math-1.5B)
export EVAL_ARGS=${EVAL_ARGS:-}            # extra flags of python -m dft_verl.eval (e.g. --k 16)

source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
"$PYTHON" -m dft_verl.table3 run base -- "$@"
