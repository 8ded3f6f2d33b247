"""Run the CPU demo on your own questions instead of the generated ones.

    python examples/own_task_demo.py [my_task.jsonl] [--out runs/demo_own] [key=value ...]

The file is one JSON object per line, in any layout the pipeline's prepare stage reads, e.g.
    {"question": "...", "answer": "42", "solution": "... \\boxed{42}"}      (MATH-style)
    {"question": "...", "answer": "step one ... step two ...\\n#### 42"}     (GSM8K-style: solution + "#### x")
`task.n_test` rows are held out for evaluation (or pass --test-file). Without a file, this script writes a small
GSM8K-style example file first (from the demo's problem generator) and runs on that, with the --fast sizes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from dft_verl.cli import main as cli_main
from dft_verl.demo.tasks import make_problems


def write_gsm8k_style_example(path: Path, n: int = 48) -> Path:
    """n problems as GSM8K rows: the worked solution, then "#### answer" (no \\boxed{} in the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in make_problems(n, seed=123, families=("add", "mul", "word_add")):
            steps = re.sub(r"\nThe final answer is .*$", "", row["solution"])
            f.write(json.dumps({"question": row["question"], "answer": f"{steps}\n#### {row['answer']}"}) + "\n")
    return path


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0].endswith(".jsonl"):
        task_file, rest = args[0], args[1:]
        fast = []
    else:
        task_file, rest = str(write_gsm8k_style_example(Path("runs/own_task/example.jsonl"))), args
        fast = ["--fast"]
        print(f"wrote an example task file: {task_file}")
    if "--out" not in rest:
        rest = ["--out", "runs/demo_own", *rest]
    cli_main(["demo", *fast, "--train-file", task_file, *rest])
