"""The report's figures, as PNG files (matplotlib, Agg backend).

- Fig. 1 (paper): Average@k (percent) against training step, one panel per benchmark evaluated, plus the
  five-benchmark mean where all five were.
- Fig. 2 (paper): histogram of the probability a model gives each target token of the SFT training set, after
  training (one panel per method) with the base model ("before") overlaid; y is the fraction of target tokens
  in each probability bin, on a log axis.
- Accuracy against compute: each trained row's headline score (with its 95% CI) against the FLOPs it took
  (dft_verl.cost: training plus, for the offline-RL rows, the sampling they train on), log-scale x; the base model
  as a horizontal line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from dft_verl.benchmarks import BENCHMARKS, DISPLAY_NAMES
from dft_verl.atomic import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> None:
    plt = _pyplot()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def plot_accuracy_vs_step(curves: Mapping[str, Sequence[tuple[int, Mapping[str, float]]]],
                          path: str | os.PathLike) -> list[str]:
    """Fig. 1: `curves` = {label: [(step, {benchmark or "average": percent})]} -> one line per label in a panel per
    benchmark that has points (paper order, then the five-benchmark "average"); returns the panels drawn."""
    if not curves:
        raise ValueError("no accuracy curves to plot")
    plt = _pyplot()
    panels = [name for name in (*BENCHMARKS, "average") if any(name in p for pts in curves.values() for _, p in pts)]
    if not panels:
        raise ValueError("no accuracy curve has a point")
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    legend_cols = min(5, len(curves))
    legend_h = 0.3 * -(-len(curves) // legend_cols)  # inches under the panels
    width, height = max(4.4 * ncols, 2.6 * legend_cols), 3.6 * nrows + 0.5 + legend_h
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.remove()
    for ax, name in zip(axes.flat, panels):
        for label, points in curves.items():
            xs = [step for step, p in points if name in p]
            ys = [p[name] for _, p in points if name in p]
            if xs:
                ax.plot(xs, ys, marker="o", markersize=3, label=label)
        ax.set_title(DISPLAY_NAMES.get(name, "Average of 5"))
        ax.set_xlabel("training step")
        ax.set_ylabel("Average@k (%)")
        ax.grid(alpha=0.3)
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes.flat[: len(panels)]),
                          key=lambda hl: len(hl[1]))
    fig.legend(handles, labels, loc="lower center", ncol=legend_cols, frameon=False)
    fig.suptitle("Accuracy during training")
    fig.tight_layout(rect=(0, (legend_h + 0.1) / height, 1, 1 - 0.4 / height))
    _save(fig, path)
    return panels


def histogram_fractions(probs: np.ndarray, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(edges [bins + 1] over [0, 1], fraction of tokens per bin); the last bin includes p = 1."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.size == 0:
        raise ValueError("empty probability array")
    if probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"probabilities must lie in [0, 1], got range [{probs.min()}, {probs.max()}]")
    counts, edges = np.histogram(probs, bins=bins, range=(0.0, 1.0))
    return edges, counts / probs.size


def plot_token_prob_histograms(after: Mapping[str, np.ndarray], path: str | os.PathLike,
                               before: np.ndarray | None = None, bins: int = 20) -> None:
    """Fig. 2: one panel per trained model in `after` (bars), `before` (base) drawn as a black step outline."""
    if not after and before is None:
        raise ValueError("no token probabilities to plot")
    plt = _pyplot()
    panels = list(after.items()) or [("base model", before)]
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.5 * rows), squeeze=False, sharey=True)
    for ax, (label, probs) in zip(axes.flat, panels):
        edges, frac = histogram_fractions(probs, bins)
        ax.bar(edges[:-1], frac, width=np.diff(edges), align="edge", alpha=0.7,
               label="after training" if after else "base model")
        if before is not None and after:
            b_edges, b_frac = histogram_fractions(before, bins)
            ax.stairs(b_frac, b_edges, color="black", linewidth=1.2, label="base (before)")
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel("token probability")
        ax.set_ylabel("fraction of target tokens")
        ax.set_title(label)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Target-token probabilities on the training set")
    fig.tight_layout()
    _save(fig, path)


def plot_accuracy_vs_compute(points: Sequence[tuple[str, float, float, Sequence[float] | None]],
                             path: str | os.PathLike, score_label: str, base: float | None = None) -> None:
    """``points`` = [(label, flops, score, [ci_lo, ci_hi] or None)], flops > 0; ``base``: the base model's score."""
    points = [p for p in points if p[1] and p[1] > 0]
    if not points:
        raise ValueError("no row with a positive compute to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (label, flops, score, ci) in enumerate(points):
        err = None if ci is None else [[score - ci[0]], [ci[1] - score]]
        ax.errorbar([flops], [score], yerr=err, fmt="o", capsize=3, color=f"C{i % 10}", label=label)
        ax.annotate(label, (flops, score), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if base is not None:
        ax.axhline(base, color="grey", linestyle="--", linewidth=1, label="base model")
    ax.set_xscale("log")
    ax.set_xlabel("compute, FLOPs (6N·trained + 2N·(generated + scored) tokens; log scale)")
    ax.set_ylabel(f"{score_label} (%)")
    ax.set_title("Accuracy against compute per Table-3 row (95% CI)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    _save(fig, path)
