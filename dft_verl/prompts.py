"""The paper's math prompt: one user turn holding the question and the boxed-answer instruction.

Every stage that shows a question to a model (prepare, sample, eval, demo, GRPO data) builds it here, so
training, sampling and evaluation see byte-identical prompts.
"""

from __future__ import annotations

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def build_user_content(question: str) -> str:
    """Question text, a newline, then INSTRUCTION (the RL parquet schema written by dft_verl.pipeline.prepare)."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty string, got {question!r}")
    return question.strip() + "\n" + INSTRUCTION


def build_prompt(question: str) -> list[dict[str, str]]:
    """Chat messages for one question: a single system-free user turn."""
    return [{"role": "user", "content": build_user_content(question)}]


def question_from_prompt(prompt: list[dict[str, str]]) -> str:
    """Inverse of build_prompt: the question text of the last user turn, instruction removed."""
    users = [m for m in prompt if m.get("role") == "user"]
    if not users:
        raise ValueError(f"prompt has no user turn: {prompt!r}")
    content = users[-1]["content"]
    suffix = "\n" + INSTRUCTION
    return content[: -len(suffix)] if content.endswith(suffix) else content
