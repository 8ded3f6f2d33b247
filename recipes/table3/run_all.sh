#!/usr/bin/env bash
# Every row of Table 3: data -> the ten rows (training, evaluation) -> the report (python -m dft_verl.report).
# Each step is skipped when its manifest says it finished with the same inputs, so a rerun after a failure resumes
# and a changed setting reruns what it changes (and says why). Wall time per stage: RUNS_DIR/timings.tsv.
#
# Usage: bash recipes/table3/run_all.sh [ROW ...]      (default: all)
#   PRESET=cpu-tiny bash recipes/table3/run_all.sh     # every row for real on a laptop in minutes
#   RAY_ADDRESS=http://head:8265 bash recipes/table3/run_all.sh    # every step a `ray job submit`
#   DRY_RUN=1 bash recipes/table3/run_all.sh           # print every command and check every config; run nothing
#   Every setting: python -m dft_verl.table3 settings; the rows: python -m dft_verl.table3 rows
set -euo pipefail

# ---- user-adjustable ----
ROWS=${ROWS:-all}

source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
if [[ $# -gt 0 ]]; then set -- "$@" report; else read -r -a rows <<<"$ROWS"; set -- "${rows[@]}" report; fi
"$PYTHON" -m dft_verl.table3 run "$@"
