"""The math prompt, by named template: the question and the boxed-answer instruction as chat messages.

Every stage that shows a question to a model builds it here: prepare writes it into the RL parquet and the SFT
messages (sample, verify, filter, GRPO/PPO, DPO pairs and RFT data all copy those messages as they are), and eval
builds the benchmark prompts with ``build_prompt``. One template name per run therefore gives training, sampling
and evaluation byte-identical prompts.

Templates (``TEMPLATES``), for a question ``q`` (stripped of surrounding whitespace):

``paper`` (the default): one user turn, no system turn::

    [{"role": "user", "content": q + "\\n" + INSTRUCTION}]

  Under a ChatML template that adds nothing of its own (the tiny test models' templates) it renders, with the
  generation prompt, to (wrapped here after a ``\\n``)::

    <|im_start|>user\\n{q}\\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\\n
    <|im_start|>assistant\\n

``qwen-boxed``: the Qwen2.5-Math evaluation toolkit's prompt type ``qwen-boxed`` (QwenLM/Qwen2.5-Math,
evaluation/utils.py, ``PROMPT_TEMPLATES["qwen-boxed"]``), the one the paper's evaluation scripts use::

    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": q + "\\n" + INSTRUCTION}]

  Under ChatML (any template that renders a given system turn verbatim, Qwen2.5's included) it renders to::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\n{q}\\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\\n
    <|im_start|>assistant\\n

  which is the toolkit's input template ``.format(input=q)`` character for character (the toolkit sends that
  string to the engine as raw text, without the tokenizer's chat template; tests/test_prompts.py checks on a
  byte-level BPE tokenizer that the token ids agree too). Only the question's surrounding whitespace, which build_prompt strips, could differ.

Default system prompts. Qwen2.5 chat templates insert a system turn of their own when the messages have none:
plain Qwen2.5 models "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."; the Qwen2.5-Math
templates "Please reason step by step, and put your final answer within \\boxed{}." (Qwen2.5-Math-7B's
tokenizer_config.json, as its users quote it, and the -Instruct models; Qwen2.5-Math-1.5B's own file is assumed
to be the same family template, not read here). So on Qwen2.5-Math-1.5B ``paper`` renders as that system turn
plus the user turn above (the instruction twice), and only ``qwen-boxed`` gives the toolkit's exact prompt. verl's
SFT/DPO datasets (one message rendered at a time) keep that default system turn on the first message too, so
training and evaluation agree within one template either way.
"""

from __future__ import annotations

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_BOXED_SYSTEM = "You are a helpful assistant."

# template name -> its system turn (None: no system turn)
TEMPLATES: dict[str, str | None] = {"paper": None, "qwen-boxed": QWEN_BOXED_SYSTEM}
DEFAULT_TEMPLATE = "paper"


def check_template(template: str) -> str:
    """``template`` if it names a template; ValueError listing the valid names otherwise."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; valid: {', '.join(TEMPLATES)}")
    return template


def build_user_content(question: str) -> str:
    """Question text, a newline, then INSTRUCTION (the user turn of every template)."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty string, got {question!r}")
    return question.strip() + "\n" + INSTRUCTION


def build_prompt(question: str, template: str = DEFAULT_TEMPLATE) -> list[dict[str, str]]:
    """Chat messages for one question under ``template`` (module docstring: what each renders to)."""
    system = TEMPLATES[check_template(template)]
    user = {"role": "user", "content": build_user_content(question)}
    return [user] if system is None else [{"role": "system", "content": system}, user]


def question_from_prompt(prompt: list[dict[str, str]]) -> str:
    """Inverse of build_prompt (any template): the question text of the last user turn, instruction removed."""
    users = [m for m in prompt if m.get("role") == "user"]
    if not users:
        raise ValueError(f"prompt has no user turn: {prompt!r}")
    content = users[-1]["content"]
    suffix = "\n" + INSTRUCTION
    return content[: -len(suffix)] if content.endswith(suffix) else content
