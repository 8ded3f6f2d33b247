"""Every command the README shows works verbatim in a fresh shell after the install command: each runs here, with
DRY_RUN=1 where it would train or sample (the recipes and the demo then print every command and check its config
against the installed verl), from the repository root, with no Table-3 setting and no PYTHON inherited and the
project's .venv not on PATH (the recipes must find it themselves)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# what CI ran before this suite (--vllm: CI's, which adds vLLM's CPU build), dropped from the commands run here
INSTALLS = ("bash scripts/install.sh && ", "bash scripts/install.sh --vllm && ")


def readme_commands() -> list[str]:
    """(block number, shell line) of the README's indented code blocks, comments removed; the layout block (a
    folder tree, not commands) left out."""
    lines = (REPO / "README.md").read_text().splitlines()
    commands, block, prev_blank, in_block, layout = [], 0, True, False, False
    for line in lines:
        if line.startswith("    ") and (prev_blank or in_block):
            if not in_block:
                block += 1
                layout = line.strip().startswith("RUNS_DIR")  # the "Where everything lands" tree
            in_block = True
            text = re.sub(r"\s+#.*$", "", line.strip())
            if text and not layout:
                commands.append((block, text))
        else:
            in_block = False
        prev_blank = not line.strip()
    return commands


def test_the_readme_shows_the_two_fresh_machine_commands_and_a_cluster_run():
    cmds = [c for _, c in readme_commands()]
    assert "bash scripts/install.sh && .venv/bin/dft-verl demo" in cmds
    assert "bash scripts/install.sh --vllm && bash scripts/test.sh" in cmds
    assert "bash recipes/table3/run_all.sh" in cmds and "export RAY_ADDRESS=http://head:8265" in cmds
    assert len(REPO.joinpath("README.md").read_text().splitlines()) <= 150


def _runnable() -> list[tuple[str, str]]:
    """(command as shown, command as run): the install prefix dropped (CI ran it), the test suite itself left out,
    an `export` carried into the commands after it in its block."""
    out, exports, current = [], [], 0
    for block, cmd in readme_commands():
        if block != current:
            exports, current = [], block
        if cmd.startswith("export "):
            exports.append(cmd)
            continue
        run = next((cmd[len(p):] for p in INSTALLS if cmd.startswith(p)), cmd)
        if run == "bash scripts/test.sh":
            continue  # the suite running this test
        out.append((cmd, " && ".join([*exports, run])))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("shown, command", _runnable(), ids=[c for c, _ in _runnable()])
def test_readme_command_runs(shown, command, tmp_path):
    from dft_verl.table3.settings import NAMES

    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if ".venv" not in p)
    env = {k: v for k, v in os.environ.items() if k not in NAMES and k not in ("PYTHON", "VIRTUAL_ENV")}
    env.update(PATH=path, DRY_RUN="1", RUNS_DIR=str(tmp_path / "runs"), CKPT_DIR=str(tmp_path / "ckpt"))
    proc = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{shown}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    if "recipes/table3" in command or "dft-verl demo" in command:
        assert re.search(r"^table3 check: \d+ ok, 0 failed$", proc.stdout, re.M), proc.stdout[-2000:]
