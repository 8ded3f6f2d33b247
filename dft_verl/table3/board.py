"""Every row on one tracking board: the trained rows log through verl's ``trainer.logger`` (verl's
``verl.utils.tracking.Tracking``), and each evaluation's scores are logged to the same run afterwards.

LOGGER=tensorboard (default): each row writes to RUNS_DIR/tensorboard/<row> (verl's tensorboard backend reads the
TENSORBOARD_DIR variable), so ``tensorboard --logdir RUNS_DIR/tensorboard`` shows the rows side by side.
LOGGER=wandb: project dft_verl_table3, run = the row; offline (WANDB_MODE=offline, files under RUNS_DIR/wandb) unless
WANDB_API_KEY or WANDB_MODE is set. LOGGER=mlflow: file:RUNS_DIR/mlruns unless MLFLOW_TRACKING_URI is set.
LOGGER=console: nothing beyond the logs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dft_verl.table3.settings import Settings

PROJECT = "dft_verl_table3"
logger = logging.getLogger("dft_verl.table3")


def backends(s: Settings) -> list[str]:
    """verl's ``trainer.logger`` list; ``file`` always: the metrics the row's cost is read from (dft_verl.cost)."""
    return ["console", "file"] if s.LOGGER == "console" else ["console", s.LOGGER, "file"]


def logger_override(s: Settings) -> str:
    return f"trainer.logger=[{','.join(backends(s))}]"


def logger_env(s: Settings, row: str) -> dict[str, str]:
    """The variables a trained row's process needs for its board (they reach Ray jobs through their runtime env)."""
    runs = Path(s.RUNS_DIR)
    if s.LOGGER == "tensorboard":
        return {"TENSORBOARD_DIR": str(runs / "tensorboard" / row)}
    if s.LOGGER == "wandb":
        env = {"WANDB_DIR": os.environ.get("WANDB_DIR", str(runs / "wandb"))}
        if not os.environ.get("WANDB_MODE") and not os.environ.get("WANDB_API_KEY"):
            env["WANDB_MODE"] = "offline"
        return env
    if s.LOGGER == "mlflow":
        return {"MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", f"file:{runs / 'mlruns'}")}
    return {}


def eval_scalars(results: dict) -> dict[str, float]:
    """A results.json as board scalars: eval/<benchmark>/avg_at_k (percent) and eval/average."""
    scalars = {f"eval/{bench}/avg_at_k": float(entry["avg_at_k"]) for bench, entry in results["benchmarks"].items()}
    if results.get("average") is not None:
        scalars["eval/average"] = float(results["average"])
    return scalars


def log_eval(s: Settings, row: str, results: dict, step: int) -> None:
    """Log an evaluation's scores to the row's run at training step ``step`` (0: the base model)."""
    if s.LOGGER == "console":
        return
    from verl.utils.tracking import Tracking

    saved = dict(os.environ)
    os.environ.update(logger_env(s, row))
    try:
        tracker = Tracking(project_name=PROJECT, experiment_name=row, default_backend=[s.LOGGER])
        tracker.log(data=eval_scalars(results), step=step)
        tracker.finish()
    finally:
        os.environ.clear()
        os.environ.update(saved)
