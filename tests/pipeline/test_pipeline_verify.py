"""verify stage: verdicts and stats on hand-built samples (malformed rows included); Ray worker killed
mid-shard loses no sample."""

import json
from math import comb

import pandas as pd
import pytest

from dft_verl.pipeline import artifacts, verify
from .fixtures import samples_frame

HUGE_LATEX = "\\boxed{" + "\\frac{\\sqrt{x^{2}+1}}{\\left(x+1\\right)^{3}}+" * 250 + "1}"  # ~10k chars

ROWS = [
    # question 0, gold 4: 2 of 4 correct
    (0, 0, "So the answer is \\boxed{4}.", "4"),
    (0, 1, "Therefore $\\boxed{4.0}$", "4"),
    (0, 2, "I get \\boxed{5}", "4"),
    (0, 3, "", "4"),
    # question 1, GSM8K gold: 2 of 4 correct
    (1, 0, "48 + 24 = 72, so \\boxed{72}", "Natalia sold 48/2 = 24 clips.\n#### 72"),
    (1, 1, "The answer is 72.", "#### 72"),
    (1, 2, HUGE_LATEX, "#### 72"),
    (1, 3, "答案是 \\boxed{72} 😀", "#### 72"),
    # question 2, gold 1/2: 1 of 4 correct; one answer hangs math-verify
    (2, 0, "\\boxed{0.5}", "\\frac{1}{2}"),
    (2, 1, "\\boxed{9^{9^{9^{9}}}}", "\\frac{1}{2}"),
    (2, 2, None, "\\frac{1}{2}"),
    (2, 3, "\\boxed{1/3}", "\\frac{1}{2}"),
    # question 3: gold missing
    (3, 0, "\\boxed{1}", None),
    (3, 1, "\\boxed{1}", None),
    (3, 2, "\\boxed{1}", None),
    (3, 3, "\\boxed{1}", None),
]
EXPECTED_REASONS = ["ok", "ok", "wrong", "empty_response", "ok", "no_answer", "too_long", "ok",
                    "ok", "timeout", "empty_response", "wrong", "no_gold", "no_gold", "no_gold", "no_gold"]


def _cfg(tmp_path, samples_path, run="run", *extra):
    return artifacts.load_config([f"out_dir={tmp_path / run}", f"verify.input={samples_path}", "progress=false",
                                  "verify.timeout_s=1.0", *extra])


@pytest.fixture
def samples_path(tmp_path):
    path = tmp_path / "samples.parquet"
    samples_frame(ROWS).to_parquet(path)
    return path


def test_pass_at_k_formula():
    assert verify.pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert verify.pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert verify.pass_at_k(4, 2, 2) == pytest.approx(5 / 6)
    assert verify.pass_at_k(4, 0, 4) == 0.0 and verify.pass_at_k(4, 1, 4) == 1.0
    with pytest.raises(ValueError):
        verify.pass_at_k(2, 1, 4)


def test_verdicts_and_stats_local_pool(tmp_path, samples_path):
    stats = verify.run(_cfg(tmp_path, samples_path, "run", "verify.use_ray=false", "verify.shard_size=5",
                            "verify.num_workers=2"))
    out = tmp_path / "run/verify"
    v = pd.read_parquet(out / "verified.parquet")
    assert v["reason"].tolist() == EXPECTED_REASONS
    assert v["correct"].tolist() == [r == "ok" for r in EXPECTED_REASONS]
    assert v["pred"].tolist()[:3] == ["4", "4.0", "5"] and v["pred"].iloc[6].startswith("\\frac{\\sqrt")
    assert list(v.columns) == ["index", "sample_idx", "data_source", "prompt", "response", "ground_truth",
                               "correct", "pred", "reason"]
    c = [2, 2, 1, 0]
    assert stats["acceptance_rate"] == pytest.approx(5 / 16)
    assert stats["accuracy"] == pytest.approx(sum(x / 4 for x in c) / 4)
    assert stats["pass_at_k"]["1"] == pytest.approx(0.3125)
    assert stats["pass_at_k"]["2"] == pytest.approx(sum(1 - comb(4 - x, 2) / comb(4, 2) for x in c) / 4)
    assert stats["pass_at_k"]["4"] == pytest.approx(0.75)
    assert stats["reasons"] == {"empty_response": 2, "no_answer": 1, "no_gold": 4, "ok": 5, "timeout": 1,
                                "too_long": 1, "wrong": 2}
    assert json.loads((out / "verify_stats.json").read_text())["reasons"] == stats["reasons"]
    per_q = pd.read_parquet(out / "question_stats.parquet")
    assert per_q["n_correct"].tolist() == c and per_q["acc"].tolist() == [0.5, 0.5, 0.25, 0.0]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_killed_ray_worker_loses_no_sample(tmp_path, ray_cluster, monkeypatch):
    rows = [(i, j, f"so \\boxed{{{(i * j) % 5}}}", str(i % 5)) for i in range(12) for j in range(4)]
    path = tmp_path / "samples.parquet"
    samples_frame(rows).to_parquet(path)
    reference = verify.run(_cfg(tmp_path, path, "reference", "verify.use_ray=false", "verify.shard_size=8"))
    ref = pd.read_parquet(tmp_path / "reference/verify/verified.parquet")
    assert reference["n_responses"] == 48 and 0 < reference["n_correct"] < 48

    # 1) no retries: the stage fails when a worker dies mid-shard; finished shards stay, the rerun completes
    marker = tmp_path / "crashed-once"
    monkeypatch.setenv(verify.CRASH_ONCE_ENV, str(marker))
    cfg = _cfg(tmp_path, path, "run", "verify.use_ray=true", "verify.shard_size=8", "verify.max_retries=0")
    with pytest.raises(Exception, match="(?i)worker|died|crash"):
        verify.run(cfg)
    assert marker.exists()
    shards = tmp_path / "run/verify/shards"
    assert len(list(shards.glob("shard-*.parquet"))) < 6 and list(shards.glob("*.tmp-*"))
    stats = verify.run(cfg)
    assert 1 <= stats["shards_judged_this_run"] <= 6
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run/verify/verified.parquet"), ref)

    # 2) with retries: Ray reruns the killed shard inside the same stage run
    marker.unlink()
    stats = verify.run(_cfg(tmp_path, path, "retry", "verify.use_ray=true", "verify.shard_size=8",
                            "verify.max_retries=2"))
    assert marker.exists() and stats["shards_judged_this_run"] == 6
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "retry/verify/verified.parquet"), ref)
