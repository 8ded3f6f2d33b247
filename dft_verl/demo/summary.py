"""The demo's summary: Table 3 (dft_verl.report) read back, compact, with wall times and data figures.

report/summary.md     what was run (model, preset, questions, the base model's sampling accuracy), one line per
                      row (Average@k [95% CI] on the held-out questions, Δ base, answered share, the paper's average,
                      wall seconds summed over every run, from RUNS_DIR/timings.tsv; the row's CPU core-seconds and
                      FLOPs from dft_verl.cost, the offline-RL rows with the sampling they train on, †), then
                      dft_verl.report's paired comparisons (with their FLOPs ratio) and ranks (report/table3.md); the
                      accuracy-vs-compute figure is report/accuracy_vs_compute.png
report/summary.json   the same as data, plus the stage timings and what a rerun reused
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from dft_verl import cost
from dft_verl.stats import mean_ci95
from dft_verl.report import (collect, device_unit, headline_scores, paired_comparisons, paired_markdown,
                             ranks_markdown, write_text)
from dft_verl.table3.rows import COMPARISONS, ROWS

NO_ANSWER = ("no_answer", "empty_response")


def row_record(key: str, results: dict, results_path: Path) -> dict:
    """Average@k, CI, answered share and mean response length of one row's results.json (single benchmark)."""
    benches = results["benchmarks"]
    if len(benches) != 1:
        raise ValueError(f"{results_path}: expected one benchmark, found {list(benches)}")
    (bench, entry), = benches.items()
    avg, ci = mean_ci95(entry["per_question_acc"])
    samples = pd.read_parquet(Path(results_path).parent / "samples" / f"{bench}.parquet")
    answered = 100.0 * float((~samples["reason"].isin(NO_ANSWER)).mean())
    return {"row": key, "benchmark": bench, "k": int(results["k"]), "n_questions": len(entry["per_question_acc"]),
            "avg_at_k": avg, "ci95": ci, "answered": answered,
            "mean_response_chars": float(samples["response"].str.len().mean())}


def seconds_per_row(out: Path) -> dict[str, int]:
    """Wall seconds spent on each row over every run (RUNS_DIR/timings.tsv: row, seconds, time per line)."""
    path = Path(out) / "timings.tsv"
    total: dict[str, int] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) == 3 and fields[1].isdigit():
                total[fields[0]] = total.get(fields[0], 0) + int(fields[1])
    return total


def build_rows(table: list, out: Path, row_seconds: dict[str, int],
               row_costs: list[cost.RowCost] | None = None) -> list[dict]:
    """One record per row of ``table`` (dft_verl.report.collect(out)) with results, in table order; Δ base in
    points; seconds from ``row_seconds``; the cost columns (dft_verl.cost.RECORD_KEYS) from ``row_costs``."""
    by_row = {c.row: c.as_record() for c in row_costs or []}
    records = []
    for row, results in table:
        if results is None:
            continue
        rec = row_record(row.key, results, out / row.key / "eval" / "results.json")
        rec.update(method=row.method, setting=row.setting, label=row.label, paper_average=row.paper_average,
                   seconds=row_seconds.get(row.key), **(by_row.get(row.key) or dict.fromkeys(cost.RECORD_KEYS)))
        records.append(rec)
    base = next((r["avg_at_k"] for r in records if r["row"] == "base"), None)
    for r in records:
        r["delta_vs_base"] = None if base is None or r["row"] == "base" else r["avg_at_k"] - base
    return records


def _stats(path: Path) -> dict:
    """A pipeline stage's statistics file ({} when absent)."""
    return json.loads(path.read_text()) if path.is_file() else {}


def questions_for_half_width(comparison: dict, target: float = 5.0) -> int:
    """Held-out questions a paired comparison needs for a 95% CI half-width of ``target`` points: the CI narrows as
    1/sqrt(n), so n' = ceil(n * (half-width / target)^2) (the per-question spread taken as measured)."""
    half = (comparison["ci_hi"] - comparison["ci_lo"]) / 2
    return max(1, math.ceil(comparison["n_questions"] * (half / target) ** 2))


def sizing_line(comparisons: list[dict], target: float = 5.0) -> str:
    """The headline comparison (the first one present: DFT offline vs RFT, ...) and the n_test it needs."""
    if not comparisons:
        return ""
    c = comparisons[0]
    half = (c["ci_hi"] - c["ci_lo"]) / 2
    need = questions_for_half_width(c, target)
    verdict = "reached" if half <= target else (f"needs about {need} held-out questions (`task.n_test={need}`: "
                                                "generated questions are extended and only the added ones sampled; "
                                                "nothing is retrained)")
    return (f"\nHeadline comparison {c['label_a']} − {c['label_b']}: 95% CI half-width {half:.1f} points on "
            f"{c['n_questions']} questions; a half-width of {target:g} points {verdict}.\n")


def seed_spread(seed_dirs: list[Path]) -> tuple[list[dict], list[dict]]:
    """Across the runs of the rows with different training seeds (one RUNS_DIR each): per row, and per paired
    comparison A − B, the scores of every seed with results and their mean, sample sd (ddof=1), min and max, in
    points. Only rows / comparisons with results from at least two seeds."""
    scores: dict[str, dict[int, float]] = {}
    for seed, folder in enumerate(seed_dirs):
        if Path(folder).is_dir():
            for key, value in headline_scores(collect(folder))[1].items():
                scores.setdefault(key, {})[seed] = value

    def stats(name: str, values: list[float]) -> dict:
        n = len(values)
        mean = sum(values) / n
        sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
        return {"name": name, "values": values, "n": n, "mean": mean, "sd": sd, "min": min(values),
                "max": max(values)}

    labels = {row.key: row.label for row in ROWS}
    rows = [stats(labels[k], [v[s] for s in sorted(v)]) for k, v in scores.items() if len(v) >= 2]
    pairs = []
    for a, b in COMPARISONS:
        common = sorted(set(scores.get(a, {})) & set(scores.get(b, {})))
        if len(common) >= 2:
            pairs.append(stats(f"{labels[a]} − {labels[b]}", [scores[a][s] - scores[b][s] for s in common]))
    return rows, pairs


def spread_markdown(rows: list[dict], pairs: list[dict]) -> str:
    if not rows:
        return ""
    lines = ["", "Spread across training seeds (same data, base model and evaluation; points):", "",
             "| row / comparison | seeds | mean | sd | min | max |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows + pairs:
        lines.append(f"| {r['name']} | {r['n']} | {r['mean']:+.2f} | {r['sd']:.2f} | {r['min']:+.2f} | {r['max']:+.2f} |"
                     if r in pairs else
                     f"| {r['name']} | {r['n']} | {r['mean']:.2f} | {r['sd']:.2f} | {r['min']:.2f} | {r['max']:.2f} |")
    return "\n".join(lines) + "\n"


def to_markdown(records: list[dict], header: str, unit: str = "device-s") -> str:
    if not records:
        return header + "\n\nNo row has results yet.\n"
    k = records[0]["k"]
    lines = [header, "", f"| row | method (setting) | Avg@{k} [95% CI] | Δ base | answered | paper avg | wall s (all runs) "
             f"| {unit} | FLOPs |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        ci = f" [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}]" if r["ci95"] else ""
        delta = "—" if r["delta_vs_base"] is None else f"{r['delta_vs_base']:+.1f}"
        paper = "—" if r["paper_average"] is None else f"{r['paper_average']:.2f}"
        secs = "—" if r["seconds"] is None else str(r["seconds"])
        device = "—" if r.get("device_s") is None else f"{r['device_s']:,.0f}"
        flops = "—" if r.get("flops") is None else f"{r['flops']:.3g}" + (" †" if r.get("includes_sampling") else "")
        lines.append(f"| {r['row']} | {r['label']} | {r['avg_at_k']:.1f}{ci} | {delta} | "
                     f"{r['answered']:.0f}% | {paper} | {secs} | {device} | {flops} |")
    if any(r.get("includes_sampling") for r in records):
        lines += ["", "FLOPs ≈ 6·N·trained + 2·N·(generated + scored) tokens (dft_verl.cost; evaluation apart); † with "
                  "the offline sampling the row trains on, run once for all four offline-RL rows."]
    return "\n".join(lines) + "\n"


def write_summary(out: Path, cfg, timings: dict[str, float], row_seconds: dict[str, int], skipped: list[str],
                  seed_dirs: list[Path] = ()) -> dict:
    """Write report/summary.md and summary.json under ``out`` (``seed_dirs``: the RUNS_DIR of each training seed,
    for the spread); print the markdown; return the summary dict."""
    out = Path(out)
    table = collect(out)
    row_costs = cost.table_costs(out, [row for row, _ in table])
    records = build_rows(table, out, seconds_per_row(out), row_costs)
    comparisons = paired_comparisons(table, row_costs=row_costs)
    verify = _stats(out / "data" / "verify" / "verify_stats.json")
    filt = _stats(out / "data" / "filter" / "filter_stats.json")
    data_line = ""
    if "acceptance_rate" in verify:
        data_line = (f" The base model sampled {verify.get('n_responses')} responses to the training questions "
                     f"(accuracy {100 * verify['acceptance_rate']:.1f}%); {filt.get('n_sft', '?')} correct ones are the "
                     f"offline-RL data (RFT, iw-SFT, DFT), {filt.get('n_dpo_pairs', '?')} correct/wrong pairs train DPO.")
    n_q = records[0]["n_questions"] if records else "?"
    made_by = sorted({(r.get("prompt_template", "paper"), r.get("dtype") or "not recorded",
                       r.get("judge", "not recorded")) for _, r in table if r is not None})
    made_by_line = "; ".join(f"prompt template {t}, sampled in {d}, judge {j}" for t, d, j in made_by)
    trained_in = sorted({r.get("train_dtype") or "not recorded" for row, r in table if r is not None and row.trainer})
    made_by_line += f"; trained in {' and '.join(trained_in)}" if trained_in else ""
    header = (f"Table 3 rehearsed on CPU (preset {cfg.preset}): {n_q} held-out questions (the Math500 column of "
              f"report/table3.md), each row trained from the same base model by its recipe ({made_by_line})."
              f"{data_line}")
    spread_rows, spread_pairs = seed_spread(list(seed_dirs))
    md = (to_markdown(records, header, device_unit(row_costs)) + paired_markdown(comparisons) + ranks_markdown(table, comparisons)
          + sizing_line(comparisons) + spread_markdown(spread_rows, spread_pairs))
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if k != "total")
    rows = ", ".join(f"{k} {v} s" for k, v in row_seconds.items())
    md += f"\nWall time of this run: {stages}; rows: {rows}; total {timings.get('total', 0) / 60:.1f} min.\n"
    write_text(out / "report" / "summary.md", md)
    summary = {"rows": records, "paired": comparisons, "seed_spread": {"rows": spread_rows, "paired": spread_pairs}, "timings": dict(timings), "row_seconds": dict(row_seconds),
               "skipped": list(skipped), "data": {"verify": verify, "filter": filt}, "preset": str(cfg.preset)}
    write_text(out / "report" / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    print("\n" + md)
    return summary


def list_outputs(out_dir: Path) -> str:
    """Where the demo's files went: one line per top-level output that exists."""
    out_dir = Path(out_dir)
    lines = [f"All outputs under {out_dir}:"]
    described = [
        ("task/", "train.jsonl, test.jsonl, format.jsonl: the questions (question, answer, solution)"),
        ("bench/", "math500/test.jsonl: the held-out questions as dft_verl.eval reads them"),
        ("warmup/", "the format warm-up (the SFT row): checkpoints/sft/global_step_N/huggingface = base model"),
        ("data/", "the offline pipeline: prepare/ (rl, sft), sample/, verify/, filter/ (sft = offline-RL data, dpo)"),
        ("checkpoints/", "<row>/global_step_N/[actor/]huggingface for every trained row"),
        *[(f"{row.key}/", f"{row.method} ({row.setting}): train.log, eval/results.json, eval/samples/, token_probs/, "
           "steps/, cost/ and metrics/ (what it cost: dft_verl.cost)")
          for row in ROWS],
        ("report/", "table3.md/.csv, paired.csv, fig1/fig2 plots, accuracy_vs_compute.png (dft_verl.report); "
                    "summary.md, summary.json"),
        ("demo.log", "the demo's and the Table-3 runner's lines: each step run or skipped, and why"),
        ("seeds/", "<s>/: the trained rows again with SEED=s (same layout as above; --seeds)"),
        ("tensorboard/", "<row>/: every row's training scalars and evaluation scores (tensorboard --logdir)"),
        ("timings.tsv", "wall seconds per row, one line per run"),
    ]
    for rel, what in described:
        if (out_dir / rel).exists():
            lines.append(f"  {rel:22s} {what}")
    return "\n".join(lines)
