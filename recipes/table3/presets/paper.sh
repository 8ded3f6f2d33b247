# shellcheck shell=bash
# PRESET=paper (the default): Qwen2.5-Math-1.5B on GPUs (vLLM sampling and evaluation) with the paper's
# hyperparameters. Those are the defaults written in common.sh and run_*.sh, so this preset sets nothing else.
DEVICE=${DEVICE:-gpu}
