"""The statistics of Table 3, shared by eval, report and the demo: a row's Average@k with its 95% CI, the average
over benchmarks, and the paired comparison of two methods.

One row. For per-question accuracies p_i = correct_i / k (i = 1..n): Average@k = 100 * mean_i p_i (percent), 95% CI
+- 1.96 * 100 * std_i(p_i) / sqrt(n) (normal, across questions, clipped to [0, 100]; none for n < 2). Over B
benchmarks: the unweighted mean of their Average@k, se = sqrt(sum_b se_b^2) / B.

Two rows. Paired comparison of two methods evaluated on the same questions: mean difference and a paired bootstrap CI.

For methods A and B evaluated on the same questions of benchmarks b = 1..m, with per-question accuracies
p^A_bi, p^B_bi in [0, 1] (Average@k: correct samples / k), the per-question difference is d_bi = p^A_bi - p^B_bi and

    diff = 100 * (1/m) * sum_b mean_i d_bi                (percentage points; the Avg column's difference)

The 95% CI is the percentile interval of ``reps`` bootstrap replicates of ``diff``: each replicate resamples the
questions of every benchmark with replacement (the same draw for A and B: paired), so question difficulty,
shared by both methods, cancels out and the interval is far narrower than comparing two independent CIs.
``distinguishable`` is False when the CI contains 0. Replicates are seeded: the same inputs give the same CI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

DEFAULT_REPS = 4000
Z95 = 1.959963984540054  # two-sided 95% normal quantile


def mean_ci95(per_question_acc: Sequence[float]) -> tuple[float, list[float] | None]:
    """(100 * mean p_i, [lo, hi]) in percent; normal CI across questions, clipped to [0, 100], None if n < 2."""
    values = [float(v) for v in per_question_acc]
    n = len(values)
    if n == 0:
        raise ValueError("no per-question accuracies to average")
    if any(not (0.0 <= v <= 1.0) for v in values):
        raise ValueError(f"per-question accuracies must lie in [0, 1], got {values}")
    mean = sum(values) / n
    if n < 2:
        return 100.0 * mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = Z95 * math.sqrt(var / n)
    return 100.0 * mean, [100.0 * max(0.0, mean - half), 100.0 * min(1.0, mean + half)]


def standard_error(per_question_acc: Sequence[float]) -> float | None:
    """Standard error of the mean per-question accuracy, in percent (None if n < 2)."""
    n = len(per_question_acc)
    if n < 2:
        return None
    mean = sum(per_question_acc) / n
    var = sum((v - mean) ** 2 for v in per_question_acc) / (n - 1)
    return 100.0 * math.sqrt(var / n)


def average_over_benchmarks(per_question_accs: Sequence[Sequence[float]]) -> tuple[float, list[float] | None]:
    """Unweighted mean of the benchmarks' Average@k (percent) and its 95% CI (se = sqrt(sum se_b^2) / B)."""
    if not per_question_accs:
        raise ValueError("no benchmarks to average")
    means = [mean_ci95(p)[0] for p in per_question_accs]
    ses = [standard_error(p) for p in per_question_accs]
    avg = sum(means) / len(means)
    if any(se is None for se in ses):
        return avg, None
    half = Z95 * math.sqrt(sum(se * se for se in ses)) / len(ses)
    return avg, [max(0.0, avg - half), min(100.0, avg + half)]


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
