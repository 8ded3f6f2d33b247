"""dft_verl.checkpoints: a trained row's checkpoints keep only the HF folder evaluation reads, on the two layouts
verl 0.9.1 writes (SFT trainer: global_step_N/huggingface; main_ppo: global_step_N/actor/huggingface beside
critic/). The real layouts are exercised end to end by test_recipes_e2e (cpu-tiny sets KEEP_TRAINING_STATE=0)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dft_verl.checkpoints import NOTE_FILE, prune_training_state


def _write(path: Path, size: int) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return size


def sft_checkpoints(root: Path, steps=(2, 4)) -> int:
    """verl SFT-trainer files of a 2-rank run; returns the bytes of everything but huggingface/."""
    state = 0
    for step in steps:
        d = root / f"global_step_{step}"
        for rank in (0, 1):
            state += _write(d / f"model_world_size_2_rank_{rank}.pt", 300)
            state += _write(d / f"optim_world_size_2_rank_{rank}.pt", 600)
            state += _write(d / f"extra_state_world_size_2_rank_{rank}.pt", 17)
            state += _write(d / f"data_{rank}.pt", 5)
        state += _write(d / "fsdp_config.json", 46)
        _write(d / "huggingface" / "config.json", 40)
        _write(d / "huggingface" / "model.safetensors", 250)
    (root / "latest_checkpointed_iteration.txt").write_text(str(steps[-1]))
    return state


def test_sft_layout_keeps_hf_weights_and_verls_tracker(tmp_path):
    state = sft_checkpoints(tmp_path)
    hf = tmp_path / "global_step_4" / "huggingface" / "model.safetensors"
    mtime = hf.stat().st_mtime_ns
    assert prune_training_state(tmp_path, "huggingface") == (2, state)
    for step in (2, 4):
        d = tmp_path / f"global_step_{step}"
        assert sorted(p.name for p in d.iterdir()) == sorted([NOTE_FILE, "huggingface"])
        assert sorted(p.name for p in (d / "huggingface").iterdir()) == ["config.json", "model.safetensors"]
        assert "Training cannot resume" in (d / NOTE_FILE).read_text()
    assert hf.stat().st_mtime_ns == mtime and hf.stat().st_size == 250
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text() == "4"
    # again: nothing to delete, nothing rewritten (a resumed recipe changes no file)
    note = tmp_path / "global_step_2" / NOTE_FILE
    note_mtime = note.stat().st_mtime_ns
    assert prune_training_state(tmp_path, "huggingface") == (0, 0)
    assert note.stat().st_mtime_ns == note_mtime


def test_main_ppo_layout_keeps_only_the_actors_hf_folder(tmp_path):
    d = tmp_path / "global_step_6"
    state = _write(d / "data.pt", 9)
    for role in ("actor", "critic"):
        state += _write(d / role / "model_world_size_2_rank_0.pt", 100)
        state += _write(d / role / "optim_world_size_2_rank_0.pt", 200)
    state += _write(d / "critic" / "huggingface" / "config.json", 30)  # the critic's: not what evaluation reads
    _write(d / "actor" / "huggingface" / "config.json", 30)
    _write(d / "actor" / "huggingface" / "model.safetensors", 100)
    assert prune_training_state(tmp_path, "actor/huggingface") == (1, state)
    assert sorted(str(p.relative_to(d)) for p in d.rglob("*")) == [
        NOTE_FILE, "actor", "actor/huggingface", "actor/huggingface/config.json", "actor/huggingface/model.safetensors"]


def test_a_checkpoint_without_hf_weights_refuses_before_deleting_anything(tmp_path):
    sft_checkpoints(tmp_path)
    (tmp_path / "global_step_4" / "huggingface" / "config.json").unlink()
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(FileNotFoundError, match=r"global_step_4/huggingface/config.json missing"):
        prune_training_state(tmp_path, "huggingface")
    assert sorted(tmp_path.rglob("*")) == before
    with pytest.raises(FileNotFoundError, match="no global_step_"):
        prune_training_state(tmp_path / "global_step_2", "huggingface")
    for keep in ("", "/abs/huggingface", "../huggingface"):
        with pytest.raises(ValueError, match="--keep must be a relative folder"):
            prune_training_state(tmp_path, keep)


def test_cli_reports_what_it_freed_and_fails_with_the_reason(tmp_path):
    state = sft_checkpoints(tmp_path, steps=(3,))
    cmd = [sys.executable, "-m", "dft_verl.checkpoints", "--keep", "huggingface", str(tmp_path)]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert f"training state deleted from 1 checkpoint(s), 0.00 GB ({state} bytes) freed; kept huggingface/" in ok.stdout
    bad = subprocess.run(cmd[:-1] + [str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "no global_step_* checkpoint under" in bad.stderr
