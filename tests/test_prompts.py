"""Named prompt templates (dft_verl.prompts): the messages of each, the ChatML text they render to through a real
tokenizer chat template, the error for an unknown name, and the recipes passing PROMPT_TEMPLATE to the data step
and to every evaluation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dft_verl.prompts import INSTRUCTION, TEMPLATES, build_prompt, question_from_prompt

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "table3"
BOX = "Please reason step by step, and put your final answer within \\boxed{}."
QUESTION = "What is $1 + 2$?"

# The Qwen2.5-Math evaluation toolkit's prompt type qwen-boxed (evaluation/utils.py, PROMPT_TEMPLATES["qwen-boxed"][0],
# a str.format template: {{}} is a literal {}), copied by hand
QWEN_BOXED_TOOLKIT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n{input}\nPlease reason step by step, and put your final answer within \\boxed{{}}.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
# The system-turn logic of the Qwen2.5-Math chat templates (no tools): a default system turn when the messages
# have none
QWEN_MATH_LIKE_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{{ '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>system\nPlease reason step by step, and put your final answer within \\\\boxed{}."
    "<|im_end|>\n' }}{% endif %}"
    "{% for m in messages %}{% if m['role'] != 'system' or not loop.first %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    from dft_verl.tiny import build_tokenizer

    return build_tokenizer()  # byte-level BPE with a ChatML template, built offline


def test_messages_of_each_template():
    assert INSTRUCTION == BOX
    assert list(TEMPLATES) == ["paper", "qwen-boxed"]
    assert build_prompt("  What is $1 + 2$?\n") == [{"role": "user", "content": "What is $1 + 2$?\n" + BOX}]
    assert build_prompt(QUESTION, "paper") == build_prompt(QUESTION)
    assert build_prompt(QUESTION, "qwen-boxed") == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is $1 + 2$?\n" + BOX},
    ]
    for name in TEMPLATES:
        assert question_from_prompt(build_prompt(QUESTION, name)) == QUESTION


def test_chatml_rendering(tokenizer):
    def render(name):
        return tokenizer.apply_chat_template(build_prompt(QUESTION, name), tokenize=False, add_generation_prompt=True)

    assert render("paper") == ("<|im_start|>user\nWhat is $1 + 2$?\n" + BOX + "<|im_end|>\n<|im_start|>assistant\n")
    assert render("qwen-boxed") == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                                    "<|im_start|>user\nWhat is $1 + 2$?\n" + BOX + "<|im_end|>\n"
                                    "<|im_start|>assistant\n")
    assert render("qwen-boxed") == QWEN_BOXED_TOOLKIT.format(input=QUESTION)
    # the toolkit feeds that string as raw text: the same token ids as the chat template's
    ids = tokenizer.apply_chat_template(build_prompt(QUESTION, "qwen-boxed"), tokenize=True, add_generation_prompt=True,
                                        return_dict=True)["input_ids"]
    assert ids == tokenizer(QWEN_BOXED_TOOLKIT.format(input=QUESTION), add_special_tokens=False)["input_ids"]


def test_default_system_turn_of_qwen_math_templates():
    """With no system turn a Qwen2.5-Math template adds its own: paper then shows the instruction twice; qwen-boxed
    replaces that default and renders as the toolkit's string."""
    from dft_verl.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.chat_template = QWEN_MATH_LIKE_TEMPLATE
    paper = tokenizer.apply_chat_template(build_prompt(QUESTION), tokenize=False, add_generation_prompt=True)
    assert paper == ("<|im_start|>system\n" + BOX + "<|im_end|>\n"
                     "<|im_start|>user\nWhat is $1 + 2$?\n" + BOX + "<|im_end|>\n<|im_start|>assistant\n")
    boxed = tokenizer.apply_chat_template(build_prompt(QUESTION, "qwen-boxed"), tokenize=False,
                                          add_generation_prompt=True)
    assert boxed == QWEN_BOXED_TOOLKIT.format(input=QUESTION)


def test_unknown_template_is_a_clear_error():
    msg = r"unknown prompt template 'qwen_boxed'; valid: paper, qwen-boxed"
    with pytest.raises(ValueError, match=msg):
        build_prompt(QUESTION, "qwen_boxed")
    from dft_verl.benchmarks import Question

    with pytest.raises(ValueError, match=msg):
        Question("math500", 0, QUESTION, "3").prompt("qwen_boxed")


# ------------------------------------------------------------------------------------------ Table 3 (dft_verl.table3)


@pytest.mark.parametrize("template", [None, "qwen-boxed"])
def test_table3_passes_one_template_to_data_and_every_evaluation(tmp_path, template):
    from dft_verl.table3 import plan
    from dft_verl.table3.settings import resolve

    s = resolve({"RUNS_DIR": str(tmp_path), **({"PROMPT_TEMPLATE": template} if template else {})}, cwd=tmp_path)
    steps = [st for stage in plan.parse_stages(["all"]) for st in plan.steps(s, stage)]
    expected = template or "paper"
    (pipeline,) = [st for st in steps if st.module == "dft_verl.pipeline"]
    assert f"prepare.prompt_template={expected}" in pipeline.args
    evals = [st.args for st in steps if st.module == "dft_verl.eval"]
    assert len(evals) == 10  # base and the nine trained rows
    assert all(a[a.index("--prompt-template") + 1] == expected for a in evals)


def test_recipe_rejects_an_unknown_template(tmp_path):
    env = {k: os.environ[k] for k in ("PATH", "HOME", "TMPDIR", "LANG", "HF_HUB_OFFLINE", "HF_HOME") if k in os.environ}
    proc = subprocess.run(["bash", str(RECIPES / "run_data.sh")], capture_output=True, text=True, timeout=300,
                          env={**env, "PYTHON": sys.executable, "DRY_RUN": "1", "RUNS_DIR": str(tmp_path),
                               "PROMPT_TEMPLATE": "qwen_boxed"})
    assert proc.returncode == 2
    assert "PROMPT_TEMPLATE=qwen_boxed: choose one of paper, qwen-boxed" in proc.stderr


@pytest.mark.slow
def test_run_all_dry_run_with_qwen_boxed(tmp_path):
    """DRY_RUN=1 PROMPT_TEMPLATE=qwen-boxed bash recipes/table3/run_all.sh: every command's config resolves."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "TMPDIR", "LANG", "HF_HUB_OFFLINE", "HF_HOME") if k in os.environ}
    proc = subprocess.run(["bash", str(RECIPES / "run_all.sh")], capture_output=True, text=True, timeout=600,
                          env={**env, "PYTHON": sys.executable, "DRY_RUN": "1", "RUNS_DIR": str(tmp_path),
                               "PROMPT_TEMPLATE": "qwen-boxed"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"^table3 check: 24 ok, 0 failed$", proc.stdout, re.M), proc.stdout[-2000:]
    assert "prompt_template=qwen-boxed" in proc.stdout


def test_filtered_sft_and_dpo_data_keep_the_template():
    """RFT (filter/sft.parquet) and DPO (filter/dpo.parquet) rows copy the sampled prompt's messages whole."""
    import pandas as pd

    from dft_verl.pipeline import artifacts, filter as filter_stage

    prompt = build_prompt("Question 0?", "qwen-boxed")
    verified = pd.DataFrame([
        {"index": 0, "sample_idx": j, "data_source": "d", "prompt": prompt, "response": r, "ground_truth": "7",
         "correct": ok, "pred": None, "reason": "ok" if ok else "wrong"}
        for j, (r, ok) in enumerate([("\\boxed{7}", True), ("\\boxed{8}", False)])])
    sft, dpo, _ = filter_stage.filter_verified(verified, artifacts.load_config(["out_dir=unused"]).filter)
    assert sft.iloc[0]["messages"] == prompt + [{"role": "assistant", "content": "\\boxed{7}"}]
    assert sft.iloc[0]["extra_info"]["question"] == "Question 0?"
    assert dpo.iloc[0]["prompt"] == prompt
