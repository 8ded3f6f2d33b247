"""Fixtures for pipeline tests: a tiny random chat model with an offline BPE tokenizer, and data files.

The tokenizer is byte-level BPE trained on a few math strings, so any text round-trips (unseen characters
are dropped) and the vocabulary stays ~150 tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dft_verl.prompts import build_prompt

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "user assistant The answer is \\boxed{4} so \\boxed{7} and \\boxed{2} or \\boxed{12}.",
    "What is 2 + 2 ? 3 + 4 = 7, 5 + 3 = 8, 6 + 3 = 9, 1,000 + 234 = 1234, 0 1 2 3 4 5 6 7 8 9",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "Compute $\\frac{1}{2}+\\frac{1}{4}$. Solve $x-3=0$. Find the interval where $x \\le 3$ (-\\infty,3].",
]


def build_tiny_chat_model(out_dir: str | Path, seed: int = 0) -> str:
    """Save a 2-layer Qwen2 (hidden 64, 4 heads of 16) and a byte-level BPE tokenizer (~150 tokens, trained
    on CORPUS) with a ChatML template under out_dir; returns the path. Reuses a folder already built."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    if (out / "config.json").exists():
        return str(out)
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=150, special_tokens=SPECIALS, show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHAT_TEMPLATE
    vocab = core.get_vocab()
    cfg = Qwen2Config(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                      tie_word_embeddings=True, pad_token_id=vocab["<|endoftext|>"],
                      eos_token_id=vocab["<|im_end|>"], bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    model.generation_config.pad_token_id = vocab["<|endoftext|>"]
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def write_jsonl(path: str | Path, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return str(path)


GSM8K_ROWS = [
    {"question": "What is 2 + 2 ?", "answer": "2 + 2 = 4\n#### 4"},
    {"question": "What is 3 + 4 ?", "answer": "3 + 4 = 7\n#### 7"},
    {"question": "What is 1 + 1 ?", "answer": "1 + 1 = 2\n#### 2"},
    {"question": "What is 5 + 3 ?", "answer": "5 + 3 = 8\n#### 8"},
    {"question": "What is 6 + 3 ?", "answer": "6 + 3 = 9\n#### 9"},
    {"question": "What is 1,000 + 234 ?", "answer": "1000 + 234 = 1234\n#### 1,234"},
]

MATH_ROWS = [
    {"problem": "Compute $\\frac{1}{2}+\\frac{1}{4}$.", "solution": "It is $\\boxed{\\frac{3}{4}}$.",
     "answer": "\\frac{3}{4}", "subject": "Algebra", "level": 1},
    {"problem": "Solve $x-3=0$.", "solution": "So $x=\\boxed{3}$.", "answer": "3", "subject": "Algebra",
     "level": 1},
    {"problem": "Find the interval where $x \\le 3$.", "solution": "$\\boxed{(-\\infty,3]}$",
     "answer": "(-\\infty,3]", "subject": "Algebra", "level": 2},
]


def samples_frame(rows: list[tuple[int, int, str | None, str | None]], data_source: str = "fixture") -> pd.DataFrame:
    """A samples parquet frame from (index, sample_idx, response, ground_truth) tuples."""
    return pd.DataFrame([
        {"index": i, "sample_idx": j, "data_source": data_source, "prompt": build_prompt(f"Question {i}?"),
         "response": resp, "ground_truth": gold}
        for i, j, resp, gold in rows
    ])
