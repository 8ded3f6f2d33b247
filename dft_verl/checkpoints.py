"""Keep only the HF weights of a trained row's checkpoints (the recipes' ``KEEP_TRAINING_STATE=0``).

verl writes into every ``CKPT/global_step_<N>`` the sharded state a run resumes from (model and optimiser shards
per rank, scheduler/RNG "extra" state, dataloader state; main_ppo: the same under ``actor/`` and ``critic/``) and,
with ``hf_model`` in ``checkpoint.save_contents``, the HF weights that evaluation reads (``huggingface`` for the
SFT trainer, ``actor/huggingface`` for main_ppo). Adam's two fp32 moments make the state about 3x the weights:
SmolLM2-135M saves 2.1 GB per checkpoint, 0.5 GB of it the HF folder. Once a row has trained, nothing reads the
state again; deleting it lets a laptop keep a checkpoint every few steps of every row (the report's Fig. 1).
verl can no longer resume or continue training from a pruned checkpoint; each says so in ``NOTE_FILE``.

    python -m dft_verl.checkpoints --keep huggingface CKPT_DIR
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

NOTE_FILE = "TRAINING_STATE_DELETED.txt"
NOTE = ("verl's training state (model/optimiser shards, scheduler, RNG and dataloader state) was deleted from this "
        "checkpoint by `python -m dft_verl.checkpoints` (recipes: KEEP_TRAINING_STATE=0); only {keep}/ is left. "
        "Training cannot resume from here: delete the checkpoint folder to train the row again.\n")


def prune_training_state(ckpt_dir: str | Path, keep: str) -> tuple[int, int]:
    """Delete everything in each ``ckpt_dir/global_step_<N>`` except the folder ``keep`` (a relative path such as
    ``actor/huggingface``); verl's ``latest_checkpointed_iteration.txt`` beside them stays. Returns (checkpoints
    pruned now, bytes freed). Nothing is deleted unless every checkpoint has ``keep/config.json``; an already
    pruned checkpoint is left untouched (no file rewritten)."""
    ckpt_dir = Path(ckpt_dir)
    parts = Path(keep).parts
    if not parts or Path(keep).is_absolute() or ".." in parts:
        raise ValueError(f"--keep must be a relative folder inside each checkpoint, got {keep!r}")
    steps = sorted((p for p in ckpt_dir.glob("global_step_*") if p.is_dir()), key=lambda p: p.name)
    if not steps:
        raise FileNotFoundError(f"no global_step_* checkpoint under {ckpt_dir}")
    for step in steps:
        if not (step / keep / "config.json").is_file():
            raise FileNotFoundError(f"{step / keep}/config.json missing (checkpoint.save_contents without hf_model?): "
                                    f"nothing under {ckpt_dir} deleted")
    pruned = freed = 0
    for step in steps:
        removed = _remove_all_but(step, parts, spare=NOTE_FILE)
        if removed or not (step / NOTE_FILE).is_file():
            (step / NOTE_FILE).write_text(NOTE.format(keep=keep))
            pruned += 1
            freed += removed
    return pruned, freed


def _remove_all_but(folder: Path, keep: tuple[str, ...], spare: str = "") -> int:
    """Delete every entry of ``folder`` except the path ``keep`` and the file ``spare``; returns the bytes deleted."""
    freed = 0
    for entry in folder.iterdir():
        if entry.name == keep[0] and entry.is_dir() and not entry.is_symlink():
            if len(keep) > 1:
                freed += _remove_all_but(entry, keep[1:])
            continue
        if entry.name == spare:
            continue
        if entry.is_dir() and not entry.is_symlink():
            freed += sum(f.stat().st_size for f in entry.rglob("*") if f.is_file() and not f.is_symlink())
            shutil.rmtree(entry)
        else:
            freed += entry.lstat().st_size
            entry.unlink()
    return freed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dft_verl.checkpoints", description=__doc__.split("\n")[0])
    parser.add_argument("ckpt_dir", help="a row's checkpoint folder (verl's trainer.default_local_dir)")
    parser.add_argument("--keep", required=True,
                        help="the folder to keep in each global_step_<N>: huggingface (SFT trainer, DPO) or "
                             "actor/huggingface (main_ppo)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pruned, freed = prune_training_state(args.ckpt_dir, args.keep)
    except (FileNotFoundError, ValueError) as e:
        print(f"dft_verl.checkpoints: {e}", file=sys.stderr)
        return 1
    print(f"{args.ckpt_dir}: training state deleted from {pruned} checkpoint(s), {freed / 1e9:.2f} GB "
          f"({freed} bytes) freed; kept {args.keep}/ in each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
