"""dft_verl.rewards against hostile model output: a generated corpus of degenerate responses and golds.

Every input must come back as one Judgement, in order, with a reason from REASONS, without an exception and
within a time bound; the worst inputs for the old quadratic extraction must return within timeout_s + 1 s.
"""

import math
import random
import time
from fractions import Fraction

import pytest

from dft_verl import rewards
from dft_verl.rewards import MAX_ANSWER_CHARS, REASONS, Judgement, compute_score, judge, precheck, verify_many

MB = 1 << 20
# Answers math-verify cannot finish (sympy evaluating the power or factorial): each costs one timeout.
HANGING = ["9^{9^{9^{9}}}", "(10^{10})!"]


def _repeated() -> list[str]:
    units = ["\\boxed{", "\\boxed", "\\fbox{", "{", "}", "\\", "\\\\", "$", "$$", "\\boxed{}", "\\boxed{1}", "{}",
             "\\{", "\\boxed 5 ", "\\boxed{\\boxed{", "}}", "\\left(", "^{", "\\frac{1}{"]
    out = []
    for unit in units:
        for count in (1, 7, 1000, 20_000):
            for tail in ("", " so \\boxed{7}", "\\boxed{7"):
                out.append(unit * count + tail)
    return out


def _nested() -> list[str]:
    out = []
    for depth in (2, 30, 120, 5000, 100_000):
        out += ["\\boxed{" + "{" * depth + "1" + "}" * depth + "}",
                "\\boxed{" * depth + "1" + "}" * depth,
                "\\boxed{" + "\\sqrt{" * depth + "2" + "}" * depth + "}",
                "\\boxed{" + "\\frac{1}{" * depth + "2" + "}" * depth + "}",
                "\\boxed{" + "(" * depth + "1" + ")" * depth + "}",
                "\\boxed{" + "2^{" * depth + "1" + "}" * depth + "}",
                "\\boxed{" + "{" * depth + "1}",  # unclosed inside
                "$\\boxed{" + "[" * depth + "$"]
    return out


def _unclosed() -> list[str]:
    return ["\\boxed{", "\\boxed{5", "\\boxed{\\frac{1}{2}", "$\\boxed{", "\\boxed{\\left(", "\\boxed{5}\\boxed{",
            "\\boxed{\\text{", "\\fbox{", "\\boxed {", "\\boxed{5\\}", "\\boxed{\\{5}", "\\boxed{5\\\\}",
            "\\boxed{{5}", "\\boxed{5}}", "}}}\\boxed{5}", "\\boxed{5} \\boxed{", "\\(\\boxed{5}", "\\[\\boxed{5"]


def _numbers() -> list[str]:
    out = []
    for digits in (1, 50, 999, 1000, 1001, 100_000):
        out += ["\\boxed{" + "9" * digits + "}", "\\boxed{-" + "1" * digits + "}", "\\boxed{0." + "3" * digits + "}",
                "\\boxed{1" + "0" * digits + "}"]
    out += ["\\boxed{" + h + "}" for h in HANGING]
    out += ["\\boxed{10^{10^{10}}}", "\\boxed{2^{2^{2^{2^{2}}}}}", "\\boxed{10^{-1000000}}", "\\boxed{1e999999}",
            "\\boxed{\\infty}", "\\boxed{-\\infty}", "\\boxed{\\text{NaN}}", "\\boxed{0/0}", "\\boxed{1/0}",
            "\\boxed{\\frac{1}{0}}", "\\boxed{\\sqrt{-1}}", "\\boxed{i}", "\\boxed{\\pi^{\\pi^{\\pi}}}"]
    return out


def _big_strings(rng: random.Random) -> list[str]:
    printable = "".join(chr(c) for c in range(32, 127))
    junk = "".join(rng.choice(printable) for _ in range(4096)) * (MB // 4096)
    return ["a" * MB, " " * MB, "\n" * MB, "{" * MB, "}" * MB, "\\" * MB, "$" * MB, "\\boxed{" * (MB // 7),
            junk, junk + "\\boxed{5}", "\\boxed{5}" + junk, "\\boxed{" + "x" * MB + "}", "\\boxed{5}" + "}" * MB,
            "{" * MB + "\\boxed{5}", "\\boxed{\x00}" * (MB // 10), "\x00" * MB]


def _characters() -> list[str]:
    controls = [chr(c) for c in range(32)] + ["\x7f", "\x85", "\u2028", "\u2029", "\ufeff", "\ufffe", "\U0010ffff"]
    out = ["\\boxed{5" + c + "}" for c in controls] + [c * 1000 + "\\boxed{5}" for c in controls]
    surrogates = ["\ud800", "\udfff", "\udc80", "\ud83d"]
    out += ["\\boxed{" + s + "}" for s in surrogates] + ["\\boxed{5" + s + "}" for s in surrogates]
    out += [s * 1000 + "\\boxed{5}" for s in surrogates] + ["\\boxed{5}" + s for s in surrogates]
    bidi = ["\u202e", "\u202d", "\u2066", "\u2067", "\u2068", "\u2069", "\u200f", "\u200e", "\u061c"]
    out += ["\\boxed{" + b + "5}" for b in bidi] + ["\\boxed{5" + b + "}" for b in bidi] + [b + "\\boxed{5}" for b in bidi]
    digits = ["５", "٥", "۵", "५", "৫", "๕", "⑤", "⁵", "₅", "𝟓", "Ⅴ", "五", "伍", "𝟱", "꘥", "５０"]
    out += ["\\boxed{" + d + "}" for d in digits] + ["\\boxed{-" + d + "}" for d in digits]
    out += ["\\bоxed{5}", "\\boxеd{5}", "\\ｂｏｘｅｄ{5}", "＼boxed{5}", "\\boxed｛5｝", "\\boxed{5}\u0301"]
    return out


NON_STRINGS = [None, 5, 5.0, float("nan"), float("inf"), -float("inf"), True, [], ["\\boxed{5}"], ("\\boxed{5}",),
               {"text": "\\boxed{5}"}, b"\\boxed{5}", bytearray(b"5"), object(), 10**5000, Fraction(1, 2), 1j,
               math.pi, -0.0]
GOLDS = ["5", "7", "1", "\\frac{1}{2}", "\\boxed{5}", "#### 5", "$5$", "\\boxed{5", "9" * 999, "9" * 1001, "",
         " ", None, float("nan"), float("inf"), 5, 5.0, 10**5000, -3, [5], {"a": 5}, b"5", object(), True,
         "\\boxed{" * 20_000, "x" * MB, "\\boxed{5}" + "\x00" * MB, "\ud800", "５", "#### " + "9" * 5000,
         "$$", "\\boxed{}", "{" * 1000, Fraction(3, 4), 1 + 2j]


def hostile_corpus() -> tuple[list, list]:
    """Deterministic (responses, golds): every generated response (alone, then inside a text) with a gold drawn
    in turn, then every gold with a plain response, then every non-string response."""
    rng = random.Random(0)
    base = _repeated() + _nested() + _unclosed() + _numbers() + _big_strings(rng) + _characters()
    # the same inside a reasoning-like text, where the box is not the whole response
    responses = base + [f"Step 1: compute.\n{r}\nTherefore" for r in base if len(r) < 200_000]
    golds = [GOLDS[k % len(GOLDS)] for k in range(len(responses))]
    responses += ["\\boxed{5}"] * len(GOLDS) + NON_STRINGS + ["\\boxed{" + h + "}" for h in HANGING]
    golds += GOLDS + ["5"] * (len(NON_STRINGS) + len(HANGING))
    return responses, golds


def test_corpus_covers_the_issue():
    responses, golds = hostile_corpus()
    assert len(responses) == len(golds) >= 1000
    assert sum(isinstance(r, str) and len(r) >= MB for r in responses) >= 10
    assert sum(not isinstance(r, str) for r in responses) == len(NON_STRINGS)


def test_hostile_corpus_batch_is_bounded_and_in_order():
    responses, golds = hostile_corpus()
    timeout_s = 3.0
    t0 = time.perf_counter()
    out = verify_many(responses, golds, num_workers=2, timeout_s=timeout_s)
    elapsed = time.perf_counter() - t0
    assert len(out) == len(responses)
    for i, (j, resp, gold) in enumerate(zip(out, responses, golds)):
        assert isinstance(j, Judgement), i
        assert j.reason in REASONS, (i, j)
        assert j.correct == (j.reason == "ok"), (i, j)
        assert j.pred is None or (isinstance(j.pred, str) and len(j.pred) <= MAX_ANSWER_CHARS), i
        if j.pred is not None:
            j.pred.encode("utf-8")  # storable: no lone surrogate survives
        # in order: each verdict is the one for its own input
        expected = precheck(resp, gold)
        if isinstance(expected, Judgement):
            assert j == expected, (i, j, expected)
        else:
            assert j.pred == expected[0], i
    reasons = {j.reason for j in out}
    assert {"ok", "wrong", "no_answer", "empty_response", "no_gold", "bad_gold", "too_long", "timeout"} <= reasons
    assert [j.reason for j in out[-len(HANGING):]] == ["timeout"] * len(HANGING)
    n_timeouts = sum(j.reason == "timeout" for j in out)
    assert n_timeouts <= 10  # towers of powers and factorials only
    # Bound: each timeout holds a worker for timeout_s (+ a restart); everything else is cheap. Generous for
    # a loaded machine; the quadratic extraction alone took minutes on this corpus.
    assert elapsed < n_timeouts * (timeout_s + 1) + 40


@pytest.mark.parametrize(
    "response",
    [
        "\\boxed{" * 20_000,  # 140 KB of unclosed boxes: > 60 s per call before extraction was linear
        "\\boxed{" * (MB // 7),
        "{" * MB,
        "\\boxed{5}" + "\\\\" * (MB // 2),
        "\\boxed{1}" * (MB // 9),
    ],
    ids=["unclosed-box-x20k", "unclosed-box-1MB", "open-brace-1MB", "backslashes-1MB", "boxes-1MB"],
)
def test_worst_inputs_return_within_timeout(response):
    timeout_s = 2.0
    judge("\\boxed{1/2}", "0.5", timeout_s=timeout_s)  # workers up: the bound is for a running judge
    for fn in (lambda: judge(response, "5", timeout_s=timeout_s),
               lambda: compute_score("math", response, "5", timeout_s=timeout_s),
               lambda: verify_many([response], ["5"], num_workers=1, timeout_s=timeout_s)):
        t0 = time.perf_counter()
        fn()
        assert time.perf_counter() - t0 < timeout_s + 1


def test_semantics_survive_hostile_surroundings():
    junk = "}{\\$" * (MB // 4)
    assert judge(junk + " the answer is \\boxed{5}", "5").reason == "ok"
    assert judge("\\boxed{5}" + "x" * MB, "5").reason == "no_answer"  # before the examined window
    assert judge("\\boxed{5}" + "x" * (rewards.MAX_RESPONSE_CHARS - 20), "5").reason == "ok"
    assert judge("\\boxed{1}" * 20_000, "1").reason == "ok"  # identical parts count once
    assert judge("\\boxed{5\ud800}", "5").pred == "5\ufffd"
