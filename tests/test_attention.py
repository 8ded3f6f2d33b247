"""gqa_sdpa (dft_verl.attention) against transformers' own attention: the same logits as "sdpa" and "eager" (an
independent formula: explicit repeat_kv, matmul and softmax) on left-padded batches, prefill and decode steps, for
models with 2 and 3 query heads per key/value head; the sampler's greedy tokens are unchanged; the loaders use it."""

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from dft_verl.attention import GQA_SDPA, for_inference, register

VOCAB = 96


def tiny_gqa(kind: str, impl: str, dtype=torch.float32):
    """A random grouped-query model (seeded: the same weights for every implementation)."""
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                  max_position_embeddings=128, tie_word_embeddings=True)
    if kind == "llama":  # SmolLM2's architecture: 3 query heads per key/value head
        config = LlamaConfig(num_attention_heads=6, num_key_value_heads=2, **common)
        model = LlamaForCausalLM(config)
    else:  # Qwen2.5's: 2 per key/value head
        config = Qwen2Config(num_attention_heads=4, num_key_value_heads=2, **common)
        model = Qwen2ForCausalLM(config)
    model = model.to(dtype).eval()
    model.set_attn_implementation(register() if impl == GQA_SDPA else impl)
    return model


def padded_batch():
    lengths = [11, 7, 11, 3, 9]
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, -n:] = torch.randint(3, VOCAB, (n,), generator=g)
        mask[i, -n:] = 1
    return ids, mask


@torch.no_grad()
def prefill_and_decode(model, ids, mask, steps: int = 4):
    """Logits of the prefill (real positions) and of ``steps`` decode steps over a KV cache, fixed next tokens."""
    cache = DynamicCache(config=model.config)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = [model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache).logits[mask.bool()]]
    for t in range(steps):
        token = (torch.arange(ids.shape[0]) * 7 + t) % VOCAB
        mask = torch.cat([mask, torch.ones(ids.shape[0], 1, dtype=torch.long)], dim=1)
        out.append(model(input_ids=token[:, None], attention_mask=mask, position_ids=positions[:, -1:] + 1 + t,
                         past_key_values=cache).logits[:, -1])
    return out


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_logits_equal_sdpa_and_eager_on_padded_batches(kind, monkeypatch):
    from transformers.integrations import sdpa_attention

    copies = []  # repeat_kv calls: sdpa's key/value copies, which gqa_sdpa exists to avoid
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda x, n: copies.append(n) or x.repeat_interleave(n, dim=1))
    ids, mask = padded_batch()
    ours = prefill_and_decode(tiny_gqa(kind, GQA_SDPA), ids, mask)
    assert not copies
    prefill_and_decode(tiny_gqa(kind, "sdpa"), ids, mask)
    assert copies  # the padded batch does take sdpa's copying path
    for reference in ("sdpa", "eager"):
        theirs = prefill_and_decode(tiny_gqa(kind, reference), ids, mask)
        for step, (a, b) in enumerate(zip(ours, theirs)):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5, msg=f"{kind} vs {reference}, step {step}")


def test_bf16_logits_equal_sdpa_within_bf16_rounding():
    ids, mask = padded_batch()
    ours = prefill_and_decode(tiny_gqa("llama", GQA_SDPA, torch.bfloat16), ids, mask)
    reference = prefill_and_decode(tiny_gqa("llama", "sdpa", torch.bfloat16), ids, mask)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a.float(), b.float(), atol=3e-2, rtol=2e-2)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_an_unpadded_batch_prefills_with_sdpa_itself_and_decodes_without_its_kernel(kind, monkeypatch):
    """No mask (transformers drops an all-ones one): the prefill is sdpa's own, bit for bit; a decoding step takes
    the two-matmul path, not torch's SDPA kernel (1.7x slower at batch 64 on SmolLM2), with the logits of "sdpa" and
    "eager"."""
    ids = padded_batch()[0][:, -3:]
    mask = torch.ones_like(ids)
    kernel_rows = []  # query rows of every torch SDPA call
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, *a, **k: kernel_rows.append(q.shape[-2]) or sdpa(q, *a, **k))
    ours = prefill_and_decode(tiny_gqa(kind, GQA_SDPA), ids, mask, steps=3)
    assert kernel_rows and all(rows > 1 for rows in kernel_rows), kernel_rows  # prefill only
    for reference in ("sdpa", "eager"):
        theirs = prefill_and_decode(tiny_gqa(kind, reference), ids, mask, steps=3)
        if reference == "sdpa":
            assert torch.equal(ours[0], theirs[0])
        for step, (a, b) in enumerate(zip(ours, theirs)):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5, msg=f"{kind} vs {reference}, step {step}")


def test_greedy_samples_are_unchanged():
    from dft_verl.rollout.sampler import SamplingParams, sample

    ids, mask = padded_batch()
    prompts = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
    runs = [sample(tiny_gqa("llama", impl), prompts, [12] * len(prompts), SamplingParams(temperature=0, logprobs=True),
                   eos_ids=[1], pad_id=0) for impl in (GQA_SDPA, "sdpa")]
    assert [c.token_ids for c in runs[0]] == [c.token_ids for c in runs[1]]
    for a, b in zip(*runs):
        assert a.log_probs == pytest.approx(b.log_probs, abs=1e-4)


def test_the_hf_sampler_loads_models_with_it(tmp_path):
    from dft_verl.generation import load_hf
    from dft_verl.tiny import build_tiny_model

    model, _ = load_hf(build_tiny_model(str(tmp_path / "tiny")))
    assert model.config._attn_implementation == GQA_SDPA
    assert for_inference("eager") == "eager" and for_inference("sdpa") == for_inference(None) == GQA_SDPA
