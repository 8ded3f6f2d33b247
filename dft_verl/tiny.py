"""A tiny random causal LM with an offline byte-level BPE tokenizer.

For tests and smoke runs on machines with no model hub: ``build_tiny_model(dir)`` writes a plain
Hugging Face folder (config, safetensors weights, tokenizer with a Qwen-style chat template) that
verl, transformers and this package's generation code load like any real model. Deterministic for
a given seed.
"""

from __future__ import annotations

import os
import shutil
import tempfile

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "What is 12 + 30? First add the tens: 10 + 30 = 40, then 2 more gives 42. The answer is \\boxed{42}.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "user assistant system question answer solution #### 72 \\frac{1}{2} 0.5 x^2 + y = 3 (1, 2] \\sqrt{3}",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ( ) [ ] { } . , ; : ? ! $ % abcdefghijklmnopqrstuvwxyz",
]


def build_tokenizer(vocab_size: int = 400):
    """Byte-level BPE trained on a small built-in corpus; any text round-trips."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str, arch: str = "qwen2", hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> str:
    """Write a random ``arch`` ("qwen2" or "llama") model + tokenizer to ``out_dir``; return the path.

    Head dim is 32 (2 heads of a 64-wide model). Reuses an existing folder.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    if os.path.exists(os.path.join(out_dir, "config.json")):
        return out_dir
    tokenizer = build_tokenizer()
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    config = {"qwen2": Qwen2Config, "llama": LlamaConfig}[arch](**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    parent = os.path.dirname(os.path.abspath(out_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tiny-", dir=parent)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def teach_tiny_model(out_dir, rows: list[dict], steps: int = 120, final_loss: float = 0.3) -> str:
    """A tiny random Llama (2 layers, hidden 64) fitted to the chat-formatted gold solutions of ``rows``.

    rows: dicts with "question" and "solution" (as ``dft_verl.demo.tasks.make_problems`` writes them).
    Full-batch AdamW (lr 3e-3) for ``steps`` steps, until the mean token cross-entropy is below
    ``final_loss`` nats (an error otherwise): sampled at temperature 1.0 it then answers a good share of
    those questions correctly, so verification, filtering and RL rewards see real correct answers.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dft_verl.prompts import build_prompt

    path = build_tiny_model(str(out_dir), arch="llama", hidden_size=64, num_layers=2)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    texts = [tok.apply_chat_template(build_prompt(r["question"]) + [{"role": "assistant", "content": r["solution"]}],
                                     tokenize=False) for r in rows]
    enc = tok(texts, padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    if loss.item() >= final_loss:
        raise RuntimeError(f"tiny model did not fit its {len(rows)} solutions: loss {loss.item():.3f} >= {final_loss}")
    model.save_pretrained(path)
    return path
