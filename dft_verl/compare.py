"""Two evaluations of the same questions, compared question by question: A - B with a paired bootstrap 95% CI.

    python -m dft_verl.compare EVAL_A EVAL_B [--reps 10000]

EVAL_A and EVAL_B are ``python -m dft_verl.eval --out`` folders (the same checkpoint sampled in float32 and
bfloat16, two checkpoints, two backends, ...). For every benchmark both hold, the questions are paired by their
index, prompt and gold answer read from ``samples/<bench>.parquet`` (a question missing from either side, or asked
differently, is an error naming it), each side's per-question accuracy p_i = correct_i / k, and

    diff = 100 * mean over benchmarks of mean_i (p_i^A - p_i^B)     percentage points

with the 95% CI of ``dft_verl.stats.paired_bootstrap`` (each benchmark resampled on its own). It prints the
settings in which the two differ (model, dtype, backend, k, ...), the difference and its CI, and whether 0 lies
inside it ("not distinguishable"); ``--json`` writes the same as a file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from dft_verl.benchmarks import BENCHMARKS
from dft_verl.stats import DEFAULT_REPS, paired_bootstrap


def _folder(path: str | Path) -> tuple[dict, dict[str, pd.DataFrame], dict[str, dict]]:
    """(results.json, {bench: samples}, {bench: samples meta}) of an evaluation folder."""
    path = Path(path)
    results_path = path / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path}: no results.json (is {path} a `python -m dft_verl.eval --out` folder "
                                f"whose evaluation finished?)")
    results = json.loads(results_path.read_text(encoding="utf-8"))
    samples, metas = {}, {}
    for bench in results.get("benchmarks", {}):
        parquet, meta = path / "samples" / f"{bench}.parquet", path / "samples" / f"{bench}.json"
        if not parquet.is_file():
            raise FileNotFoundError(f"{parquet}: results.json lists {bench} but its samples are missing")
        samples[bench] = pd.read_parquet(parquet)
        metas[bench] = json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
    return results, samples, metas


def per_question(samples: pd.DataFrame, k: int, where: str) -> dict[int, tuple[str, str, float]]:
    """{question index: (prompt, gold, p_i)} of one benchmark's judged samples, k per question
    (``dft_verl.eval.summarize_samples``: p_i and its checks)."""
    from dft_verl.eval import summarize_samples

    accuracy = summarize_samples(samples, k, where)["per_question_acc"]  # in index order
    firsts = samples[samples["sample_idx"] == 0].sort_values("index", kind="stable")
    return {int(row["index"]): (json.dumps([dict(m) for m in row["prompt"]], sort_keys=True),
                                str(row["ground_truth"]), p)
            for row, p in zip(firsts.to_dict("records"), accuracy)}


def paired_accuracies(a: dict[int, tuple], b: dict[int, tuple], where: tuple[str, str]) -> tuple[list, list]:
    """The two sides' p_i over the same questions, in index order; raises naming a question not asked alike."""
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))[:5]
        raise ValueError(f"{where[0]} and {where[1]} hold different questions ({len(a)} vs {len(b)}; e.g. index "
                         f"{only}): a paired comparison needs the same questions (evaluate both with the same "
                         f"--limit and data)")
    for index in sorted(a):
        if a[index][:2] != b[index][:2]:
            raise ValueError(f"{where[0]} and {where[1]}: question index {index} has a different prompt or gold "
                             f"answer on each side")
    return [a[i][2] for i in sorted(a)], [b[i][2] for i in sorted(b)]


SETTINGS = ("model", "dtype", "k", "temperature", "max_new_tokens", "seed", "prompt_template", "judge")


def compare(eval_a: str | Path, eval_b: str | Path, reps: int = DEFAULT_REPS) -> dict:
    """The comparison as a dict: settings that differ, benchmarks, diff, ci95, distinguishable, n_questions."""
    (ra, sa, ma), (rb, sb, mb) = _folder(eval_a), _folder(eval_b)
    shared = [bench for bench in BENCHMARKS if bench in sa and bench in sb]
    if not shared:
        raise ValueError(f"{eval_a} ({', '.join(sa) or 'none'}) and {eval_b} ({', '.join(sb) or 'none'}) share no "
                         f"benchmark")
    acc_a, acc_b = {}, {}
    for bench in shared:
        where = (f"{eval_a}/samples/{bench}.parquet", f"{eval_b}/samples/{bench}.parquet")
        acc_a[bench], acc_b[bench] = paired_accuracies(per_question(sa[bench], ra["k"], where[0]),
                                                       per_question(sb[bench], rb["k"], where[1]), where)
    diff = paired_bootstrap(acc_a, acc_b, reps=reps)
    backend = {side: sorted({m.get("backend", "?") for m in metas.values()}) for side, metas in (("a", ma), ("b", mb))}
    differ = {key: [ra.get(key), rb.get(key)] for key in SETTINGS if ra.get(key) != rb.get(key)}
    if backend["a"] != backend["b"]:
        differ["backend"] = [", ".join(backend["a"]), ", ".join(backend["b"])]
    return {"a": str(eval_a), "b": str(eval_b), "settings_that_differ": differ, "benchmarks": list(shared),
            "n_questions": diff.n_questions, "a_mean": 100 * sum(sum(v) / len(v) for v in acc_a.values()) / len(shared),
            "b_mean": 100 * sum(sum(v) / len(v) for v in acc_b.values()) / len(shared), "diff": diff.diff,
            "ci95": list(diff.ci95), "distinguishable": diff.distinguishable}


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m dft_verl.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("eval_a", help="an evaluation folder (python -m dft_verl.eval --out)")
    p.add_argument("eval_b", help="another evaluation folder, of the same questions")
    p.add_argument("--reps", type=int, default=DEFAULT_REPS, help="bootstrap replicates")
    p.add_argument("--json", default=None, help="also write the comparison to this file")
    args = p.parse_args(argv)
    out = compare(args.eval_a, args.eval_b, args.reps)
    differ = "; ".join(f"{k}: {a} vs {b}" for k, (a, b) in out["settings_that_differ"].items()) or "none"
    lo, hi = out["ci95"]
    print(f"A = {out['a']}\nB = {out['b']}\nsettings that differ: {differ}\n"
          f"{', '.join(out['benchmarks'])}: {out['n_questions']} paired questions; A {out['a_mean']:.2f}, "
          f"B {out['b_mean']:.2f}; A - B = {out['diff']:+.2f} points, 95% CI [{lo:+.2f}, {hi:+.2f}] "
          f"({'distinguishable' if out['distinguishable'] else 'not distinguishable'})")
    if args.json:
        from dft_verl.eval import write_json

        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
