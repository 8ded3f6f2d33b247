"""Stage 2, sample: n responses per question of the RL parquet (paper: n=4, temperature 1.0).

Questions are cut into shards of ``sample.shard_size``; shard s is generated with seed
``batch_seed(seed, s)`` and written atomically to ``shards/shard-<s>.parquet``, so a killed run resumes at
the first missing shard and reproduces the finished ones byte for byte (hf backend). When every shard
exists they are concatenated into ``samples.parquet``: one row per (question index, sample_idx) with
index, sample_idx, data_source, prompt, response, ground_truth.

Backends: see dft_verl.generation (hf on CPU; vllm / verl on GPUs).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pandas as pd

from dft_verl import cost
from dft_verl.generation import batch_seed, generate
from dft_verl.pipeline import artifacts

logger = logging.getLogger(__name__)

USAGE = "usage: python -m dft_verl.pipeline.sample out_dir=DIR sample.model_path=MODEL [sample.n=4] ..."
COLUMNS = ["index", "sample_idx", "data_source", "prompt", "response", "ground_truth"]


def _messages(prompt) -> list[dict]:
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


def load_questions(path: str | Path) -> pd.DataFrame:
    """RL parquet -> index, data_source, prompt, ground_truth (errors name the file, row and field)."""
    df = pd.read_parquet(path)
    missing = {"prompt", "reward_model", "data_source"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: not an RL parquet, missing column(s) {sorted(missing)}")
    rows = []
    for r, row in enumerate(df.itertuples(index=False)):
        extra = row.extra_info if "extra_info" in df.columns and isinstance(row.extra_info, dict) else {}
        rm = row.reward_model
        if not isinstance(rm, dict) or "ground_truth" not in rm:
            raise ValueError(f"{path}: row {r}: field reward_model.ground_truth missing")
        if row.prompt is None or len(row.prompt) == 0:
            raise ValueError(f"{path}: row {r}: field prompt is empty")
        rows.append({"index": int(extra.get("index", r)), "data_source": row.data_source,
                     "prompt": _messages(row.prompt), "ground_truth": rm["ground_truth"]})
    out = pd.DataFrame(rows)
    dup = out["index"][out["index"].duplicated()]
    if not dup.empty:
        raise ValueError(f"{path}: extra_info.index {int(dup.iloc[0])} appears more than once")
    return out


def sample_shard(questions: pd.DataFrame, sc, seed: int, progress: bool) -> pd.DataFrame:
    """Generate ``sc.n`` responses for each question row; returns samples rows in (index, sample_idx) order."""
    responses = generate(
        sc.model_path, questions["prompt"].tolist(), n=sc.n, temperature=sc.temperature,
        max_new_tokens=sc.max_new_tokens, seed=seed, backend=sc.backend, batch_size=sc.batch_size,
        top_p=sc.top_p, progress=progress, processes=sc.processes, **dict(sc.backend_kwargs or {}),
    )
    rows = []
    for q, resp in zip(questions.itertuples(index=False), responses):
        for j, text in enumerate(resp):
            rows.append({"index": q.index, "sample_idx": j, "data_source": q.data_source, "prompt": q.prompt,
                         "response": text, "ground_truth": q.ground_truth})
    return pd.DataFrame(rows, columns=COLUMNS)


def run(cfg) -> dict:
    artifacts.require(cfg, "out_dir", "sample.model_path")
    from omegaconf import OmegaConf

    sc = OmegaConf.create(artifacts.to_plain(cfg.sample))
    if sc.shard_size < 1:
        raise ValueError(f"sample.shard_size must be >= 1, got {sc.shard_size}")
    out = Path(sc.output_dir)
    # processes only changes how fast the same samples come (each batch has its own seed): not part of the key
    semantic = {k: v for k, v in artifacts.to_plain(sc).items() if k not in ("output_dir", "input", "processes")}
    model_id = str(Path(sc.model_path).expanduser().resolve()) if Path(sc.model_path).expanduser().exists() \
        else sc.model_path
    fp = artifacts.fingerprint({**semantic, "model_path": model_id, "seed": int(cfg.seed)}, [sc.input])
    state = artifacts.StageState("sample", out, fp, overwrite=bool(cfg.overwrite))
    if state.done():
        logger.info("sample: %s is up to date, skipping", out)
        cost.record_generation("sample", sc.model_path, [out / "samples.parquet"])
        return json.loads((out / "sample_stats.json").read_text())
    questions = load_questions(sc.input)
    shard_dir = out / "shards"
    paths, todo = artifacts.shard_paths(shard_dir, len(questions), sc.shard_size)
    n_shards = len(paths)
    logger.info("sample: %d questions in %d shards, %d to generate", len(questions), n_shards, len(todo))
    for done, s in enumerate(todo, 1):
        chunk = questions.iloc[s * sc.shard_size : (s + 1) * sc.shard_size]
        df = sample_shard(chunk, sc, batch_seed(int(cfg.seed), s), bool(cfg.progress))
        artifacts.write_parquet_atomic(df, paths[s])
        logger.info("sample: shard %d written (%d/%d this run)", s, done, len(todo))
    samples = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    expected = len(questions) * sc.n
    if len(samples) != expected:
        raise RuntimeError(f"{shard_dir}: {len(samples)} samples, expected {len(questions)} x {sc.n} = {expected}")
    artifacts.write_parquet_atomic(samples, out / "samples.parquet")
    lengths = samples["response"].str.len()
    stats = {"n_questions": len(questions), "n": int(sc.n), "n_samples": len(samples), "n_shards": n_shards,
             "empty_responses": int((lengths == 0).sum()), "mean_response_chars": float(lengths.mean()),
             "with_boxed": int(samples["response"].str.contains("\\boxed", regex=False).sum())}
    artifacts.write_json_atomic(stats, out / "sample_stats.json")
    state.finish(["samples.parquet", "sample_stats.json"])
    cost.record_generation("sample", sc.model_path, [out / "samples.parquet"])  # the row costs (Table-3 runner)
    return stats


def main(argv: list[str] | None = None) -> int:
    return artifacts.stage_main(run, USAGE, argv)


if __name__ == "__main__":
    sys.exit(main())
