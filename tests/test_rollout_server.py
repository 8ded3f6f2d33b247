"""The hf rollout backend alone: the sampler against plain transformers, the server as a real Ray actor.

References are computed independently: greedy completions with ``model.generate`` on one unpadded prompt at a
time, log-probabilities with one forward pass over prompt + completion, ``log_softmax(logits / T)``.
"""

import asyncio

import pytest
import torch

from dft_verl.rollout.sampler import SamplingParams, sample

PROMPTS = ["What is 12 + 30?", "Natalia sold clips to 48 of her friends.", "x^2 + y = 3", "0 1 2 3 4 5 6 7"]


def perturbed(model, seed: int):
    """A random model this small greedily repeats the prompt's last token whatever its seed; unit Gaussian noise on
    every weight gives it varied, prompt-dependent output, so padding or weight-sync mistakes change tokens."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))
    return model


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(tmp_path_factory.mktemp("rollout") / "model")
    perturbed(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), seed=0).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_and_prompts(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    assert len({len(p) for p in prompts}) > 1, "prompts of different lengths exercise the left padding"
    return model, tok, prompts


def hf_greedy(model, prompt: list[int], max_new: int, eos: list[int]) -> list[int]:
    """transformers' greedy decoding of one unpadded prompt, cut after the first EOS as vLLM returns it."""
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         do_sample=False, max_new_tokens=max_new, eos_token_id=eos, pad_token_id=eos[0])
    tokens = out[0, len(prompt):].tolist()
    for j, t in enumerate(tokens):
        if t in eos:
            return tokens[: j + 1]
    return tokens


def forward_log_probs(model, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    return (logits / temperature).log_softmax(-1).gather(-1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1)


def test_batched_greedy_equals_transformers_one_by_one(model_and_prompts):
    model, tok, prompts = model_and_prompts
    eos = [tok.eos_token_id]
    got = sample(model, prompts, [12] * len(prompts), SamplingParams(temperature=0), eos, tok.pad_token_id)
    for prompt, completion in zip(prompts, got):
        assert completion.token_ids == hf_greedy(model, prompt, 12, eos)


def test_log_probs_are_the_actors_tempered_log_softmax(model_and_prompts):
    model, tok, prompts = model_and_prompts
    torch.manual_seed(0)
    got = sample(model, prompts, [10] * len(prompts), SamplingParams(temperature=0.7, logprobs=True),
                 [tok.eos_token_id], tok.pad_token_id)
    for prompt, completion in zip(prompts, got):
        expected = forward_log_probs(model, prompt, completion.token_ids, 0.7)
        # float32 rounding of a padded, batched decode against one unpadded forward (logits up to ~40 here): 2e-5
        assert torch.allclose(torch.tensor(completion.log_probs), expected, atol=1e-4), (completion, expected)


def test_eos_is_kept_and_ends_the_completion_unless_ignored(model_and_prompts):
    model, tok, prompts = model_and_prompts
    first = sample(model, prompts[:1], [8], SamplingParams(temperature=0), [tok.eos_token_id], tok.pad_token_id)[0]
    stop = first.token_ids[2]  # declare the 3rd greedy token an EOS id: generation must end right after it
    eos = [tok.eos_token_id, stop]
    cut = sample(model, prompts[:1], [8], SamplingParams(temperature=0), eos, tok.pad_token_id)[0]
    assert cut.token_ids == first.token_ids[: first.token_ids.index(stop) + 1] and cut.finished_by_eos
    full = sample(model, prompts[:1], [8], SamplingParams(temperature=0, ignore_eos=True), eos, tok.pad_token_id)[0]
    assert len(full.token_ids) == 8 and not full.finished_by_eos
    by_stop_id = sample(model, prompts[:1], [8], SamplingParams(temperature=0, stop_token_ids=(stop,)),
                        [tok.eos_token_id], tok.pad_token_id)[0]
    assert by_stop_id.token_ids == cut.token_ids


def test_each_request_keeps_its_own_max_tokens(model_and_prompts):
    model, tok, prompts = model_and_prompts
    limits = [3, 9, 1, 6]
    got = sample(model, prompts, limits, SamplingParams(temperature=1.0, logprobs=True), [], tok.pad_token_id)
    assert [len(c.token_ids) for c in got] == limits
    assert [len(c.log_probs) for c in got] == limits


def test_checkpoint_generation_defaults_are_not_applied(model_and_prompts):
    """A checkpoint's generation_config (top_k=1 here: always greedy) must not leak into temperature-1 sampling."""
    model, tok, prompts = model_and_prompts
    saved = model.generation_config.top_k
    model.generation_config.top_k = 1
    try:
        torch.manual_seed(1)
        draws = {tuple(c.token_ids) for c in sample(model, [prompts[0]] * 8, [6] * 8, SamplingParams(temperature=1.0),
                                                    [], tok.pad_token_id)}
    finally:
        model.generation_config.top_k = saved
    assert len(draws) > 1


def test_repetition_penalty_sees_each_rows_own_tokens_only(model_and_prompts):
    """A repetition penalty with rows of different prompt lengths (left padding), budgets and seeds: each row's tokens
    and log-probs are those it gets alone. The pad id is the token the shortest prompt draws first, so penalising the
    padding as if it were the row's own tokens would move that row's draws; the penalty itself changes them too."""
    model, tok, prompts = model_and_prompts
    params = SamplingParams(temperature=1.0, repetition_penalty=1.3, logprobs=True)
    seeds, limits = [3, 1, 4, 1], [7, 2, 9, 5]
    short = min(range(len(prompts)), key=lambda i: len(prompts[i]))
    pad = sample(model, [prompts[short]], [1], params, [], tok.pad_token_id, row_seeds=[seeds[short]])[0].token_ids[0]
    assert pad not in prompts[short]
    alone = [sample(model, [p], [m], params, [], pad, row_seeds=[s])[0] for p, m, s in zip(prompts, limits, seeds)]
    together = sample(model, prompts, limits, params, [], pad, row_seeds=seeds)
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    for x, y in zip(together, alone):
        assert x.log_probs == pytest.approx(y.log_probs, abs=1e-4)  # batch-shape rounding: 1.6e-5 seen
    plain = sample(model, prompts, limits, SamplingParams(temperature=1.0), [], pad, row_seeds=seeds)
    assert [c.token_ids for c in plain] != [c.token_ids for c in together]


def test_bad_requests_fail_clearly(model_and_prompts):
    model, tok, prompts = model_and_prompts
    with pytest.raises(ValueError, match="max_tokens"):
        sample(model, prompts[:1], [0], SamplingParams(), [], tok.pad_token_id)
    with pytest.raises(ValueError, match="empty prompt"):
        sample(model, [[]], [4], SamplingParams(), [], tok.pad_token_id)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)


@pytest.mark.parametrize("temperature, top_k, top_p, keep", [(0.7, 3, 1.0, [0, 1, 2]), (1.0, -1, 0.75, [0, 1]),
                                                         (1.0, -1, 1.0, [0, 1, 2, 3])])
def test_row_seeded_draws_follow_the_warped_softmax(temperature, top_k, top_p, keep):
    """The sampler's draw (transformers' warpers, then the inverse CDF at one seeded uniform per row), over many
    rows, has the frequencies of softmax(logits / T) renormalised over the tokens top-k / top-p keep (worked out by
    hand from the probabilities 0.5, 0.3, 0.15, 0.05 at T=1)."""
    from dft_verl.rollout.sampler import Uniforms, inverse_cdf, warpers

    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    rows, steps = 4000, 4
    chain = warpers(SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p))
    uniforms = Uniforms(range(rows), "cpu")
    counts = torch.zeros(4)
    for _ in range(steps):
        scores = chain(torch.zeros(rows, 1, dtype=torch.long), logits.expand(rows, 4).clone())
        counts += torch.bincount(inverse_cdf(scores, uniforms.draw(rows)), minlength=4)
    expected = torch.zeros(4)
    expected[keep] = (logits[keep] / temperature).softmax(-1)
    n = rows * steps
    sigma = (expected * (1 - expected) / n).sqrt()
    assert ((counts / n - expected).abs() <= 5 * sigma + 1e-9).all(), (counts / n, expected)


@pytest.mark.parametrize("vocab", [4, 1000, 49152 + 7])
def test_inverse_cdf_draws_the_plain_float64_cdf(vocab):
    """The two-level inverse CDF (block sums, then inside a block) draws the token the one-level formula draws:
    ``cdf = cumsum(softmax(scores))`` in float64 over the whole vocabulary, the first v with ``cdf(v) > u``, on
    random scores of several spreads with and without -inf entries (top-k / top-p cut), a vocabulary that is not a
    multiple of the block, and u at 0 and just below 1; a -inf token is never drawn."""
    from dft_verl.rollout.sampler import inverse_cdf

    gen = torch.Generator().manual_seed(vocab)
    for trial in range(8):
        scores = torch.randn(64, vocab, generator=gen) * (0.5 + 2 * trial)
        if trial % 2:
            cut = torch.rand(64, vocab, generator=gen) < 0.7
            cut[:, 0] = False
            scores[cut] = float("-inf")
        u = torch.rand(64, generator=gen, dtype=torch.float64)
        u[0], u[1] = 0.0, 1 - 2**-52
        cdf = scores.double().softmax(-1).cumsum(-1)
        expected = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
        drawn = inverse_cdf(scores, u)
        assert torch.equal(drawn, expected)
        assert torch.isfinite(scores.gather(1, drawn.unsqueeze(-1))).all()


def test_temperature_sampling_is_not_cut_to_the_top_50(model_and_prompts):
    """T=1 with top_k=-1 samples the whole softmax: the share of first tokens outside the 50 likeliest matches
    their probability (transformers' generate applied a default top_k=50 to every sampled request)."""
    model, tok, prompts = model_and_prompts
    temperature, rows = 10.0, 2000  # a flat distribution: the tiny model is peaked at T=1
    with torch.no_grad():
        probs = (model(torch.tensor([prompts[0]])).logits[0, -1].float() / temperature).softmax(-1)
    top50 = set(probs.topk(50).indices.tolist())
    tail = 1 - probs.topk(50).values.sum().item()
    assert tail > 0.2, "the check needs a flat enough distribution"
    got = sample(model, [prompts[0]] * rows, [1] * rows, SamplingParams(temperature=temperature), [], tok.pad_token_id,
                 generator_seed=0)
    outside = sum(c.token_ids[0] not in top50 for c in got) / rows
    assert abs(outside - tail) <= 5 * (tail * (1 - tail) / rows) ** 0.5, (outside, tail)


def test_rows_leaving_the_batch_do_not_change_the_others(model_and_prompts):
    """Requests with budgets 3, 9, 1, 6 and an EOS id that ends some early (a finished row leaves the batch with its
    keys and values): each row's seeded tokens and log-probs are those it gets alone."""
    model, tok, prompts = model_and_prompts
    params, seeds, limits = SamplingParams(temperature=1.0, logprobs=True), [5, 6, 7, 8], [3, 9, 1, 6]
    free = sample(model, prompts, [9] * 4, params, [], tok.pad_token_id, row_seeds=seeds)
    eos = [free[1].token_ids[4]]  # row 1 draws it at its 5th token at the latest: it ends early
    alone = [sample(model, [p], [m], params, eos, tok.pad_token_id, row_seeds=[s])[0]
             for p, m, s in zip(prompts, limits, seeds)]
    together = sample(model, prompts, limits, params, eos, tok.pad_token_id, row_seeds=seeds)
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert together[1].finished_by_eos and len(together[1].token_ids) <= 5
    assert [len(c.token_ids) for c in together] != limits
    for x, y in zip(together, alone):
        assert x.log_probs == pytest.approx(y.log_probs, abs=1e-5)


def test_row_seeded_tokens_do_not_depend_on_the_batch(model_and_prompts):
    """A prompt with its own seed gets the same tokens alone, in a batch, in another order; the same prompt with
    another seed gets other tokens; log-probs stay the actor's tempered log_softmax."""
    model, tok, prompts = model_and_prompts
    params = SamplingParams(temperature=1.0, logprobs=True)
    seeds = [11, 22, 33, 44]
    alone = [sample(model, [p], [10], params, [], tok.pad_token_id, row_seeds=[s])[0] for p, s in zip(prompts, seeds)]
    together = sample(model, prompts, [10] * 4, params, [], tok.pad_token_id, row_seeds=seeds)
    order = [2, 0, 3, 1]
    torch.manual_seed(123)  # the global RNG plays no part
    shuffled = sample(model, [prompts[i] for i in order], [10] * 4, params, [], tok.pad_token_id,
                      row_seeds=[seeds[i] for i in order])
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert [c.token_ids for c in shuffled] == [alone[i].token_ids for i in order]
    other = sample(model, [prompts[0]] * 4, [10] * 4, params, [], tok.pad_token_id, row_seeds=[1, 2, 3, 4])
    assert len({tuple(c.token_ids) for c in other}) > 1
    for prompt, completion in zip(prompts, together):  # the model's log-probs, not the one-hot scores' (0 / -inf)
        expected = forward_log_probs(model, prompt, completion.token_ids, 1.0)
        assert torch.allclose(torch.tensor(completion.log_probs), expected, atol=1e-3)


# ---------------------------------------------------------------------------------- the server as a Ray actor


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    ray.shutdown()


def rollout_configs(model_dir: str, **rollout):
    from verl.workers.config import HFModelConfig, RolloutConfig

    rollout = {"name": "hf", "prompt_length": 64, "response_length": 12, "dtype": "float32", "load_format": "auto",
               "tensor_model_parallel_size": 1, **rollout}
    return RolloutConfig(**rollout), HFModelConfig(path=model_dir)


@pytest.fixture(scope="module")
def server(ray_session, model_dir):
    from dft_verl.rollout.replica import server_name
    from dft_verl.rollout.server import HFRolloutServer

    config, model_config = rollout_configs(model_dir)
    handle = ray_session.remote(HFRolloutServer).options(name=server_name(0), max_concurrency=100).remote(
        config, model_config, 0)
    ray_session.get(handle.ready.remote())
    return handle


GREEDY = {"temperature": 0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": False}


def generate_all(ray, server, prompts, params=GREEDY, concurrent=True):
    calls = lambda: [server.generate.remote(prompt_ids=p, sampling_params=dict(params), request_id=str(i))  # noqa: E731
                     for i, p in enumerate(prompts)]
    if concurrent:
        return [o.token_ids for o in ray.get(calls())]
    return [ray.get(server.generate.remote(prompt_ids=p, sampling_params=dict(params), request_id=str(i))).token_ids
            for i, p in enumerate(prompts)]


def test_server_concurrent_requests_equal_one_by_one_and_transformers(ray_session, server, model_and_prompts):
    model, tok, prompts = model_and_prompts
    together = generate_all(ray_session, server, prompts * 3)
    stats = ray_session.get(server.get_stats.remote())
    assert stats["batches"] < stats["requests"], f"concurrent requests were not batched: {stats}"
    alone = generate_all(ray_session, server, prompts, concurrent=False)
    assert together == alone * 3
    # the response budget: min(response_length, prompt_length + response_length - len(prompt)) = 12
    assert alone == [hf_greedy(model, p, 12, [tok.eos_token_id]) for p in prompts]


def test_full_determinism_samples_per_request_whatever_the_arrival_order(ray_session, model_dir, model_and_prompts):
    """rollout.full_determinism: each question's responses depend on the request id, the prompt and the seed, not on
    when the requests arrive or what they are batched with. Here every request is named det-0, as verl 0.9.1's
    cpu_sync agent loop names them: a question asked 3 times gets 3 different responses, the same 3 in any order."""
    from dft_verl.rollout.server import HFRolloutServer

    _, _, prompts = model_and_prompts
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": False}
    requests = [prompts[i % 4] for i in range(12)]

    def run(seed, order):
        config, model_config = rollout_configs(model_dir, full_determinism=True, seed=seed)
        handle = ray_session.remote(HFRolloutServer).options(max_concurrency=100).remote(config, model_config, 0)
        refs = [handle.generate.remote(prompt_ids=requests[i], sampling_params=dict(params), request_id="det-0")
                for i in order]
        per_prompt: dict[tuple, list] = {}
        for i, out in zip(order, ray_session.get(refs)):
            per_prompt.setdefault(tuple(requests[i]), []).append(tuple(out.token_ids))
        ray_session.kill(handle)
        return {p: sorted(r) for p, r in per_prompt.items()}

    first = run(7, range(12))
    assert all(len(set(responses)) == 3 for responses in first.values()), first
    assert run(7, [5, 11, 0, 3, 8, 1, 10, 2, 6, 9, 4, 7]) == first
    assert run(8, range(12)) != first


def test_cpu_platform_routes_requests_by_prompt(ray_session):
    """The CPU platform's rollout.router_config_path, loaded by verl's own get_router_handle, routes by prompt: one
    question always to one replica (its samples' seeds count on it), different questions over every replica, where
    verl's deterministic routing would send every det-0 request to one."""
    from omegaconf import OmegaConf
    from verl.workers.rollout.router import get_router_handle

    import dft_verl.plugin  # noqa: F401  (the dft_verl_config resolver; verl imports it in every process)
    from dft_verl.rollout.router import prompt_slot

    rollout = OmegaConf.load(dft_verl.plugin.CONFIG_DIR / "online" / "platform" / "cpu.yaml").actor_rollout_ref.rollout
    assert rollout.full_determinism
    servers = {"10.0.0.1:7001": "replica 0", "10.0.0.1:7002": "replica 1"}
    router = get_router_handle(servers, router_config_path=rollout.router_config_path, full_determinism=True)
    assert ray_session.get(router.require_acquire_fields.remote()) == ["prompt_ids"]
    prompts = [[3, 1, 4, i] for i in range(16)]
    chosen = [ray_session.get(router.acquire_server.remote(request_id="det-0", prompt_ids=p)) for p in prompts * 2]
    assert chosen[:16] == chosen[16:]  # the same question, the same replica
    assert [sid for sid, _ in chosen[:16]] == [list(servers)[prompt_slot(p, 2)] for p in prompts]
    assert {handle for _, handle in chosen} == {"replica 0", "replica 1"}
    ray_session.kill(router)


def test_server_follows_weight_updates(ray_session, server, model_and_prompts, model_dir):
    """Weights pushed through the trainer-side adapter change greedy output to the new model's."""
    from transformers import AutoModelForCausalLM

    from dft_verl.rollout.replica import HFServerAdapter

    model, tok, prompts = model_and_prompts
    before = generate_all(ray_session, server, prompts)
    other = perturbed(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), seed=7)
    config, model_config = rollout_configs(model_dir)
    adapter = HFServerAdapter(config, model_config, device_mesh=None)
    weights = ((name, tensor) for name, tensor in other.state_dict().items() if name != "lm_head.weight")  # tied
    asyncio.run(adapter.update_weights(weights, global_steps=5))
    after = generate_all(ray_session, server, prompts)
    assert after != before
    assert after == [hf_greedy(other, p, 12, [tok.eos_token_id]) for p in prompts]
    out = ray_session.get(server.generate.remote(prompt_ids=prompts[0], sampling_params=dict(GREEDY), request_id="s"))
    assert out.extra_fields["global_steps"] == 5 and out.stop_reason == "completed"
    # back to the original weights for the other tests
    asyncio.run(adapter.update_weights(iter(model.state_dict().items())))
    assert generate_all(ray_session, server, prompts) == before


def test_server_rejects_incomplete_or_foreign_weights_and_keeps_serving(ray_session, server, model_and_prompts):
    import ray

    model, _, prompts = model_and_prompts
    ray.get(server.begin_weight_update.remote())
    with pytest.raises(ray.exceptions.RayTaskError, match="unknown parameter"):
        ray.get(server.load_weights.remote({"not.a.weight": torch.zeros(1)}))
    ray.get(server.load_weights.remote({"model.norm.weight": model.state_dict()["model.norm.weight"]}))
    with pytest.raises(ray.exceptions.RayTaskError, match="never arrived"):
        ray.get(server.finish_weight_update.remote())
    assert len(generate_all(ray_session, server, prompts[:1])[0]) > 0  # the lock was released


def test_server_vllm_token_budget(ray_session, server, model_and_prompts):
    import ray

    _, _, prompts = model_and_prompts
    short = ray.get(server.generate.remote(prompt_ids=prompts[0], sampling_params={**GREEDY, "max_tokens": 3},
                                           request_id="a"))
    assert len(short.token_ids) == 3
    with pytest.raises(ray.exceptions.RayTaskError, match="no room to generate"):
        ray.get(server.generate.remote(prompt_ids=[1] * 4096, sampling_params=dict(GREEDY), request_id="b"))


def test_unsupported_setups_fail_at_start_up(tiny_model_dir):
    from verl.workers.config import HFModelConfig

    from dft_verl.rollout.server import check_supported

    with pytest.raises(NotImplementedError, match="lora.merge=True"):
        check_supported(HFModelConfig(path=tiny_model_dir, lora_rank=8))
    check_supported(HFModelConfig(path=tiny_model_dir, lora={"rank": 8, "merge": True}))
