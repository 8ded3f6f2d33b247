"""The demo's mini table and plots, from the files the demo stages wrote.

Table (report/table.md, table.csv), one row per model (base, then each trained method):
    Avg@k        100 * mean_i c_i / k over held-out questions, 95% CI (dft_verl.eval.mean_ci95, recomputed from
                 per_question_acc)
    Δ base       Avg@k - base Avg@k, in points
    answered     percent of the k * n responses holding a \\boxed{} answer (reason not no_answer/empty_response)
    train rows   rows of the method's training parquet
Plots (report/): accuracy.png (Avg@k with CI bars), train_ce.png (token-mean cross-entropy of the training
tokens per step, from the trainer's `dft/ce` metric), token_probs.png (the paper's Fig. 2 on the filtered
self-samples, via dft_verl.analysis.plots). All written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd

from dft_verl.eval import mean_ci95
from dft_verl.pipeline.artifacts import atomic_write
from dft_verl.report import write_text

NO_ANSWER = ("no_answer", "empty_response")
TRAIN_DATA_LABEL = {"gold": "gold solutions", "filtered": "filtered self-samples"}


def model_row(name: str, results_path: Path) -> dict:
    """Avg@k, CI, answered rate and settings of one model's results.json (single benchmark)."""
    results = json.loads(Path(results_path).read_text())
    benches = results.get("benchmarks") or {}
    if len(benches) != 1:
        raise ValueError(f"{results_path}: expected one benchmark, found {list(benches)}")
    (bench, entry), = benches.items()
    avg, ci = mean_ci95(entry["per_question_acc"])
    samples = pd.read_parquet(Path(results_path).parent / "samples" / f"{bench}.parquet")
    answered = 100.0 * float((~samples["reason"].isin(NO_ANSWER)).mean())
    return {"model": name, "benchmark": bench, "k": int(results["k"]), "n_questions": len(entry["per_question_acc"]),
            "avg_at_k": avg, "ci95": ci, "answered": answered,
            "mean_response_chars": float(samples["response"].str.len().mean()), "path": str(results_path)}


def build_table(cfg, evals: dict[str, Path], out_dir: Path) -> list[dict]:
    """Rows for the table: base first, then the methods in config order."""
    rows = []
    for name, path in evals.items():
        row = model_row(name, path)
        method = cfg.train.methods.get(name) if name in cfg.train.methods else None
        if method is not None:
            data = out_dir / "data" / "train" / ("prepare" if method.data == "gold" else "filter") / "sft.parquet"
            row.update(loss=str(method.loss), data=TRAIN_DATA_LABEL[str(method.data)],
                       train_rows=len(pd.read_parquet(data, columns=["messages"])))
        elif name == "base" and int(cfg.warmup.steps) > 0:
            data = out_dir / "data" / "format" / "prepare" / "sft.parquet"
            row.update(loss="sft", data=f"format warm-up ({int(cfg.warmup.steps)} steps)",
                       train_rows=len(pd.read_parquet(data, columns=["messages"])))
        else:
            row.update(loss="—", data="—", train_rows=None)
        rows.append(row)
    base = next((r["avg_at_k"] for r in rows if r["model"] == "base"), None)
    for r in rows:
        r["delta_vs_base"] = None if base is None or r["model"] == "base" else r["avg_at_k"] - base
    return rows


def to_markdown(rows: list[dict], title: str) -> str:
    k = rows[0]["k"]
    head = f"| model | training data | loss | train rows | Avg@{k} [95% CI] | Δ base | answered |"
    lines = [title, "", head, "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        ci = f" [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}]" if r["ci95"] else ""
        delta = "—" if r["delta_vs_base"] is None else f"{r['delta_vs_base']:+.1f}"
        train_rows = "—" if r["train_rows"] is None else str(r["train_rows"])
        lines.append(f"| {r['model']} | {r['data']} | {r['loss']} | {train_rows} | {r['avg_at_k']:.1f}{ci} | "
                     f"{delta} | {r['answered']:.0f}% |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    cols = ["model", "data", "loss", "train_rows", "k", "n_questions", "avg_at_k", "ci_lo", "ci_hi",
            "delta_vs_base", "answered", "mean_response_chars"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        rec = {c: r.get(c) for c in cols}
        rec["ci_lo"], rec["ci_hi"] = (r["ci95"] or [None, None])
        w.writerow({c: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else v) for c, v in rec.items()})
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return path


def plot_accuracy(rows: list[dict], path: Path, title: str) -> Path:
    """Bar per model: Avg@k (percent) with its 95% CI as an error bar."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 3.6))
    xs = range(len(rows))
    ys = [r["avg_at_k"] for r in rows]
    cis = [r["ci95"] or [y, y] for y, r in zip(ys, rows)]
    err = [[y - ci[0] for y, ci in zip(ys, cis)], [ci[1] - y for y, ci in zip(ys, cis)]]
    colors = ["#bbbbbb" if r["model"] in ("raw", "base") else f"C{i}" for i, r in enumerate(rows)]
    ax.bar(xs, ys, yerr=err, capsize=4, color=colors)
    ax.set_xticks(list(xs), [r["model"] for r in rows])
    ax.set_ylabel(f"Average@{rows[0]['k']} (%)")
    ax.set_ylim(0, max(100.0, max(ys) * 1.1) if ys else 100.0)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_train_ce(curves: dict[str, dict[int, float]], path: Path) -> Path:
    """Token-mean cross-entropy of the training tokens (nats) against step, one line per method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, series in curves.items():
        steps = sorted(series)
        ax.plot(steps, [series[s] for s in steps], marker="o", markersize=3, label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy of training tokens (nats)")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def train_curves(out_dir: Path, methods, key: str = "dft/ce") -> dict[str, dict[int, float]]:
    """{method: {step: metric}} from the train stage's done markers (empty where not logged)."""
    curves = {}
    for name in methods:
        marker = out_dir / "train" / name / "_demo_done.json"
        if marker.is_file():
            metrics = json.loads(marker.read_text()).get("metrics", {})
            series = {int(s): m[key] for s, m in metrics.items() if key in m}
            if series:
                curves[name] = series
    return curves


# ---------------------------------------------------------------------------------------------- report


def write_report(report_dir: Path, cfg, evals: dict[str, Path], token_probs: dict[str, Path], data: dict,
                 out_dir: Path) -> dict:
    """Write table.md/.csv and the plots under ``report_dir``; print the table; return the summary dict."""
    report_dir = Path(report_dir)
    rows = build_table(cfg, evals, out_dir)
    verify = data["train"]["verify"]
    filt = data["train"]["filter"]
    title = (f"Held-out {cfg.task.name}: {rows[0]['n_questions']} questions, Average@{rows[0]['k']} at temperature "
             f"{cfg.eval.temperature}, max {cfg.eval.max_new_tokens} new tokens. Base model sampled "
             f"{verify['n_responses']} responses to {verify['n_questions']} training questions "
             f"(accuracy {100 * verify['acceptance_rate']:.1f}%); {filt['n_sft']} correct ones train RFT and DFT.")
    md = to_markdown(rows, title)
    files = {"table.md": write_text(report_dir / "table.md", md),
             "table.csv": write_text(report_dir / "table.csv", to_csv(rows)),
             "accuracy.png": plot_accuracy(rows, report_dir / "accuracy.png", f"{cfg.task.name} (held out)")}
    curves = train_curves(out_dir, list(cfg.train.methods))
    if curves:
        files["train_ce.png"] = plot_train_ce(curves, report_dir / "train_ce.png")
    if token_probs:
        from dft_verl.analysis.plots import plot_token_prob_histograms
        from dft_verl.analysis.token_probs import load_token_probs

        before = load_token_probs(token_probs["base"]) if "base" in token_probs else None
        after = {name: load_token_probs(p) for name, p in token_probs.items() if name != "base"}
        files["token_probs.png"] = report_dir / "token_probs.png"
        plot_token_prob_histograms(after, files["token_probs.png"], before=before)
    print("\n" + md)
    return {"table": rows, "files": {k: str(v) for k, v in files.items()},
            "data": {"sample_accuracy": verify["acceptance_rate"], "pass_at_k": verify.get("pass_at_k"),
                     "reasons": verify.get("reasons"), "filtered_rows": filt["n_sft"]}}


def list_outputs(out_dir: Path) -> str:
    """Where the demo's files went: one line per top-level output, with sizes."""
    out_dir = Path(out_dir)
    lines = [f"All outputs under {out_dir}:"]
    described = [
        ("task/", "train.jsonl, test.jsonl: the questions (question, answer, solution)"),
        ("data/format/prepare/", "sft.parquet: gold solutions of the format split (warm-up data)"),
        ("data/train/prepare/", "rl.parquet (prompts + gold), sft.parquet (gold solutions: SFT data)"),
        ("data/train/sample/", "samples.parquet: n responses per training question from the base model"),
        ("data/train/verify/", "verified.parquet: each response judged (correct, pred, reason)"),
        ("data/train/filter/", "sft.parquet: correct self-samples (RFT/DFT data), dpo.parquet: pairs"),
        ("data/test/prepare/", "rl.parquet: held-out questions"),
        ("train/", "warmup/ (the base model) and <method>/: global_step_N/huggingface, train.log, metrics"),
        ("eval/", "<model>/results.json (Average@k), samples/: every evaluated response"),
        ("token_probs/", "<model>/token_probs.npy: target-token probabilities (Fig. 2 data)"),
        ("report/", "table.md, table.csv, accuracy.png, train_ce.png, token_probs.png, summary.json"),
    ]
    for rel, what in described:
        if (out_dir / rel).exists():
            lines.append(f"  {rel:22s} {what}")
    return "\n".join(lines)
