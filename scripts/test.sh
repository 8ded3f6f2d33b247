#!/usr/bin/env bash
# Run the test suite (CPU). GPU-marked tests skip without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/lint_recipes.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
