"""Reduce the per-micro-batch / per-rank metric lists verl's TrainingWorker returns to scalars.

verl's engine returns each loss metric as a list over data-parallel ranks of per-micro-batch values
(``Metric`` objects or plain lists). The SFT trainers log ``output["metrics"]`` as is, so a loss
that reports more than ``loss`` would log lists. ``reduce_metrics`` folds them: ``Metric`` values
with verl's own ``Metric.aggregate_dp`` (SUM: sum over micro-batches, mean over ranks), plain lists
by their mean.
"""

from __future__ import annotations

import re
from itertools import chain

import numpy as np
from verl.utils import tensordict_utils as tu
from verl.utils.metric import Metric


def reduce_metrics(metrics: dict) -> dict:
    """In place: replace list-valued entries by scalars (see module docstring); returns ``metrics``."""
    for key, val in list(metrics.items()):
        if isinstance(val, Metric):
            metrics[key] = float(val.aggregate())
        elif isinstance(val, list) and val:
            if isinstance(val[0], Metric):
                metrics[key] = float(Metric.aggregate_dp(val))
            else:
                flat = list(chain.from_iterable(v if isinstance(v, list) else [v] for v in val))
                metrics[key] = float(np.mean(flat))
    return metrics


def _reduce_output(output):
    if output is not None:
        metrics = tu.get(output, "metrics")
        if isinstance(metrics, dict):
            reduce_metrics(metrics)
    return output


class _ReducedFuture:
    """Wraps a Ray worker-group future so ``.get()`` returns reduced metrics."""

    def __init__(self, future):
        self._future = future

    def get(self):
        return _reduce_output(self._future.get())


class ReducingClient:
    """Proxy over a ``TrainingWorker`` (torchrun) or ``RayWorkerGroup`` (Ray) training client whose
    ``train_batch``/``infer_batch`` outputs carry reduced scalar metrics; everything else passes through."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    def _call(self, name, data):
        out = getattr(self._client, name)(data)
        if hasattr(out, "get") and not hasattr(out, "keys"):
            return _ReducedFuture(out)
        return _reduce_output(out)

    def train_batch(self, data):
        return self._call("train_batch", data)

    def infer_batch(self, data):
        return self._call("infer_batch", data)


# verl's console logger prints one line per step: "step:N - key:value - key:value ..."
STEP_LINE = re.compile(r"step:(\d+) - (.*)")
METRIC = re.compile(r"([\w/()]+):([-\d.e+]+)")


def parse_step_line(line: str) -> tuple[int, dict[str, float]] | None:
    """(step, {metric: value}) of one verl console-logger line, or None for any other line."""
    m = STEP_LINE.search(line)
    if m is None:
        return None
    return int(m.group(1)), {k: float(v) for k, v in METRIC.findall(m.group(2))}


def metric_series(log: str, key: str) -> dict[int, float]:
    """{step: value} of ``key`` over a whole trainer log."""
    series = {}
    for line in log.splitlines():
        parsed = parse_step_line(line)
        if parsed is not None and key in parsed[1]:
            series[parsed[0]] = parsed[1][key]
    return series
