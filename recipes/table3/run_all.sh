#!/usr/bin/env bash
# Every row of Table 3 (data, training, evaluation), then the report (python -m dft_verl.report).
# Rows run one after another; each skips what it already finished (RUNS_DIR/<row>/train.done,
# RUNS_DIR/<row>/eval/results.json), so rerunning after a failure resumes. Each row's wall time is printed
# ("==== [run_all] <row> done in N s") and appended to RUNS_DIR/timings.tsv.
#
# Usage: bash recipes/table3/run_all.sh [row ...]          (default: data and every row)
#   Settings (MODEL_PATH, DATA_DIR, NNODES, N_GPUS_PER_NODE, RAY_ADDRESS, paper hyperparameters): common.sh.
#   DRY_RUN=1 bash recipes/table3/run_all.sh  # print every command, check all configs in one process
set -xeuo pipefail

# common.sh first: it loads PRESET, whose values the defaults below yield to
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ---- user-adjustable ----
ROWS=${ROWS:-"data base sft iw_sft_sft dft_sft dpo rft ppo grpo iw_sft_offline dft_offline"}

rows=("$@")
if [[ ${#rows[@]} -eq 0 ]]; then
    read -r -a rows <<<"$ROWS"
fi
for row in "${rows[@]}"; do
    if [[ ! -f "$recipes_dir/run_$row.sh" ]]; then
        valid=$(cd "$recipes_dir" && for f in run_*.sh; do [[ "$f" == run_all.sh ]] || printf ' %s' "${f#run_}"; done)
        echo "unknown row '$row'; valid:${valid//.sh/}" >&2
        exit 2
    fi
done

# The rows get this script's resolved paths (they run from the repository root, not from the caller's
# directory) and, in a dry run, append their commands to this script's queue, checked once at exit.
row_env=("PRESET=$PRESET" "DATA_DIR=$data_dir" "RUNS_DIR=$runs_dir" "CKPT_DIR=$ckpt_root" "MODEL_PATH=$model_path")
if [[ -n "$eval_data_dir" ]]; then
    row_env+=("EVAL_DATA_DIR=$eval_data_dir")
fi
if [[ "$DRY_RUN" == 1 ]]; then
    row_env+=("RECIPE_CHECK_QUEUE=$queue_file")
fi
# row_done ROW SECONDS: print the row's wall time and append it to RUNS_DIR/timings.tsv (row, seconds, UTC time).
row_done() {
    { set +x; } 2>/dev/null
    echo "==== [run_all] $1 done in $2 s"
    if [[ "$DRY_RUN" != 1 ]]; then
        mkdir -p "$runs_dir"
        printf '%s\t%s\t%s\n' "$1" "$2" "$(date -u +%FT%TZ)" >>"$runs_dir/timings.tsv"
    fi
    set -x
}

# A failed row stops the run (its recipe printed the failing command's log); finished rows stay as they are.
for row in "${rows[@]}"; do
    { set +x; } 2>/dev/null
    echo "==== [run_all] $row start"
    set -x
    start=$SECONDS
    if ! env "${row_env[@]}" bash "$recipes_dir/run_$row.sh"; then
        { set +x; } 2>/dev/null
        echo "row '$row' failed; its logs: $runs_dir/$row/ (rerun to resume: finished steps are skipped)" >&2
        exit 1
    fi
    row_done "$row" $((SECONDS - start))
done

# The report reads RUNS_DIR only: it runs here, also when the rows went to a Ray cluster. It is skipped when
# no results.json is newer than its table (a rerun that finds everything done rewrites nothing).
table=$runs_dir/report/table3.md
if [[ "$DRY_RUN" != 1 && -f "$table" && -z "$(find "$runs_dir" -name results.json -newer "$table" -print -quit)" ]]; then
    echo "report: $table is up to date; skipping"
else
    start=$SECONDS
    run_logged "$runs_dir/report.log" "$PYTHON" -m dft_verl.report "$runs_dir"
    row_done report $((SECONDS - start))
fi
