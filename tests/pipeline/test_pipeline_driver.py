"""Driver and recipe: all four stages chained on a tiny model; rerun is a no-op; recipe shell is sound."""

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from dft_verl.pipeline import __main__ as driver
from dft_verl.rewards import judge
from .fixtures import GSM8K_ROWS, MATH_ROWS, build_tiny_chat_model, write_jsonl

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes/offline/run_pipeline.sh"


def test_driver_runs_all_stages_and_resumes(tmp_path, capsys):
    model = build_tiny_chat_model(tmp_path / "tiny-chat")
    src = write_jsonl(tmp_path / "mixed.jsonl", GSM8K_ROWS + [{"question": r["problem"], "answer": r["answer"]}
                                                              for r in MATH_ROWS])
    args = [f"out_dir={tmp_path / 'run'}", f"prepare.source={src}", f"sample.model_path={model}", "sample.n=2",
            "sample.max_new_tokens=8", "sample.shard_size=4", "verify.use_ray=false", "verify.num_workers=1",
            "progress=false"]
    assert driver.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["prepare"]["n_kept"] == 9
    verified = pd.read_parquet(tmp_path / "run/verify/verified.parquet")
    assert len(verified) == 18
    # verdicts are exactly what the shared reward module says about each (response, gold)
    again = [judge(r, g).reason for r, g in zip(verified["response"], verified["ground_truth"])]
    assert verified["reason"].tolist() == again
    sft = pd.read_parquet(tmp_path / "run/filter/sft.parquet")
    assert len(sft) == summary["filter"]["n_sft"] == int(verified["correct"].sum())
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*.parquet")}
    assert driver.main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*.parquet")} == stamps


def test_driver_cli_errors(capsys):
    assert driver.main(["--help"]) == 0
    assert "prepare:" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="key=value"):
        driver.main(["out_dir"])
    with pytest.raises(ValueError, match="unknown stage"):
        driver.main(["out_dir=/tmp/x", "stages=[sampel]"])
    with pytest.raises(ValueError, match="sample.model_path"):
        driver.main(["out_dir=/tmp/never", "stages=[sample]"])


def test_recipe_shell_dry_run():
    subprocess.run(["bash", "-n", str(RECIPE)], check=True)
    text = RECIPE.read_text()
    assert not any(line.rstrip("\n").endswith("\\ ") for line in text.splitlines())
    env = {**os.environ, "DRY_RUN": "1", "MODEL_PATH": "/m", "SOURCE": "/d.jsonl", "OUT_DIR": "/o"}
    out = subprocess.run(["bash", str(RECIPE), "verify.timeout_s=3"], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert "-m dft_verl.pipeline out_dir=/o" in out
    assert "sample.model_path=/m" in out and "prepare.source=/d.jsonl" in out and "sample.n=4" in out
    assert out.strip().endswith("verify.timeout_s=3")
