"""Stage 3, verify: judge every sample with dft_verl.rewards (math-verify), on Ray tasks or a process pool.

The samples are cut into shards of ``verify.shard_size`` rows. Each shard is judged by one Ray task
(num_cpus=1) that runs ``verify_many`` with one worker process (killed and replaced when an answer exceeds
``timeout_s``), then writes ``shards/shard-<s>.parquet`` atomically. A task whose Ray worker dies is retried
by Ray (``max_retries``); if the stage itself dies, a rerun judges only the shards without a file. Either
way each sample is judged exactly once in the final output, and the output does not depend on where or how
often a shard ran.

Outputs in ``verify.output_dir``:
    verified.parquet       samples + correct, pred, reason (rows in samples order)
    question_stats.parquet index, data_source, n_samples, n_correct, acc
    verify_stats.json      accuracy, pass@k, acceptance rate, reasons, timing
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd

from dft_verl.pipeline import artifacts
from dft_verl.rewards import verify_many

logger = logging.getLogger(__name__)

USAGE = "usage: python -m dft_verl.pipeline.verify out_dir=DIR [verify.timeout_s=10] [verify.use_ray=true] ..."
# Test hook: path of a marker file. The first shard task that finds it absent creates it and SIGKILLs its
# own worker process after writing its tmp file, before the atomic rename (a worker dying mid-write).
CRASH_ONCE_ENV = "DFT_VERL_VERIFY_CRASH_ONCE"


def judge_shard(responses: list, golds: list, out_path: str, timeout_s: float, crash_marker: str | None = None
                ) -> dict:
    """Judge one shard and write its verdict columns (correct, pred, reason) to ``out_path`` atomically."""
    t0 = time.perf_counter()
    judged = verify_many(responses, golds, num_workers=1, timeout_s=timeout_s)
    df = pd.DataFrame({"correct": [j.correct for j in judged], "pred": [j.pred for j in judged],
                       "reason": [j.reason for j in judged]})
    if crash_marker and not os.path.exists(crash_marker):
        Path(crash_marker).write_text(str(os.getpid()))
        tmp = Path(f"{out_path}.tmp-{os.getpid()}")
        df.to_parquet(tmp, index=False)
        os.kill(os.getpid(), signal.SIGKILL)
    artifacts.write_parquet_atomic(df, out_path)
    return {"n": len(df), "seconds": time.perf_counter() - t0}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one question with c correct among n samples: 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, question has {n}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def summarize(verified: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per-question accuracy and the stage summary (accuracy = mean per-question accuracy, in [0, 1])."""
    per_q = (verified.groupby("index", sort=True)
             .agg(data_source=("data_source", "first"), n_samples=("correct", "size"),
                  n_correct=("correct", "sum"))
             .reset_index())
    per_q["n_correct"] = per_q["n_correct"].astype(int)
    per_q["acc"] = per_q["n_correct"] / per_q["n_samples"]
    k_max = int(per_q["n_samples"].min()) if len(per_q) else 0
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, k_max) if 1 <= k <= k_max})
    pass_k = {str(k): float(np.mean([pass_at_k(n, c, k) for n, c in zip(per_q["n_samples"], per_q["n_correct"])]))
              for k in ks}
    stats = {
        "n_responses": len(verified),
        "n_questions": len(per_q),
        "n_correct": int(verified["correct"].sum()),
        "acceptance_rate": float(verified["correct"].mean()) if len(verified) else 0.0,
        "accuracy": float(per_q["acc"].mean()) if len(per_q) else 0.0,
        "questions_with_a_correct_sample": int((per_q["n_correct"] > 0).sum()),
        "questions_all_correct": int((per_q["n_correct"] == per_q["n_samples"]).sum()),
        "pass_at_k": pass_k,
        "reasons": {str(k): int(v) for k, v in verified["reason"].value_counts().sort_index().items()},
    }
    return per_q, stats


def _run_ray(todo, samples, paths, vc, progress) -> None:
    import ray

    started = not ray.is_initialized()
    if started:
        kwargs = {"address": vc.ray_address} if vc.ray_address else {}
        if not vc.ray_address and not os.environ.get("RAY_ADDRESS"):
            kwargs.update(num_cpus=vc.num_workers or os.cpu_count(), include_dashboard=False)
        ray.init(**kwargs, log_to_driver=False)
    task = ray.remote(num_cpus=1, max_retries=int(vc.max_retries))(judge_shard)
    crash = os.environ.get(CRASH_ONCE_ENV)
    limit = vc.num_workers or int(ray.available_resources().get("CPU", 1)) or 1
    bar = _bar(progress, sum(len(samples.iloc[_rows(s, vc.shard_size, len(samples))]) for s in todo))
    pending, queue = {}, list(todo)
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                s = queue.pop(0)
                rows = samples.iloc[_rows(s, vc.shard_size, len(samples))]
                ref = task.remote(rows["response"].tolist(), rows["ground_truth"].tolist(), str(paths[s]),
                                  float(vc.timeout_s), crash)
                pending[ref] = s
            ready, _ = ray.wait(list(pending), num_returns=1)
            s = pending.pop(ready[0])
            result = ray.get(ready[0])  # raises if the shard failed after all retries; done shards are kept
            if bar is not None:
                bar.update(result["n"])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if bar is not None:
            bar.close()
        if started:
            ray.shutdown()


def _run_local(todo, samples, paths, vc, progress) -> None:
    bar = _bar(progress, sum(len(samples.iloc[_rows(s, vc.shard_size, len(samples))]) for s in todo))
    for s in todo:
        rows = samples.iloc[_rows(s, vc.shard_size, len(samples))]
        judged = verify_many(rows["response"].tolist(), rows["ground_truth"].tolist(),
                             num_workers=vc.num_workers, timeout_s=float(vc.timeout_s))
        df = pd.DataFrame({"correct": [j.correct for j in judged], "pred": [j.pred for j in judged],
                           "reason": [j.reason for j in judged]})
        artifacts.write_parquet_atomic(df, paths[s])
        if bar is not None:
            bar.update(len(df))
    if bar is not None:
        bar.close()


def _rows(s: int, size: int, total: int) -> slice:
    return slice(s * size, min((s + 1) * size, total))


def _bar(progress: bool, total: int):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="verify", unit="ans")


def run(cfg) -> dict:
    artifacts.require(cfg, "out_dir")
    from omegaconf import OmegaConf

    vc = OmegaConf.create(artifacts.to_plain(cfg.verify))
    if vc.shard_size < 1 or vc.timeout_s <= 0:
        raise ValueError(f"verify.shard_size must be >= 1 and verify.timeout_s > 0, got {vc.shard_size}, "
                         f"{vc.timeout_s}")
    out = Path(vc.output_dir)
    # Only what changes verdicts or shard layout; where and how fast they run does not.
    semantic = {"timeout_s": float(vc.timeout_s), "shard_size": int(vc.shard_size)}
    state = artifacts.StageState("verify", out, artifacts.fingerprint(semantic, [vc.input]),
                                 overwrite=bool(cfg.overwrite))
    if state.done():
        logger.info("verify: %s is up to date, skipping", out)
        return json.loads((out / "verify_stats.json").read_text())
    samples = pd.read_parquet(vc.input)
    missing = {"index", "sample_idx", "data_source", "response", "ground_truth"} - set(samples.columns)
    if missing:
        raise ValueError(f"{vc.input}: not a samples parquet, missing column(s) {sorted(missing)}")
    shard_dir = out / "shards"
    paths, todo = artifacts.shard_paths(shard_dir, len(samples), vc.shard_size)
    n_shards = len(paths)
    logger.info("verify: %d responses in %d shards, %d to judge (%s)", len(samples), n_shards, len(todo),
                "ray" if vc.use_ray else "process pool")
    t0 = time.perf_counter()
    if todo:
        (_run_ray if vc.use_ray else _run_local)(todo, samples, paths, vc, bool(cfg.progress))
    seconds = time.perf_counter() - t0
    verdicts = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    if len(verdicts) != len(samples):
        raise RuntimeError(f"{shard_dir}: {len(verdicts)} verdicts for {len(samples)} samples")
    verified = pd.concat([samples.reset_index(drop=True), verdicts], axis=1)
    per_q, stats = summarize(verified)
    stats.update({"seconds_this_run": seconds, "shards_judged_this_run": len(todo), "n_shards": n_shards,
                  "timeout_s": float(vc.timeout_s)})
    artifacts.write_parquet_atomic(verified, out / "verified.parquet")
    artifacts.write_parquet_atomic(per_q, out / "question_stats.parquet")
    artifacts.write_json_atomic(stats, out / "verify_stats.json")
    state.finish(["verified.parquet", "question_stats.parquet", "verify_stats.json"])
    logger.info("verify: acceptance %.3f, pass@k %s, reasons %s", stats["acceptance_rate"], stats["pass_at_k"],
                stats["reasons"])
    return stats


def main(argv: list[str] | None = None) -> int:
    return artifacts.stage_main(run, USAGE, argv)


if __name__ == "__main__":
    sys.exit(main())
