"""Walk through the files of a finished `dft-verl demo` run, stage by stage.

    python examples/inspect_demo_run.py [runs/demo]

Shows what each stage produced: a task row with its gold solution, how the base model's samples were judged,
what the filter kept for RFT/iw-SFT/DFT and DPO, each row's answer to the same held-out question, and how each
method moved the probabilities of the offline-RL training tokens (DFT weights each token's loss by its own
probability, so it spends less effort on tokens the model finds unlikely).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def show(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


def main(out: str = "runs/demo") -> None:
    out = Path(out)
    if not (out / "report" / "summary.json").is_file():
        raise SystemExit(f"{out}: no finished demo run (run `dft-verl demo --out {out}` first)")
    summary = json.loads((out / "report" / "summary.json").read_text())

    show("task (task/train.jsonl)")
    row = json.loads((out / "task" / "train.jsonl").read_text().splitlines()[0])
    print(f"question: {row['question']}\nanswer:   {row['answer']}\nsolution: {row['solution']}")

    show("sample + verify (data/verify/verified.parquet)")
    verified = pd.read_parquet(out / "data" / "verify" / "verified.parquet")
    print(f"{len(verified)} responses to {verified['index'].nunique()} questions; verdicts:")
    print(verified["reason"].value_counts().to_string())
    for reason in ("ok", "wrong", "no_answer"):
        hit = verified[verified["reason"] == reason]
        if len(hit):
            r = hit.iloc[0]
            pred = r["pred"] if isinstance(r["pred"], str) else None
            print(f"\n[{reason}] gold {r['ground_truth']!r}, extracted {pred!r}:\n{r['response'][:300]}")

    show("filter (data/filter/sft.parquet: RFT, iw-SFT and DFT data; dpo.parquet: DPO pairs)")
    filtered = pd.read_parquet(out / "data" / "filter" / "sft.parquet")
    print(f"{len(filtered)} correct, distinct responses from "
          f"{filtered['extra_info'].map(lambda e: e['index']).nunique()} questions")

    show("eval: one held-out question, first sample of each row (<row>/eval/samples/)")
    first = None
    for r in summary["rows"]:
        samples = pd.read_parquet(out / r["row"] / "eval" / "samples" / f"{r['benchmark']}.parquet")
        one = samples.sort_values(["index", "sample_idx"]).iloc[0]
        if first is None:
            first = one
            print(f"question: {one['prompt'][-1]['content'].splitlines()[0]}   gold: {one['ground_truth']}")
        mark = "correct" if one["correct"] else one["reason"]
        print(f"\n{r['row']:>14} ({mark}): {one['response'][:200]!r}")

    show("Average@k, paired comparisons, ranks (report/summary.md)")
    print((out / "report" / "summary.md").read_text())

    show("target-token probabilities on the offline-RL samples (<row>/token_probs/meta.json)")
    print(f"{'row':>14} {'mean p':>7} {'p<0.1':>6} {'p>0.9':>6} {'median':>7}")
    for r in summary["rows"]:
        meta_path = out / r["row"] / "token_probs" / "meta.json"
        if meta_path.is_file():
            s = json.loads(meta_path.read_text())["summary"]
            print(f"{r['row']:>14} {s['mean']:7.3f} {s['frac_below']['0.1']:6.3f} {s['frac_above_0.9']:6.3f} "
                  f"{s['quantiles']['0.5']:7.3f}")
    print("\nplots: " + ", ".join(str(p) for p in sorted((out / "report").glob("*.png"))))


if __name__ == "__main__":
    main(*sys.argv[1:2])
