"""sample stage on a tiny random chat model: schema, n per question, shard resume reproduces shards."""

import os

import pandas as pd
import pytest

from dft_verl.pipeline import artifacts, prepare, sample
from .fixtures import GSM8K_ROWS, build_tiny_chat_model, write_jsonl


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("sample") / "tiny-chat")


def _cfg(tmp_path, model, *extra):
    return artifacts.load_config([
        f"out_dir={tmp_path / 'run'}", f"prepare.source={tmp_path / 'gsm8k.jsonl'}", f"sample.model_path={model}",
        "prepare.max_rows=3", "sample.n=2", "sample.max_new_tokens=8", "sample.shard_size=2",
        "sample.batch_size=4", "progress=false", *extra])


def test_samples_schema_and_resume(tmp_path, tiny_chat):
    write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)
    cfg = _cfg(tmp_path, tiny_chat)
    prepare.run(cfg)
    stats = sample.run(cfg)
    out = tmp_path / "run/sample"
    df = pd.read_parquet(out / "samples.parquet")
    assert stats["n_samples"] == 6 == len(df) and stats["n_shards"] == 2
    assert list(df.columns) == sample.COLUMNS
    rl = pd.read_parquet(tmp_path / "run/prepare/rl.parquet")
    golds = [r["ground_truth"] for r in rl["reward_model"]]
    assert df["index"].tolist() == [0, 0, 1, 1, 2, 2] and df["sample_idx"].tolist() == [0, 1] * 3
    assert df["ground_truth"].tolist() == [g for g in golds for _ in range(2)]
    assert [dict(m) for m in df.iloc[2]["prompt"]] == [dict(m) for m in rl.iloc[1]["prompt"]]
    assert df["response"].map(type).eq(str).all()

    # a run killed after shard 0: shard 1 and the merged file are missing, a tmp file is left behind
    shard0, shard1 = out / "shards/shard-00000.parquet", out / "shards/shard-00001.parquet"
    before = pd.read_parquet(shard1)
    mtime0 = os.stat(shard0).st_mtime_ns
    for p in (shard1, out / "samples.parquet", out / "_manifest.json"):
        p.unlink()
    (out / "shards/shard-00001.parquet.tmp-999").write_bytes(b"partial")
    sample.run(cfg)
    assert os.stat(shard0).st_mtime_ns == mtime0  # finished shard not regenerated
    pd.testing.assert_frame_equal(pd.read_parquet(shard1), before)  # same seed -> same text
    pd.testing.assert_frame_equal(pd.read_parquet(out / "samples.parquet"), df)
    assert not list((out / "shards").glob("*.tmp-*"))


def test_bad_rl_parquet_names_the_field(tmp_path, tiny_chat):
    bad = tmp_path / "rl.parquet"
    pd.DataFrame({"data_source": ["x"], "prompt": [[{"role": "user", "content": "q"}]],
                  "reward_model": [{"style": "rule"}]}).to_parquet(bad)
    with pytest.raises(ValueError, match="row 0: field reward_model.ground_truth"):
        sample.run(_cfg(tmp_path, tiny_chat, f"sample.input={bad}"))


def test_processes_give_the_same_samples_and_keep_a_finished_run(tmp_path, tiny_chat):
    """sample.processes=2 (6 one-sequence batches over two workers) writes the one-process samples, and it is not
    part of the stage's key: changing only it keeps the finished stage."""
    write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)
    base = ("sample.batch_size=1", "sample.shard_size=3")
    cfg = _cfg(tmp_path, tiny_chat, *base)
    prepare.run(cfg)
    sample.run(cfg)
    one = tmp_path / "run/sample/samples.parquet"
    sample.run(_cfg(tmp_path, tiny_chat, *base, "sample.processes=2", f"sample.output_dir={tmp_path / 'p2'}"))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "p2/samples.parquet"), pd.read_parquet(one))
    mtime = os.stat(one).st_mtime_ns
    sample.run(_cfg(tmp_path, tiny_chat, *base, "sample.processes=2"))
    assert os.stat(one).st_mtime_ns == mtime
