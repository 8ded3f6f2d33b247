"""Paired comparison of two methods evaluated on the same questions: mean difference and a paired bootstrap CI.

For methods A and B evaluated on the same questions of benchmarks b = 1..m, with per-question accuracies
p^A_bi, p^B_bi in [0, 1] (Average@k: correct samples / k), the per-question difference is d_bi = p^A_bi - p^B_bi and

    diff = 100 * (1/m) * sum_b mean_i d_bi                (percentage points; the Avg column's difference)

The 95% CI is the percentile interval of ``reps`` bootstrap replicates of ``diff``: each replicate resamples the
questions of every benchmark with replacement (the same draw for A and B: paired), so question difficulty,
shared by both methods, cancels out and the interval is far narrower than comparing two independent CIs.
``distinguishable`` is False when the CI contains 0. Replicates are seeded: the same inputs give the same CI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

DEFAULT_REPS = 4000


@dataclass(frozen=True)
class PairedDiff:
    """A - B in percentage points over ``n_questions`` paired questions in ``benchmarks``."""

    diff: float
    ci95: tuple[float, float]
    n_questions: int
    benchmarks: tuple[str, ...]

    @property
    def distinguishable(self) -> bool:
        return not (self.ci95[0] <= 0.0 <= self.ci95[1])

    def verdict(self, a: str, b: str) -> str:
        if not self.distinguishable:
            return "not distinguishable"
        return f"{a} better" if self.diff > 0 else f"{b} better"


def paired_bootstrap(a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]],
                     reps: int = DEFAULT_REPS, seed: int = 0) -> PairedDiff:
    """Paired difference A - B over the benchmarks both were evaluated on (question lists must align).

    a, b: {benchmark: per-question accuracies in question order}. Raises ValueError when they share no benchmark
    or a shared benchmark has different question counts (then the questions cannot be paired)."""
    shared = tuple(name for name in a if name in b)
    if not shared:
        raise ValueError(f"no benchmark evaluated for both methods (A: {sorted(a)}, B: {sorted(b)})")
    diffs = []
    for name in shared:
        pa, pb = np.asarray(a[name], dtype=float), np.asarray(b[name], dtype=float)
        if pa.shape != pb.shape or pa.ndim != 1 or pa.size == 0:
            raise ValueError(f"{name}: {pa.size} vs {pb.size} questions; a paired comparison needs the same questions")
        if ((pa < 0) | (pa > 1) | (pb < 0) | (pb > 1)).any():
            raise ValueError(f"{name}: per-question accuracies must lie in [0, 1]")
        diffs.append(pa - pb)
    point = 100.0 * float(np.mean([d.mean() for d in diffs]))
    rng = np.random.default_rng(seed)
    replicates = np.zeros(reps)
    for d in diffs:  # each benchmark resampled on its own: the Avg column weighs benchmarks, not questions
        replicates += d[rng.integers(0, d.size, size=(reps, d.size))].mean(axis=1)
    replicates *= 100.0 / len(diffs)
    lo, hi = np.percentile(replicates, [2.5, 97.5])
    return PairedDiff(point, (float(lo), float(hi)), int(sum(d.size for d in diffs)), shared)
