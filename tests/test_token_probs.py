"""Target-token probabilities: checked against an independent computation (chat template prefixes to find the
assistant tokens, one unpadded forward per row, float64 softmax)."""

import json

import numpy as np
import pandas as pd
import pytest

from dft_verl.analysis import token_probs as tp

ROWS = [
    [{"role": "user", "content": "What is 12 + 30?"},
     {"role": "assistant", "content": "First add the tens: 10 + 30 = 40, then 2 more. The answer is \\boxed{42}."}],
    [{"role": "user", "content": "Half of 1?"}, {"role": "assistant", "content": "\\boxed{0.5}"}],
    # two assistant turns: both are training targets
    [{"role": "user", "content": "x^2 = 4, x > 0?"}, {"role": "assistant", "content": "x = 2"},
     {"role": "user", "content": "And y + 1 = 3?"}, {"role": "assistant", "content": "y = \\boxed{2}"}],
]


@pytest.fixture(scope="module")
def sft_parquet(tmp_path_factory):
    path = tmp_path_factory.mktemp("sft") / "train.parquet"
    pd.DataFrame({"messages": ROWS, "data_source": ["t"] * len(ROWS)}).to_parquet(path)
    return path


def independent_probs(model, tokenizer, messages):
    """p(y_t | y_<t) for the tokens of every assistant turn, located by rendering conversation prefixes."""
    import torch

    def ids(msgs, gen):
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    full = ids(messages, False)
    targets = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            start, end = len(ids(messages[:i], True)), len(ids(messages[: i + 1], False))
            assert full[:end][:start] == ids(messages[:i], True)
            targets += list(range(start, end))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full])).logits[0].double()
    p = torch.softmax(logits, dim=-1)
    return np.array([p[t - 1, full[t]].item() for t in targets])


def test_probs_match_independent_computation(tiny_model_dir, sft_parquet, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tp.main(["--model", tiny_model_dir, "--data", str(sft_parquet), "--out", str(tmp_path / "tp"),
                   "--batch-size", "2", "--device", "cpu"])
    probs, offsets = np.load(out / "token_probs.npy"), np.load(out / "offsets.npy")
    assert probs.dtype == np.float32 and offsets.dtype == np.int64 and len(offsets) == len(ROWS) + 1

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    for i, messages in enumerate(ROWS):
        want = independent_probs(model, tok, messages)
        got = probs[offsets[i]: offsets[i + 1]]
        assert len(got) == len(want) > 0
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)

    per_ex = pd.read_parquet(out / "per_example.parquet")
    assert per_ex["n_target_tokens"].tolist() == np.diff(offsets).tolist()
    np.testing.assert_allclose(per_ex["mean_prob"], [probs[a:b].mean() for a, b in zip(offsets, offsets[1:])],
                               rtol=1e-6)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["summary"]["n_tokens"] == len(probs) == offsets[-1]
    assert meta["summary"]["mean"] == pytest.approx(float(probs.mean()), rel=1e-5)
    assert (out / "hist.png").read_bytes()[:4] == b"\x89PNG"

    # rerun with the same settings is skipped; other settings into the same folder are refused
    stamp = (out / "token_probs.npy").stat().st_mtime_ns
    tp.compute(tiny_model_dir, sft_parquet, out, device="cpu")
    assert (out / "token_probs.npy").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="meta.json holds a run with settings"):
        tp.compute(tiny_model_dir, sft_parquet, out, limit=1, device="cpu")


def test_batching_does_not_change_probs(tiny_model_dir, sft_parquet):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ds = tp.sft_dataset(sft_parquet, tok, max_length=512)
    one, off1 = tp.target_token_probs(model, ds, batch_size=1, pad_token_id=tok.pad_token_id, progress=False)
    three, off3 = tp.target_token_probs(model, ds, batch_size=3, pad_token_id=tok.pad_token_id, progress=False)
    assert off1.tolist() == off3.tolist()
    np.testing.assert_allclose(one, three, rtol=1e-5, atol=1e-8)


def test_summary_fractions():
    s = tp.summarize(np.array([0.0005, 0.005, 0.05, 0.6, 0.95], dtype=np.float32))
    assert s["n_tokens"] == 5
    assert s["frac_below"] == {"0.001": 0.2, "0.01": 0.4, "0.1": 0.6, "0.5": 0.6}
    assert s["frac_above_0.9"] == pytest.approx(0.2)
    assert s["quantiles"]["0.5"] == pytest.approx(0.05)
