# shellcheck shell=bash
# Sourced by every recipe: PYTHON becomes the interpreter of this project's environment, checked to import dft_verl.
# PYTHON set by the caller wins; else this checkout's .venv (bash scripts/install.sh makes it); else python3 on PATH
# (an activated environment). The steps take torchrun and ray from that interpreter's environment.
recipes_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$recipes_repo/.venv/bin/python" ]]; then PYTHON=$recipes_repo/.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import dft_verl.table3' 2>/dev/null; then
    echo "$PYTHON cannot import dft_verl: run 'bash scripts/install.sh' in $recipes_repo (it makes .venv, which the" \
        "recipes find), or activate the environment dft_verl is installed in, or set PYTHON=/path/to/its/python" >&2
    exit 1
fi
# this checkout is what runs, also where dft_verl is installed elsewhere
export PYTHONPATH="$recipes_repo${PYTHONPATH:+:$PYTHONPATH}"
