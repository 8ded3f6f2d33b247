"""dft_verl.rewards: boxed extraction, gold handling, a table of (non-)equivalent answers, time bounds."""

import concurrent.futures
import time
from fractions import Fraction

import pytest

from dft_verl import rewards
from dft_verl.prompts import INSTRUCTION, build_prompt, question_from_prompt
from dft_verl.rewards import (Judgement, compute_score, final_answer, judge, last_boxed, match_unbounded,
                              normalize_gold, precheck, verify_many)


def test_prompt_is_question_newline_instruction():
    msgs = build_prompt("  What is 2+3?  ")
    assert msgs == [{"role": "user", "content": "What is 2+3?\n" + INSTRUCTION}]
    assert INSTRUCTION == "Please reason step by step, and put your final answer within \\boxed{}."
    assert question_from_prompt(msgs) == "What is 2+3?"
    with pytest.raises(ValueError):
        build_prompt("   ")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{72}.", "72"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{a}{\\sqrt{b}}}", "\\frac{a}{\\sqrt{b}}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not close the group
        ("$\\boxed 5$", "5"),
        ("\\fbox{7}", "7"),
        ("answer \\boxed{3}. Put it within \\boxed{}.", "3"),  # echoed empty box skipped
        ("\\boxed{3} and a truncated \\boxed{12", "3"),  # unclosed box skipped
        ("no box here, 42", None),
        ("\\boxed{ }", None),
        ("", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{72}.", "72"),
        ("\\boxed{1}, \\boxed{2}", "1,2"),  # parts of one answer, read as a set by math-verify
        ("\\boxed{1} and \\boxed{2} and \\boxed{3}", "1,2,3"),
        ("$x = \\boxed{3}$ and $y = \\boxed{4}$", "3,4"),
        ("\\boxed{1} then \\boxed{2}", "1,2"),  # math-verify's rule: fewer than 10 characters apart
        ("\\boxed{1} no no no no no \\boxed{2}", "2"),  # 10+ characters and no separator: the last box
        ("I first got \\boxed{3}, but rechecking the whole computation from the start, and carefully, gives "
         "\\boxed{5}", "5"),  # a separator but 70+ characters apart
        ("so \\boxed{5}.\n\n**Final Answer**\n\\boxed{5}", "5"),  # identical parts count once
        ("\\boxed{\\boxed{1}}, \\boxed{2}", "1,2"),
        ("\\boxed{3} and a truncated \\boxed{12", "3"),
        ("answer \\boxed{3}. Put it within \\boxed{}.", "3"),
        ("no box", None),
        (None, None),
    ],
)
def test_final_answer(text, expected):
    assert final_answer(text) == expected


@pytest.mark.parametrize(
    "gold, expected",
    [
        ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
        ("#### 1,234,567", "1234567"),
        ("The area is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("$3\\sqrt{2}$", "3\\sqrt{2}"),
        (" (-\\infty, 3] ", "(-\\infty, 3]"),
        (12, "12"),
        (12.0, "12"),
        (0.25, "0.25"),
        (None, None),
        ("", None),
        (float("nan"), None),
        ("\\(\\boxed{1}\\) and \\(\\boxed{-2}\\).", "1,-2"),  # a gold written as several boxes: all of them
        ("so $\\boxed{28", "28"),  # a gold whose box never closes: the rest of the text
        pytest.param(10**5000, None, id="int-of-5001-digits"),  # beyond Python's int -> str limit
        (Fraction(1, 2), "0.5"),
        ([5], None),
    ],
)
def test_normalize_gold(gold, expected):
    assert normalize_gold(gold) == expected


# (boxed prediction, gold, equivalent?) — worked out by hand.
EQUIVALENCE_TABLE = [
    ("\\frac{1}{2}", "0.5", True),
    ("0.5", "\\frac{1}{2}", True),
    ("\\dfrac{3}{4}", "0.75", True),
    ("\\frac12", "1/2", True),
    ("1/3", "\\frac{1}{3}", True),
    ("\\frac{1}{3}", "0.3", False),
    ("1,000", "1000", True),
    ("72", "Janet earns 9*2 = $18 a day... #### 72", True),
    ("73", "#### 72", False),
    ("-3", "3", False),
    ("10", "1", False),
    ("2\\sqrt{3}", "\\sqrt{12}", True),
    ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", True),
    ("(-\\infty, 3]", "(-\\infty,3]", True),
    ("(-\\infty, 3)", "(-\\infty,3]", False),
    ("[2, 5)", "[2,5)", True),
    ("\\{3, 5\\}", "3,5", True),
    ("5, 3", "3, 5", True),
    ("x = 5", "5", True),
    ("5\\text{ cm}", "5", True),
    ("\\$18", "18", True),
    ("\\pi", "\\pi", True),
    ("π", "\\pi", True),
    ("\\text{(B)}", "B", True),
    ("C", "B", False),
    ("x^2+2x+1", "(x+1)^2", True),
    ("x^2+1", "(x+1)^2", False),
    ("3.14", "\\pi", False),
]


# Answer classes the judge once failed where math-verify succeeds: (response, gold, pred, correct?).
ANSWER_CLASS_TABLE = [
    # several boxes that are parts of one answer are judged together
    ("$\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}$", "(2, 2), (6, 2)", "(2, 2),(6, 2)", True),
    ("\\boxed{1},\\boxed{2},\\boxed{3}", "\\{1,2,3\\}", "1,2,3", True),
    ("\\boxed{1} or \\boxed{2}", "2", "1,2", False),  # hedging between two answers is not the answer
    # a gold written as several boxes
    ("$\\boxed{-2,1}$", "\\(\\boxed{1}\\) and \\(\\boxed{-2}\\).", "-2,1", True),
    # percent answers
    ("\\boxed{28\\%}", "28", "28\\%", True),
    ("\\boxed{28\\%}", "28 \\%", "28\\%", True),
    ("\\boxed{28}", "$28\\%$", "28", True),
    ("\\boxed{28 \\text{ percent}}", "28", "28 \\text{ percent}", True),
    ("\\boxed{27\\%}", "28", "27\\%", False),
    # a gold whose box never closes
    ("\\boxed{28}", "so the answer is $\\boxed{28", "28", True),
    # \mathrm{e} is Euler's number
    ("\\boxed{\\mathrm{e}}", "e", "\\mathrm{e}", True),
    ("\\boxed{2\\mathrm{e}}", "2e", "2\\mathrm{e}", True),
    ("\\boxed{\\mathrm{e}^{2}}", "e^2", "\\mathrm{e}^{2}", True),
    ("\\boxed{1 - \\frac{1}{\\mathrm{e}}}", "1-e^{-1}", "1 - \\frac{1}{\\mathrm{e}}", True),
    ("\\boxed{2\\mathrm{e}}", "2", "2\\mathrm{e}", False),
]


@pytest.mark.parametrize("response, gold, pred, correct", ANSWER_CLASS_TABLE)
def test_answer_classes(response, gold, pred, correct):
    assert judge(response, gold) == Judgement(correct, pred, "ok" if correct else "wrong")


@pytest.mark.parametrize("pred, gold", [("72", "72"), ("072", "72"), ("-0", "0"), ("-3", "3"), ("10", "1"),
                                        ("1" + "0" * 999, "1" + "0" * 999), ("1" + "0" * 999, "1" + "0" * 998)])
def test_integer_fast_path_is_math_verify(pred, gold):
    """Two plain integers are compared in the caller; math-verify (run here, unbounded) gives the same verdict."""
    fast = precheck(f"\\boxed{{{pred}}}", gold)
    assert isinstance(fast, Judgement)
    assert (fast.correct, fast.reason) == match_unbounded(pred, gold)


@pytest.mark.parametrize("pred, gold, equivalent", EQUIVALENCE_TABLE)
def test_judge_equivalence_table(pred, gold, equivalent):
    response = f"Let me work it out.\nThus the answer is $\\boxed{{{pred}}}$."
    j = judge(response, gold)
    assert j == Judgement(equivalent, pred, "ok" if equivalent else "wrong")
    assert compute_score("math", response, gold, extra_info={"index": 0}) == (1.0 if equivalent else 0.0)


def test_verify_many_matches_table_in_order():
    responses = [f"\\boxed{{{p}}}" for p, _, _ in EQUIVALENCE_TABLE]
    golds = [g for _, g, _ in EQUIVALENCE_TABLE]
    out = verify_many(responses, golds, num_workers=2, chunk_size=5)
    assert [j.correct for j in out] == [e for _, _, e in EQUIVALENCE_TABLE]
    assert [j.pred for j in out] == [p for p, _, _ in EQUIVALENCE_TABLE]


@pytest.mark.parametrize(
    "response, gold, reason",
    [
        ("I think it is 5", "5", "no_answer"),
        ("", "5", "empty_response"),
        ("   \n", "5", "empty_response"),
        (None, "5", "empty_response"),
        ("\\boxed{5}", None, "no_gold"),
        ("\\boxed{5}", "", "no_gold"),
        ("\\boxed{" + "\\frac{1}{2}+" * 1000 + "1}", "5", "too_long"),
        ("\\boxed{5}", "x" * (rewards.MAX_ANSWER_CHARS + 1), "bad_gold"),
        ("答案是 \\boxed{五} 😀", "5", "wrong"),
        ("\\boxed{\\frac{}{}}", "5", "wrong"),
        ("\\boxed{" + "{" * 11 + "1" + "}" * 11 + "}", "1", "too_long"),  # deeper than MAX_ANSWER_DEPTH
        ("\\boxed{5}", "(" * 11 + "5" + ")" * 11, "bad_gold"),
        pytest.param("\\boxed{5}", 10**5000, "no_gold", id="int-gold-of-5001-digits"),
        (["\\boxed{5}"], "5", "empty_response"),
    ],
)
def test_malformed_inputs_give_a_reason_not_a_crash(response, gold, reason):
    j = judge(response, gold)
    assert not j.correct
    assert j.reason == reason


def test_compute_score_from_threads():
    """verl calls compute_score from executor threads; math-verify's signal timeouts would fail there."""
    cases = [("\\boxed{\\frac{1}{2}}", "0.5", 1.0), ("\\boxed{3}", "#### 3", 1.0), ("\\boxed{4}", "3", 0.0)] * 4
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        scores = list(ex.map(lambda c: compute_score("gsm8k", c[0], c[1]), cases))
    assert scores == [c[2] for c in cases]


def test_hung_answer_times_out_and_the_rest_complete():
    """An answer math-verify cannot finish (sympy evaluating a power tower, > 60 s unbounded) is killed after
    timeout_s and recorded as "timeout"; its neighbours in the same chunk are still judged."""
    responses = ["\\boxed{1}", "\\boxed{9^{9^{9^{9}}}}", "\\boxed{2}", "\\boxed{3}"]
    golds = ["1", "1", "2", "4"]
    t0 = time.perf_counter()
    out = verify_many(responses, golds, num_workers=1, timeout_s=1.0)
    elapsed = time.perf_counter() - t0
    assert [j.reason for j in out] == ["ok", "timeout", "ok", "wrong"]
    assert out[1].pred == "9^{9^{9^{9}}}"
    assert elapsed < 20
    # the shared pool used by judge()/compute_score() is bounded the same way and recovers afterwards
    assert judge("\\boxed{9^{9^{9^{9}}}}", "1", timeout_s=1.0).reason == "timeout"
    assert judge("\\boxed{7}", "7", timeout_s=1.0).reason == "ok"


@pytest.mark.parametrize("path", ["pkg://dft_verl.rewards", rewards.__file__])
def test_loads_as_verl_custom_reward_function(path):
    """verl loads the function by pkg:// name or from the file under a generated module name; both must be
    able to start judge workers and score from a reward-loop thread."""
    from verl.utils.import_utils import load_extern_object

    fn = load_extern_object(module_path=path, object_name="compute_score")
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        scores = list(ex.map(lambda r: fn(data_source="math", solution_str=r, ground_truth="\\frac{1}{2}",
                                          extra_info={}), ["\\boxed{0.5}", "\\boxed{2}"]))
    assert scores == [1.0, 0.0]
