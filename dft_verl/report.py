"""Table 3 of the paper from our evaluation runs, beside the paper's numbers, plus the Fig. 1 / Fig. 2 plots.

    python -m dft_verl.report RUNS_DIR [--out RUNS_DIR/report] [--no-plots]

Layout read under RUNS_DIR (one sub-folder per Table-3 row; a missing folder or file shows "—"):

    RUNS_DIR/<row>/eval/results.json                 final model, written by `python -m dft_verl.eval`
    RUNS_DIR/<row>/eval/step_<N>/results.json        optional: checkpoint at training step N (Fig. 1)
    RUNS_DIR/<row>/steps/train.json                  optional: the Table-3 runner's record of the row's training
                                                     (its "dtype" is the note's training dtype; cost records)
    RUNS_DIR/<row>/token_probs/token_probs.npy       optional: `python -m dft_verl.analysis.token_probs` of the
                                                     trained model on the SFT training set (Fig. 2);
                                                     base/token_probs is the "before training" distribution

    <row> in: base, sft, iw_sft_sft, dft_sft (trained on the SFT data); dpo, rft (offline RL);
              ppo, grpo (online RL); iw_sft_offline, dft_offline (offline RL data).

Cells. Each benchmark cell is Average@k in percent with its 95% CI, both recomputed here from the results file's
`per_question_acc` (p_i = correct_i / k): mean 100 * mean_i p_i, CI +- 1.96 * 100 * std_i(p_i) / sqrt(n)
(normal, across questions, clipped to [0, 100]; `dft_verl.stats.mean_ci95`). "Avg" is the unweighted mean of the
five benchmarks, shown only when all five are present; its CI uses se = sqrt(sum_b se_b^2) / 5. "Paper" is the
paper's Table 3 average (Qwen2.5-Math-1.5B); the paper's per-benchmark numbers are not carried here ("—").
Delta = ours - paper, in percentage points.

Paired comparisons (COMPARISONS: DFT-offline vs RFT, DPO, PPO, GRPO, iw-SFT; DFT-SFT vs SFT), when both rows have
results on the same questions: A − B in points with a paired bootstrap 95% CI (``dft_verl.stats``), and
"not distinguishable" when the CI contains 0; the paper's A − B beside it.

Ranks: every row with results is scored on the benchmarks all of them have (the mean of their Average@k; "Avg"
when all five are there) and ranked beside the paper's averages; the paper's two claims (DFT on offline-RL data
leads; DFT beats SFT on SFT data) are checked on ours, saying plainly where the orderings differ.

Compute: what each row cost (``dft_verl.cost``, from the records its steps left under RUNS_DIR): wall seconds,
device-seconds (CPU core-seconds on CPU, GPU-seconds on GPUs), tokens generated / trained / scored and FLOPs
~= 6·N·trained + 2·N·(generated + scored), N = parameters. The offline-RL rows include the sampling they train on
(run once, shown on its own line); evaluation is apart. The paired comparisons add the FLOPs ratio A / B.

Writes RUNS_DIR/report/table3.md (table, compute, the paired comparisons and the ranks), table3.csv (CSV: numbers
only, empty where missing; the cost columns after the scores), paired.csv, and, when the inputs exist,
fig1_accuracy_vs_step.png, fig2_token_probs.png and accuracy_vs_compute.png. All files are written atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from dft_verl import cost as costs
from dft_verl.benchmarks import BENCHMARKS, DISPLAY_NAMES
from dft_verl.atomic import atomic_write
from dft_verl.stats import DEFAULT_REPS, average_over_benchmarks, mean_ci95, paired_bootstrap
from dft_verl.table3.rows import COMPARISONS, ROWS, Row

logger = logging.getLogger("dft_verl.report")

DASH = "—"


# The paper's per-benchmark Table-3 numbers are not reproduced here; a cell with no paper number prints "—".
PAPER_PER_BENCHMARK: dict[str, dict[str, float]] = {}

_STEP_DIR = re.compile(r"^step_(\d+)$")


def read_results(path: str | os.PathLike) -> dict:
    """A results.json, checked for the fields the table needs (errors name the file and field)."""
    path = Path(path)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    benches = results.get("benchmarks")
    if not isinstance(benches, dict):
        raise ValueError(f"{path}: field 'benchmarks' missing or not an object")
    for name, entry in benches.items():
        pq = entry.get("per_question_acc") if isinstance(entry, dict) else None
        if not isinstance(pq, list) or not pq:
            raise ValueError(f"{path}: benchmarks.{name}.per_question_acc missing or empty")
    return results


@dataclass(frozen=True)
class Cell:
    """Ours (percent, CI or None) and the paper's number for one table cell; None where absent."""

    ours: float | None
    ci95: list[float] | None
    paper: float | None

    @property
    def delta(self) -> float | None:
        return None if self.ours is None or self.paper is None else self.ours - self.paper


def row_cells(row: Row, results: dict | None) -> dict[str, Cell]:
    """Cells of one row keyed by benchmark name and "average"."""
    cells = {}
    benches = (results or {}).get("benchmarks", {})
    for b in BENCHMARKS:
        paper = PAPER_PER_BENCHMARK.get(row.key, {}).get(b)
        if b in benches:
            avg, ci = mean_ci95(benches[b]["per_question_acc"])
            cells[b] = Cell(avg, ci, paper)
        else:
            cells[b] = Cell(None, None, paper)
    if all(b in benches for b in BENCHMARKS):
        avg, ci = average_over_benchmarks([benches[b]["per_question_acc"] for b in BENCHMARKS])
        cells["average"] = Cell(avg, ci, row.paper_average)
    else:
        cells["average"] = Cell(None, None, row.paper_average)
    return cells


def collect(runs_dir: str | os.PathLike) -> list[tuple[Row, dict | None]]:
    """(row, results or None) for every Table-3 row, in table order."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs directory not found: {runs_dir}")
    out = []
    for row in ROWS:
        path = runs_dir / row.key / "eval" / "results.json"
        results = read_results(path) if path.is_file() else None
        if results is not None and row.trainer is not None:
            results["train_dtype"] = train_dtype(runs_dir / row.key)
        out.append((row, results))
    return out


def train_dtype(row_dir: Path) -> str | None:
    """The dtype the row's trainer computed in, as its finished train step recorded it (``dft_verl.table3``'s
    manifest, key "dtype"); None when the row was trained elsewhere or before the dtype was recorded."""
    try:
        return json.loads((row_dir / "steps" / "train.json").read_text(encoding="utf-8")).get("dtype")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def _num(x: float | None) -> str:
    return DASH if x is None else f"{x:.2f}"


def _ours(cell: Cell) -> str:
    if cell.ours is None:
        return DASH
    return f"{cell.ours:.2f}" + (f" [{cell.ci95[0]:.2f}, {cell.ci95[1]:.2f}]" if cell.ci95 else "")


def _delta(x: float | None) -> str:
    return DASH if x is None else f"{x:+.2f}"


def _settings_note(table: list[tuple[Row, dict | None]]) -> str:
    seen = sorted({(r["k"], r["temperature"], r["max_new_tokens"]) for _, r in table if r is not None})
    if not seen:
        return "No results found."
    note = "; ".join(f"Average@{k}, temperature {t}, max {m} new tokens" for k, t, m in seen)
    # Prompt template, dtype and judge of each row; results files written before eval recorded them: paper, not
    # recorded. The training dtype (collect) is that of the rows that train.
    for what, key, missing, flag in (("prompt template", "prompt_template", "paper",
                                      "PROMPT TEMPLATES DIFFER, rows not comparable"),
                                     ("dtype", "dtype", "not recorded", "DTYPES DIFFER"),
                                     ("training dtype", "train_dtype", "not recorded", "TRAINING DTYPES DIFFER"),
                                     ("judge", "judge", "not recorded", "JUDGES DIFFER")):
        rows_by_value: dict[str, list[str]] = {}
        for row, r in table:
            if r is not None and (key != "train_dtype" or row.trainer is not None):
                rows_by_value.setdefault(r.get(key) or missing, []).append(row.key)
        if not rows_by_value:
            continue
        if len(rows_by_value) == 1:
            note += f"; {what} {next(iter(rows_by_value))}"
        else:
            note += f"; {flag}: " + "; ".join(f"{v} ({', '.join(keys)})" for v, keys in sorted(rows_by_value.items()))
    limited = sorted({f"{row.key} (first {r['limit']})" for row, r in table if r is not None and r.get("limit")})
    if limited:
        note += "; SMOKE RUN, questions limited per benchmark: " + ", ".join(limited)
    return note


def paired_comparisons(table: list[tuple[Row, dict | None]], reps: int = DEFAULT_REPS,
                       row_costs: list[costs.RowCost] | None = None) -> list[dict]:
    """COMPARISONS whose two rows both have results: A - B with a paired bootstrap CI (dft_verl.stats), and the
    ratio of their FLOPs (``row_costs``; None where either has none)."""
    by_key = {row.key: (row, results) for row, results in table}
    flops = {c.row: c.total_flops for c in row_costs or []}
    out = []
    for a, b in COMPARISONS:
        (row_a, res_a), (row_b, res_b) = by_key[a], by_key[b]
        if res_a is None or res_b is None:
            continue
        acc = [{n: e["per_question_acc"] for n, e in r["benchmarks"].items()} for r in (res_a, res_b)]
        try:
            d = paired_bootstrap(acc[0], acc[1], reps=reps)
        except ValueError as e:
            logger.warning("paired comparison %s vs %s skipped: %s", a, b, e)
            continue
        paper = (None if row_a.paper_average is None or row_b.paper_average is None
                 else row_a.paper_average - row_b.paper_average)
        out.append({"a": a, "b": b, "label_a": f"{row_a.method} ({row_a.setting})",
                    "label_b": f"{row_b.method} ({row_b.setting})", "diff": d.diff, "ci_lo": d.ci95[0],
                    "ci_hi": d.ci95[1], "n_questions": d.n_questions, "benchmarks": ",".join(d.benchmarks),
                    "verdict": d.verdict(row_a.method, row_b.method), "paper_diff": paper,
                    "flops_ratio": flops[a] / flops[b] if flops.get(a) and flops.get(b) else None})
    return out


def paired_markdown(comparisons: list[dict]) -> str:
    if not comparisons:
        return ""
    lines = ["", "Paired comparisons (same questions; A − B in points, paired bootstrap 95% CI; FLOPs A / B from the "
             "compute table):", "",
             "| A | B | A − B [95% CI] | questions | verdict | paper A − B | FLOPs A / B |",
             "|---|---|---:|---:|---|---:|---:|"]
    for c in comparisons:
        ratio = DASH if c.get("flops_ratio") is None else f"{c['flops_ratio']:.3g}"
        lines.append(f"| {c['label_a']} | {c['label_b']} | {c['diff']:+.2f} [{c['ci_lo']:+.2f}, {c['ci_hi']:+.2f}] | "
                     f"{c['n_questions']} | {c['verdict']} | {_delta(c['paper_diff'])} | {ratio} |")
    return "\n".join(lines) + "\n"


def headline_scores(table: list[tuple[Row, dict | None]]) -> tuple[list[str], dict[str, float]]:
    """(benchmarks, {row key: score}): each row with results scored on the benchmarks every such row has, as the
    unweighted mean over those benchmarks of Average@k in percent (= "Avg" when all five are there)."""
    present = [r for _, r in table if r is not None]
    shared = [b for b in BENCHMARKS if present and all(b in r["benchmarks"] for r in present)]
    if not shared:
        return [], {}
    return shared, {row.key: average_over_benchmarks([r["benchmarks"][b]["per_question_acc"] for b in shared])[0]
                    for row, r in table if r is not None}


def _ranks(scores: dict[str, float]) -> dict[str, int]:
    """1 = highest; ties share the better rank."""
    return {k: 1 + sum(v > s for v in scores.values()) for k, s in scores.items()}


def ranks_markdown(table: list[tuple[Row, dict | None]], comparisons: list[dict]) -> str:
    """Our ordering of the rows beside the paper's (ranks among the rows both have), and the paper's two headline
    claims checked on ours: DFT on offline-RL data leads; DFT beats SFT on SFT data by a wide margin."""
    benches, ours = headline_scores(table)
    if not ours:
        return ""
    by_key = {row.key: row for row, _ in table}
    paper = {k: by_key[k].paper_average for k in ours if by_key[k].paper_average is not None}
    rank_ours, rank_paper = _ranks({k: ours[k] for k in paper}), _ranks(paper)
    label = "Avg" if len(benches) == len(BENCHMARKS) else "+".join(DISPLAY_NAMES[b] for b in benches)
    lines = ["", f"Ranks beside the paper's (score: {label}; ranks among the {len(paper)} rows with a paper average):",
             "", "| Method | ours | rank (ours) | paper | rank (paper) |", "|---|---:|---:|---:|---:|"]
    for key in sorted(ours, key=lambda k: -ours[k]):
        row = by_key[key]
        lines.append(f"| {row.label} | {ours[key]:.2f} | {rank_ours.get(key, DASH)} | "
                     f"{_num(row.paper_average)} | {rank_paper.get(key, DASH)} |")
    checks = []
    if "dft_offline" in ours:
        rank_all = _ranks(ours)
        top = [k for k in ours if rank_all[k] == 1]
        verdict = ("yes" if top == ["dft_offline"] else "tied for first" if "dft_offline" in top else "no")
        checks.append(f"DFT (offline RL) leads: paper yes; ours {verdict} (rank {rank_all['dft_offline']} of "
                      f"{len(ours)}; top: {', '.join(by_key[k].label for k in top)})")
    pair = next((c for c in comparisons if (c["a"], c["b"]) == ("dft_sft", "sft")), None)
    if pair is not None:
        checks.append(f"DFT − SFT on SFT data: paper {_delta(pair['paper_diff'])}; ours {pair['diff']:+.2f} "
                      f"[{pair['ci_lo']:+.2f}, {pair['ci_hi']:+.2f}] ({pair['verdict']})")
    agree = sum(rank_ours[k] == rank_paper[k] for k in rank_paper)
    checks.append(f"same rank as the paper: {agree} of {len(rank_paper)} rows")
    return "\n".join(lines + [""] + [f"- {c}" for c in checks]) + "\n"


def to_markdown(table: list[tuple[Row, dict | None]]) -> str:
    """Markdown Table 3: per benchmark ours [95% CI] and paper; Avg ours [CI], paper and delta."""
    header = ["Setting", "Method"]
    for b in BENCHMARKS:
        header += [DISPLAY_NAMES[b], "paper"]
    header += ["Avg", "Avg (paper)", "Δ Avg"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for row, results in table:
        cells = row_cells(row, results)
        out = [row.setting, row.method]
        for b in BENCHMARKS:
            out += [_ours(cells[b]), _num(cells[b].paper)]
        avg = cells["average"]
        out += [_ours(avg), _num(avg.paper), _delta(avg.delta)]
        lines.append("| " + " | ".join(out) + " |")
    notes = [
        "",
        f"Ours: {_settings_note(table)}; percent, 95% CI in brackets (normal, across questions). "
        "Avg: mean of the five benchmarks (shown when all five were evaluated). "
        "Paper: Table 3 averages of the DFT paper (Qwen2.5-Math-1.5B); per-benchmark paper numbers are not "
        "carried here. Δ = ours − paper, in points. — = not available.",
    ]
    return "\n".join(lines + notes) + "\n"


CSV_COLUMNS = ["row", "setting", "method"] + [
    f"{b}{suffix}" for b in (*BENCHMARKS, "average") for suffix in ("", "_ci_lo", "_ci_hi", "_paper", "_delta")
] + list(costs.RECORD_KEYS)


def to_csv_rows(table: list[tuple[Row, dict | None]], row_costs: list[costs.RowCost] | None = None) -> list[dict]:
    """One dict per row with CSV_COLUMNS keys; None where a value is missing."""
    by_row = {c.row: c.as_record() for c in row_costs or []}
    rows = []
    for row, results in table:
        cells = row_cells(row, results)
        rec = {"row": row.key, "setting": row.setting, "method": row.method}
        for name in (*BENCHMARKS, "average"):
            c = cells[name]
            rec[name] = c.ours
            rec[f"{name}_ci_lo"] = c.ci95[0] if c.ci95 else None
            rec[f"{name}_ci_hi"] = c.ci95[1] if c.ci95 else None
            rec[f"{name}_paper"] = c.paper
            rec[f"{name}_delta"] = c.delta
        rec.update(by_row.get(row.key) or dict.fromkeys(costs.RECORD_KEYS))
        rows.append(rec)
    return rows


def _int(x: int | None) -> str:
    return DASH if x is None else f"{x:,}"


def _sci(x: float | None) -> str:
    return DASH if x is None else "0" if x == 0 else f"{x:.3g}"


def device_unit(row_costs: list[costs.RowCost]) -> str:
    kinds = {c.device for c in row_costs if c.recorded} - {None}
    return {"cpu": "CPU core-s", "gpu": "GPU-s"}.get(kinds.pop(), "device-s") if len(kinds) == 1 else "device-s"


def compute_markdown(table: list[tuple[Row, dict | None]], row_costs: list[costs.RowCost],
                     data: costs.Cost | None) -> str:
    """The compute table: each row's training (plus its share of the sampling, †), then its evaluation."""
    if not any(c.recorded for c in row_costs):
        return "\nCompute: no cost records under this RUNS_DIR (rows run before dft_verl.cost, or elsewhere).\n"
    unit = device_unit(row_costs)
    lines = ["", "Compute per row (`dft_verl.cost`): FLOPs ≈ 6·N·trained + 2·N·(generated + scored) tokens, N = "
             "parameters; evaluation apart:", "",
             f"| Method | wall s | {unit} | generated tokens | trained tokens | scored tokens | FLOPs | "
             "eval wall s | eval generated tokens |", "|---|" + "---:|" * 8]
    by_row = {c.row: c for c in row_costs}
    for row, _ in table:
        c = by_row[row.key]
        if not c.recorded:
            lines.append(f"| {row.label} | no cost records | " + " | ".join([DASH] * 7) + " |")
            continue
        r = c.as_record()
        mark = " †" if r["includes_sampling"] else ""
        device = DASH if r["device_s"] is None else f"{r['device_s']:,.0f}"
        lines.append(f"| {row.label}{mark} | {r['wall_s']:,.0f} | {device} | {_int(r['generated_tokens'])} | "
                     f"{_int(r['trained_tokens'])} | {_int(r['scored_tokens'])} | {_sci(r['flops'])} | "
                     f"{r['eval_wall_s']:,.0f} | {_int(r['eval_generated_tokens'])} |")
    notes = [""]
    if data is not None and any(c.data is not None for c in row_costs):
        device = DASH if data.device_s is None else f"{data.device_s:,.0f} {unit}"
        notes.append(f"† includes the data stage (sample, verify, filter), run once and shared by the offline-RL rows: "
                     f"{data.wall_s:,.0f} s wall, {device}, {data.generated_tokens:,} generated tokens, "
                     f"{_sci(data.flops())} FLOPs.")
    measured = {"CPU core-s": "the CPU time of each step's processes", "GPU-s": "wall × GPUs held"}.get(
        unit, "CPU core-seconds (the CPU time of each step's processes) on CPU, wall × GPUs held on GPUs")
    notes.append(f"{unit}: {measured}; — where not measured (on CPU, a Ray job or PPO/GRPO's own Ray workers). "
                 "Trained: every token of every training sequence per epoch, per model updated (PPO's critic too); "
                 "scored: forward-only passes (reference log-probs, "
                 "old-policy, reference and value passes); generated: sampled tokens (prompt prefill not counted).")
    return "\n".join(lines + notes) + "\n"


def compute_points(table: list[tuple[Row, dict | None]], row_costs: list[costs.RowCost]):
    """(points, score label, base score) for the accuracy-vs-compute figure: each trained row's headline score
    (with its CI) against its FLOPs."""
    benches, _ = headline_scores(table)
    if not benches:
        return [], "", None
    flops = {c.row: c.total_flops for c in row_costs}
    points, base = [], None
    for row, results in table:
        if results is None:
            continue
        score, ci = average_over_benchmarks([results["benchmarks"][b]["per_question_acc"] for b in benches])
        if row.key == "base":
            base = score
        elif flops.get(row.key):
            points.append((row.label, flops[row.key], score, ci))
    label = "Avg" if len(benches) == len(BENCHMARKS) else "+".join(DISPLAY_NAMES[b] for b in benches)
    return points, label, base


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Text file written atomically."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return atomic_write(Path(path), write)


PAIRED_COLUMNS = ["a", "b", "label_a", "label_b", "diff", "ci_lo", "ci_hi", "n_questions", "benchmarks", "verdict",
                  "paper_diff", "flops_ratio"]


def csv_text(records: list[dict], columns: list[str] = CSV_COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for rec in records:
        w.writerow({k: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else v) for k, v in rec.items()})
    return buf.getvalue()


# ---------------------------------------------------------------- inputs for the figures


def step_curves(runs_dir: str | os.PathLike) -> dict[str, list[tuple[int, dict[str, float]]]]:
    """{row label: [(step, {benchmark or "average": percent})...] sorted by step} from eval/step_<N>/results.json.

    When a row has step results but no step_0 and the base model was evaluated, the base point is used as step 0.
    "average" is present only at steps where all five benchmarks were evaluated.
    """
    runs_dir = Path(runs_dir)
    base_path = runs_dir / "base" / "eval" / "results.json"
    base = read_results(base_path) if base_path.is_file() else None
    curves = {}
    for row in ROWS:
        eval_dir = runs_dir / row.key / "eval"
        if row.key == "base" or not eval_dir.is_dir():
            continue
        points = {}
        for sub in eval_dir.iterdir():
            m = _STEP_DIR.match(sub.name)
            if m and (sub / "results.json").is_file():
                points[int(m.group(1))] = read_results(sub / "results.json")
        if not points:
            continue
        if 0 not in points and base is not None:
            points[0] = base
        label = f"{row.method} ({row.setting})"
        curves[label] = [(step, _point(res)) for step, res in sorted(points.items())]
    return curves


def _point(results: dict) -> dict[str, float]:
    benches = results["benchmarks"]
    point = {b: mean_ci95(benches[b]["per_question_acc"])[0] for b in BENCHMARKS if b in benches}
    if all(b in benches for b in BENCHMARKS):
        point["average"] = average_over_benchmarks([benches[b]["per_question_acc"] for b in BENCHMARKS])[0]
    return point


def token_prob_sets(runs_dir: str | os.PathLike):
    """(before, {row label: probs}) from <row>/token_probs/; before is base's array or None."""
    from dft_verl.analysis.token_probs import has_token_probs, load_token_probs

    runs_dir = Path(runs_dir)
    before, after = None, {}
    for row in ROWS:
        folder = runs_dir / row.key / "token_probs"
        if not has_token_probs(folder):
            continue
        if row.key == "base":
            before = load_token_probs(folder)
        else:
            after[f"{row.method} ({row.setting})"] = load_token_probs(folder)
    return before, after


# ---------------------------------------------------------------- CLI


def report(runs_dir: str | os.PathLike, out: str | os.PathLike | None = None, plots: bool = True) -> dict[str, Path]:
    """Write table3.md/.csv (and the figures when their inputs exist); return {name: path} of what was written."""
    runs_dir = Path(runs_dir)
    out = Path(out) if out is not None else runs_dir / "report"
    table = collect(runs_dir)
    row_costs = costs.table_costs(runs_dir, [row for row, _ in table])
    written = {}
    comparisons = paired_comparisons(table, row_costs=row_costs)
    md = (to_markdown(table) + compute_markdown(table, row_costs, costs.data_cost(runs_dir))
          + paired_markdown(comparisons) + ranks_markdown(table, comparisons))
    write_text(out / "table3.md", md)
    written["table3.md"] = out / "table3.md"
    write_text(out / "table3.csv", csv_text(to_csv_rows(table, row_costs)))
    written["table3.csv"] = out / "table3.csv"
    if comparisons:
        write_text(out / "paired.csv", csv_text(comparisons, PAIRED_COLUMNS))
        written["paired.csv"] = out / "paired.csv"
    if plots:
        from dft_verl.analysis import plots as plotting

        curves = step_curves(runs_dir)
        if curves:
            path = out / "fig1_accuracy_vs_step.png"
            plotting.plot_accuracy_vs_step(curves, path)
            written[path.name] = path
        before, after = token_prob_sets(runs_dir)
        if before is not None or after:
            path = out / "fig2_token_probs.png"
            plotting.plot_token_prob_histograms(after, path, before=before)
            written[path.name] = path
        points, label, base = compute_points(table, row_costs)
        if points:
            path = out / "accuracy_vs_compute.png"
            plotting.plot_accuracy_vs_compute(points, path, label, base=base)
            written[path.name] = path
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dft_verl.report", description=__doc__.split("\n\n")[0])
    p.add_argument("runs_dir", help="folder with one sub-folder per Table-3 row (see module docstring)")
    p.add_argument("--out", default=None, help="output folder (default: RUNS_DIR/report)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    written = report(args.runs_dir, args.out, plots=not args.no_plots)
    print(Path(written["table3.md"]).read_text(encoding="utf-8"))
    for name, path in written.items():
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
