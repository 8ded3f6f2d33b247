#!/usr/bin/env bash
# Table 3, row "base": the untrained base model, evaluation only (and, TOKEN_PROBS=1, the "before training"
# token probabilities of Fig. 2).
#
# Usage: bash recipes/table3/run_base.sh
#   Settings (MODEL_PATH, RUNS_DIR, EVAL_*): see common.sh.
#   DRY_RUN=1 bash recipes/table3/run_base.sh    # print and config-check the command, run nothing
set -xeuo pipefail

# common.sh first: it loads PRESET, whose values the defaults below yield to
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ---- user-adjustable ----
# (all settings of this row are shared with the other rows: common.sh)

if [[ $# -gt 0 ]]; then
    echo "run_base.sh takes no arguments (it only evaluates MODEL_PATH); got: $*" >&2
    exit 2
fi
evaluate base "$model_path"
token_probs base "$model_path"
