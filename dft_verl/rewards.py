"""The one place answers are judged: the final boxed answer of a response vs the gold answer, by math-verify.

Used by the offline pipeline's verify stage, evaluation, the demo and the PPO/GRPO baselines (as verl's
custom reward function), so every row of a comparison is scored by the same rule:

    correct(response, gold) = math_verify.verify(read(normalize_gold(gold)), read(final_answer(response)))

``final_answer``: the last complete, non-empty ``\\boxed{}`` (or ``\\fbox{}``) of the response; boxes just
before it that are parts of the same answer (``\\boxed{1}, \\boxed{2}``, ``\\boxed{x=1} and \\boxed{y=2}``) are
joined to it with "," and judged as one set or tuple, by math-verify's own rule (``_join_parts``), except that a
sentence end or a final-answer cue ("The final answer is", "**Final Answer**") between two boxes separates them;
otherwise the paper's convention holds, the answer is what the response boxes last. A gold solution with boxes
gives its answer by the same rule (a last box that never closes gives the rest of the text).

``read(a)``: math-verify's LaTeX parse of ``\\boxed{a'}``, where ``a'`` is ``a`` normalised by
``math_verify_input`` (percent dropped, ``\\mathrm{e}`` is ``e``, scientific notation ``3.83e35`` is
``3.83\\times10^{35}``, ``-1./3`` is ``-1/3``, trailing punctuation and redundant outer braces dropped). Only the
LaTeX reading counts: math-verify's fallback to the first plain number it finds in a string it cannot read
(``\\hbar \\omega(v+1 / 2)-...`` read as 2) is never used. An answer with no LaTeX reading is compared as a
normalised string (``normalized_string``); a gold with none is judged that way (reason "string_gold" when the
answer differs), so it is never reduced to a stray number. ``python -m dft_verl.benchmarks audit`` lists such golds.
Two plain integers are compared exactly in the caller (what math-verify does with them, minus the round trip).

Numeric tolerance: math-verify's ``verify`` with its defaults compares a decimal number with another number after
rounding both to 6 decimal places (``0.3333333`` equals ``1/3``, ``0.333`` does not), and any other numbers,
scientific notation included (``3.83\\times10^{35}``), exactly to about 15 significant digits, so
``3.8\\times10^{35}`` differs from ``3.83\\times10^{35}`` and the plain decimal
``383000000000000000000000000000000000`` equals it. Both fail on scientific golds: the 6 decimal places are
absolute, so against a gold below 10^-3 (Minerva's ``1.24e-8``, ``2.88e-19``) every small number agrees, and the
exact comparison of a binary float, ``8.7\\times10^{8}`` against ``870000000``, fails. So when the gold is one real
number of magnitude below 10^-3 or at least 10^6, both sides are first divided by the gold's power of ten
(``_at_gold_scale``): the 6 decimal places then apply to its leading digit, 7 significant digits
(``1.24\\times10^{-8}`` equals ``0.0000000124`` and ``1.2400001\\times10^{-8}``, not ``1.24\\times10^{-10}`` or
``1.3\\times10^{-8}``; ``8.7\\times10^{8}`` equals ``870000000``). Two plain integers stay exact (above).

Untrusted input, bounded time. Model output may be anything: megabytes of junk, repetition, unclosed groups,
control characters, lone surrogates, or not a string at all. Every step in the calling process is linear in
the input length and examines at most the last ``MAX_RESPONSE_CHARS`` characters of a response or gold (a
box opening before them is not seen); answers longer than ``MAX_ANSWER_CHARS`` never reach math-verify. No
input raises. math-verify's own timeouts use ``signal.alarm``, which only works in the main thread; verl calls
reward functions from executor threads, where those timeouts fail (verl issue #5635: every answer silently
scored 0). Here math-verify always runs with its timeouts disabled, inside a worker process that the caller
kills when one answer takes longer than ``timeout_s`` seconds; that answer is recorded with reason "timeout"
and the worker is replaced. A gold is read once per worker (kept across calls, so once per benchmark, not once
per sample), under its own limit ``GOLD_TIMEOUT_S``: reading it includes math-verify's slowest gold-side step,
solving a gold equation for its free symbols (``solve(gold, gold.free_symbols)``, 10-20 s for Minerva's
``m l \\ddot{\\theta}(t)-m g \\sin \\theta(t)=f(t) \\cos \\theta(t)``), whose result the worker keeps, so a wrong
answer against that gold costs only its own comparison (a gold whose solving runs past the limit is read again
without it). So once the workers are up, ``judge`` and ``compute_score`` return within ``timeout_s`` + 1 s (plus
``GOLD_TIMEOUT_S`` the first time a worker sees a gold) whatever the input, and in ``verify_many`` no answer
holds its worker longer than that (identical pairs in one batch are judged once).

Reasons (``Judgement.reason``):
    ok              pred equals gold
    wrong           pred parsed and differs from gold
    string_gold     gold has no math value (compared as a normalised string) and pred differs from it
    no_answer       response has no complete, non-empty \\boxed{...}
    empty_response  response is empty, whitespace or not a string
    no_gold         gold answer missing or empty
    bad_gold        gold is longer than MAX_ANSWER_CHARS or nested deeper than MAX_ANSWER_DEPTH
    too_long        final answer longer than MAX_ANSWER_CHARS characters or nested deeper than MAX_ANSWER_DEPTH
                    groups (pred is stored truncated to MAX_ANSWER_CHARS, as in every verdict)
    parse_error     math-verify raised on this pair
    timeout         judging took longer than timeout_s, or reading the gold took longer than
                    GOLD_TIMEOUT_S; the worker process was killed
    worker_error    the worker process died on this pair (crash), it was replaced
"""

# No `from __future__ import annotations`: verl may exec this file outside sys.modules, where dataclass
# cannot resolve string annotations.
import atexit
import importlib
import logging
import math
import multiprocessing as mp
import numbers
import os
import queue
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass

DEFAULT_TIMEOUT_S = 10.0
MAX_ANSWER_CHARS = 1000
# math-verify's LaTeX parser is exponential in nesting: 14 nested braces take seconds, 30 never finish. The
# answers of the eval and train sets nest at most 5 deep; an answer nested deeper than this is not judged.
MAX_ANSWER_DEPTH = 10
WORKER_START_TIMEOUT_S = 120.0
# Reading a gold (once per worker): parsing it and, for an equation, solving it (see read_gold).
GOLD_TIMEOUT_S = 60.0

REASONS = (
    "ok",
    "wrong",
    "string_gold",
    "no_answer",
    "empty_response",
    "no_gold",
    "bad_gold",
    "too_long",
    "parse_error",
    "timeout",
    "worker_error",
)


@dataclass(frozen=True)
class Judgement:
    """Verdict on one response: ``correct`` iff reason == "ok"; ``pred`` is its final answer (``final_answer``,
    at most MAX_ANSWER_CHARS characters, lone surrogates replaced by U+FFFD) or None."""

    correct: bool
    pred: str | None
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------------
# Extraction (pure string work in the caller, no math-verify): one pass, linear in the examined length
# --------------------------------------------------------------------------------------------------------

# Only the last MAX_RESPONSE_CHARS characters of a response (or of a gold solution) are examined: a box that
# opens before that window is not seen. 200,000 characters is ~50k tokens, longer than any generation the
# recipes produce; a window this size is scanned in ~50 ms even when it is nothing but braces.
MAX_RESPONSE_CHARS = 200_000

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b( *)")
# Brace structure: "\{", "\}" are literal braces and "\\" is one escaped backslash (so "\\{" opens a group),
# unless the "\\" is followed by a box command: models write "\\boxed{...}" and it is still a box.
_GROUP_TOKEN_RE = re.compile(r"\\\\(?!(?:boxed|fbox)\b)|\\[{}]|[{}]")
_BARE_TOKEN_RE = re.compile(r"[^\s$]+")
_NON_SPACE_RE = re.compile(r"\S")
# math-verify's own rule for boxes that are parts of one answer (latex2sympy2_extended.extract_boxed_content)
_PART_SEPARATOR_RE = re.compile(r"\b(?:and|or)\b|,|;")
# What separates two boxes into two answers even when math-verify's rule would join them: the end of a sentence
# (". " before a capital or a markdown mark, or a blank line) or a final-answer cue. Measured on real responses:
# "\boxed{17} by adding 9, so ... The final answer is \boxed{26}." is a step and then the answer.
_ANSWER_BREAK_RE = re.compile(r"[.!?]\s+[A-Z*#]|\n\s*\n|final\s+answer|answer\s+is|answer\s*:", re.IGNORECASE)
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_INTEGER_RE = re.compile(r"-?[0-9]+")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_NESTING_TOKEN_RE = re.compile(r"\\[{}]|[{(\[]|[})\]]")


def _nesting_depth(s: str) -> int:
    """Deepest nesting of groups ``{ ( [`` (escaped braces count) in ``s``; one linear scan."""
    depth = deepest = 0
    for t in _NESTING_TOKEN_RE.finditer(s):
        if t.group()[-1] in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif depth:
            depth -= 1
    return deepest


@dataclass(frozen=True)
class _Box:
    start: int  # index of the backslash of \boxed / \fbox
    content_start: int
    content_end: int  # exclusive; the closing brace (if any) is at content_end
    braced: bool


def _scan_boxes(text: str) -> tuple[list["_Box"], "_Box | None"]:
    """Every complete box of ``text`` in order of its command, and the last box command if it never closes.

    One pass: box commands are found by one regex scan, their braces matched by one scan of the brace
    tokens with a stack, so the cost is linear in ``len(text)`` whatever the nesting or repetition.
    ``\\boxed{...}`` with nested braces, or ``\\boxed 5`` (one token up to whitespace or ``$``).
    """
    commands = list(_BOX_RE.finditer(text))
    if not commands:
        return [], None
    n = len(text)
    found: list[_Box | None] = [None] * len(commands)
    brace_of: dict[int, int] = {}  # position of a box's opening brace -> index of its command
    for k, m in enumerate(commands):
        p = m.end()
        if p < n and text[p] == "{":
            brace_of[p] = k
        elif m.group(1):
            t = _BARE_TOKEN_RE.match(text, p)
            if t:
                found[k] = _Box(m.start(), p, t.end(), False)
    if brace_of:
        stack: list[int] = []
        # Starting at the first command is safe: no brace token can straddle a backslash that begins "\boxed".
        for t in _GROUP_TOKEN_RE.finditer(text, commands[0].start()):
            i = t.start()
            c = text[i]
            if c == "{":
                stack.append(i)
            elif c == "}" and stack:
                o = stack.pop()
                k = brace_of.get(o)
                if k is not None:
                    found[k] = _Box(commands[k].start(), o + 1, i, True)
    last = commands[-1]
    unclosed = None
    if found[-1] is None and last.end() < n and text[last.end()] == "{":
        unclosed = _Box(last.start(), last.end() + 1, n, True)
    return [b for b in found if b is not None], unclosed


def _non_empty(text: str, box: "_Box") -> bool:
    return _NON_SPACE_RE.search(text, box.content_start, box.content_end) is not None


def _content(text: str, box: "_Box") -> str:
    return text[box.content_start : box.content_end].strip()


def _window(text: str) -> str:
    return text[-MAX_RESPONSE_CHARS:] if len(text) > MAX_RESPONSE_CHARS else text


def last_boxed(text: str) -> str | None:
    """The last complete, non-empty ``\\boxed{...}`` (or ``\\fbox{...}``) content in ``text``, stripped.

    Nested braces are matched; an empty box (e.g. an echoed instruction "within \\boxed{}") or an unclosed
    one is skipped in favour of the previous box. None when there is no such box. "Last" is by position of
    the box command, so of nested boxes the inner one is last. Only the last ``MAX_RESPONSE_CHARS``
    characters are examined; the cost is linear in their number.
    """
    if not isinstance(text, str):
        return None
    text = _window(text)
    boxes, _ = _scan_boxes(text)
    for box in reversed(boxes):
        if _non_empty(text, box):
            return _content(text, box)
    return None


def _join_parts(text: str, boxes: list["_Box"], last: int) -> str:
    """The final answer ending with box ``last``: it and the boxes just before it that are parts of the same
    answer, joined by "," (math-verify reads the join as a set or tuple).

    A box is a part of the answer that continues with the next box when it closes before that box starts and
    the text between them is shorter than 10 characters, or shorter than 70 characters, contains "and", "or",
    "," or ";" and the two contents differ: math-verify's own rule. Ours differs in one point: text between
    them that ends a sentence or holds a final-answer cue (``_ANSWER_BREAK_RE``) separates the boxes, so a box
    after "The final answer is" stands alone. Consecutive identical parts count once.
    """
    parts = [_content(text, boxes[last])]
    nxt = boxes[last]
    for box in reversed(boxes[:last]):
        end = box.content_end + 1 if box.braced else box.content_end
        if end > nxt.start or not _non_empty(text, box) or nxt.start - end >= 70:
            break
        content = _content(text, box)
        between = text[end : nxt.start]
        if not (len(between) < 10 or (content != parts[-1] and _PART_SEPARATOR_RE.search(between))):
            break
        if _ANSWER_BREAK_RE.search(between):
            break
        if content != parts[-1]:
            parts.append(content)
        nxt = box
    return ",".join(reversed(parts))


def final_answer(text: str) -> str | None:
    """The answer a response gives: its last complete, non-empty box, together with the boxes just before it
    when they are parts of one answer (``\\boxed{1}, \\boxed{2}`` -> ``1,2``; see ``_join_parts``).

    Otherwise the paper's convention holds: the final answer is what the response boxes last. None when the
    response has no complete, non-empty box. Linear in the examined length (the last MAX_RESPONSE_CHARS).
    """
    if not isinstance(text, str):
        return None
    text = _window(text)
    return _answer_from_boxes(text, _scan_boxes(text)[0])


def _answer_from_boxes(text: str, boxes: list["_Box"]) -> str | None:
    for k in range(len(boxes) - 1, -1, -1):
        if _non_empty(text, boxes[k]):
            return _join_parts(text, boxes, k)
    return None


def _strip_math_delimiters(s: str) -> str:
    s = s.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            return s[len(left) : len(s) - len(right)].strip()
    return s


def normalize_gold(ground_truth) -> str | None:
    """Gold answer as a bare LaTeX expression, or None when missing.

    Accepts: a plain answer ("72", "\\frac{1}{2}"), a GSM8K solution ending in "#### 72" (the text after the
    last "####", thousands separators removed), a solution containing \\boxed{} (its final answer by the
    response rule, ``final_answer``; a last box that never closes gives the rest of the text), an answer in
    $...$, or a number (AMC answers are stored as numbers; integers of more than 4,300 digits give None).
    """
    if ground_truth is None or isinstance(ground_truth, bool):
        return None
    if isinstance(ground_truth, numbers.Integral):
        ground_truth = int(ground_truth)
    elif isinstance(ground_truth, numbers.Real):
        ground_truth = float(ground_truth)
        if not math.isfinite(ground_truth):
            return None
        if ground_truth.is_integer():
            ground_truth = int(ground_truth)
    if isinstance(ground_truth, (int, float)):
        try:
            ground_truth = str(ground_truth)
        except ValueError:  # beyond Python's int -> str digit limit: no answer is that long
            return None
    if not isinstance(ground_truth, str):
        return None
    s = ground_truth.strip()
    if "####" in s:
        s = _THOUSANDS_RE.sub("", s.rsplit("####", 1)[1]).strip()
    elif _BOX_RE.search(s):
        s = _window(s)
        boxes, unclosed = _scan_boxes(s)
        s = s[unclosed.content_start :] if unclosed is not None else (_answer_from_boxes(s, boxes) or s)
    s = _strip_math_delimiters(s)
    return s or None


def extract_gsm8k_answer(solution: str) -> str:
    """GSM8K gold from its solution text: the number after the last "####", thousands separators removed."""
    if "####" not in solution:
        raise ValueError(f"GSM8K solution has no '####' answer line: {solution[-200:]!r}")
    return _THOUSANDS_RE.sub("", solution.rsplit("####", 1)[1]).strip()


def _storable(s: str | None) -> str | None:
    """``s`` with lone surrogates replaced by U+FFFD, so a verdict can be written as UTF-8 (parquet, json)."""
    if s is None or s.isascii():
        return s
    return _SURROGATE_RE.sub("\ufffd", s)


def precheck(response, ground_truth) -> Judgement | tuple[str, str]:
    """Cheap checks done in the caller: a final Judgement, or the (pred, gold) pair math-verify must judge.

    Linear in the length of the inputs (each is examined once, at most its last MAX_RESPONSE_CHARS), never
    raises on any response or gold, whatever its type or content.
    """
    gold = normalize_gold(ground_truth)
    if gold is None or len(gold) > MAX_ANSWER_CHARS or _nesting_depth(gold) > MAX_ANSWER_DEPTH:
        reason = "no_gold" if gold is None else "bad_gold"
        pred = _storable(final_answer(response))
        return Judgement(False, pred if pred is None else pred[:MAX_ANSWER_CHARS], reason)
    if not isinstance(response, str) or _NON_SPACE_RE.search(response) is None:
        return Judgement(False, None, "empty_response")
    pred = final_answer(response)
    if pred is None:
        return Judgement(False, None, "no_answer")
    pred = _storable(pred)
    if len(pred) > MAX_ANSWER_CHARS or _nesting_depth(pred) > MAX_ANSWER_DEPTH:
        return Judgement(False, pred[:MAX_ANSWER_CHARS], "too_long")
    if _INTEGER_RE.fullmatch(pred) and _INTEGER_RE.fullmatch(gold):
        # Both plain integers: math-verify parses each to a sympy Integer and compares them exactly, which is
        # int equality (tests/test_rewards.py checks this against math-verify). Most GSM8K-style answers end
        # here, without a round trip to a worker.
        return Judgement(int(pred) == int(gold), pred, "ok" if int(pred) == int(gold) else "wrong")
    return pred, gold


# --------------------------------------------------------------------------------------------------------
# math-verify (unbounded; only ever called inside a worker process)
# --------------------------------------------------------------------------------------------------------

# How an answer becomes a math-verify input, the same for pred and gold: ``\\boxed{answer}``, after rewrites of
# what math-verify misreads inside a box, each seen in a benchmark gold or a model answer:
#   a percent sign or word is dropped (``28\\%`` is judged as 28, as math-verify reads ``$28\\%$``; inside a box
#   it fails to parse at all);
#   ``\\mathrm{e}`` is Euler's ``e`` (inside a box math-verify reads it as a plain symbol: ``2\\mathrm{e}`` parses
#   as 2, ``\\mathrm{e}^{2}`` differs from ``e^{2}``);
#   scientific notation ``3.83e35`` is ``3.83\\times10^{35}`` (math-verify reads ``3.83 e 35`` with Euler's e;
#   58 of Minerva's 272 golds are written so). A number written so is always read so: ``2e-1`` is 0.2;
#   a number with a bare trailing point, ``-1./3``, loses the point;
#   unescaped ``$`` inside, trailing ``.``, ``,`` or ``;`` and braces around the whole answer are dropped
#   (``(-\\infty, 0) \\cup\\{1\\}.``, ``{(2,12) \\cup (12,102)}``: neither parses otherwise).
_PERCENT_RE = re.compile(r"\\?%|(?:\\text\{\s*)?\b(?:percentage|percent|pct)\b(?:\s*\})?")
_ROMAN_E_RE = re.compile(r"\\(?:mathrm|rm|text|operatorname)\s*\{\s*e\s*\}")
_SCIENTIFIC_RE = re.compile(r"(?<![\w.\\])(\d+(?:\.\d*)?|\.\d+)[eE]\+?(-?\d+)(?![\w.])")
_BARE_POINT_RE = re.compile(r"(?<=\d)\.(?![\d.])")
_INNER_DOLLAR_RE = re.compile(r"(?<!\\)\$")
_TRAILING_PUNCT_RE = re.compile(r"(?:(?<!\\)[.,;]|\s)+$")
# A normalised string, for answers with no LaTeX reading: spacing, \left/\right and \dfrac/\tfrac do not count.
_STRING_NOISE_RE = re.compile(r"\\left\b|\\right\b|\\[,;:! ]|\\q?quad\b|\s+")
_FRAC_VARIANT_RE = re.compile(r"\\[dt]frac\b")


def _scientific(m: re.Match) -> str:
    mantissa = m.group(1).rstrip(".") or "0"
    return f"{mantissa}\\times10^{{{m.group(2)}}}"


def _without_outer_braces(s: str) -> str:
    """``s`` without braces that enclose all of it (``{{x}}`` -> ``x``); escaped braces ``\\{ \\}`` are kept."""
    while len(s) >= 2 and s[0] == "{" and s[-1] == "}":
        depth, closed = 0, None
        for t in _GROUP_TOKEN_RE.finditer(s):
            c = t.group()
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    closed = t.end()
                    break
        if closed != len(s):  # the first brace closes before the end ("{a}+{b}") or never
            return s
        s = s[1:-1].strip()
    return s


def normalize_answer(answer: str) -> str:
    """An extracted answer (pred or gold) after the rewrites above; linear in its length."""
    s = _ROMAN_E_RE.sub("e", _PERCENT_RE.sub("", answer))
    s = _SCIENTIFIC_RE.sub(_scientific, s)
    s = _BARE_POINT_RE.sub("", _INNER_DOLLAR_RE.sub(" ", s))
    return _without_outer_braces(_TRAILING_PUNCT_RE.sub("", s).strip())


def math_verify_input(answer: str) -> str:
    """The string math-verify parses for an extracted answer: ``\\boxed{normalize_answer(answer)}``."""
    return "\\boxed{" + normalize_answer(answer) + "}"


def normalized_string(answer: str) -> str:
    """How an answer with no LaTeX reading is compared: ``normalize_answer`` without spacing commands,
    whitespace and ``\\left``/``\\right``, ``\\dfrac``/``\\tfrac`` as ``\\frac``."""
    return _FRAC_VARIANT_RE.sub(r"\\frac", _STRING_NOISE_RE.sub("", normalize_answer(answer)))


_LATEX_ONLY = None


def read_answer(answer: str) -> list:
    """math-verify's LaTeX reading of an answer (``parse(math_verify_input(answer))`` with LaTeX extraction
    only): its sympy values, [] when it has none. Unbounded: call it only from a process someone may kill.

    math-verify's expression extraction is left out on purpose: when LaTeX parsing fails it returns the first
    plain number in the string, so ``\\hbar \\omega(v+1 / 2)-\\frac{E_{0}^{2} e^{2}}{2 m \\omega^{2}}`` reads as 2.
    """
    global _LATEX_ONLY
    from math_verify import LatexExtractionConfig, parse

    if _LATEX_ONLY is None:
        _LATEX_ONLY = [LatexExtractionConfig()]
    return [v for v in parse(math_verify_input(answer), _LATEX_ONLY, parsing_timeout=None) if not isinstance(v, str)]


# Parsed answers of the request being judged, by answer: within one request (a chunk of verify_many, where a
# question's samples sit together) every response boxing the same string is parsed once. sympy objects are
# immutable, so sharing them is safe. Cleared per request and when full, so memory stays bounded and a benchmark
# that repeats its inputs does not time a cache.
_PARSED: dict = {}
_PARSED_MAX = 4096
# Golds, kept across requests for the worker's life (a benchmark's golds are few and each is judged k times).
_GOLDS: dict = {}
_GOLDS_MAX = 4096
# sympy.solve results, by (expression, symbols), for the same life: see ``read_gold``.
_SOLVED: dict = {}
_SOLVED_MAX = 4096


def _parse_cached(answer: str) -> list:
    hit = _PARSED.get(answer)
    if hit is None:
        hit = read_answer(answer)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[answer] = hit
    return hit


def _solve_kept(f, *symbols, **flags):
    """``sympy.solve`` with its results kept: math-verify solves the gold of an equation comparison anew for
    every answer (``solve(gold, gold.free_symbols)``), 10-20 s for a long physics equation. Installed in the
    judge workers as ``math_verify.grader.solve``; the result is the same, only computed once."""
    from sympy import solve

    try:
        key = (f, tuple(frozenset(a) if isinstance(a, (set, frozenset)) else a for a in symbols),
               tuple(sorted(flags.items())))
        hit = _SOLVED.get(key)
    except TypeError:  # unhashable arguments: nothing to keep
        return solve(f, *symbols, **flags)
    if hit is None:
        hit = solve(f, *symbols, **flags)
        if len(_SOLVED) >= _SOLVED_MAX:
            _SOLVED.clear()
        _SOLVED[key] = hit
    return list(hit) if isinstance(hit, list) else hit


def read_gold(gold: str, probe: bool = True) -> list:
    """A gold's sympy values (``read_answer``), read once per worker life. With ``probe``, a gold holding an
    equation is also compared once with a probe equation, ``probe = 0``: that is math-verify's path for a wrong
    equation answer, and it solves the gold, which ``_solve_kept`` then keeps (in the workers), so no answer pays
    for it again."""
    hit = _GOLDS.get(gold)
    if hit is None:
        try:
            hit = read_answer(gold)
            if probe and any(_has_relation(v) for v in hit):
                import sympy
                from math_verify import verify

                verify(hit, [sympy.Eq(sympy.Symbol("probe"), 0)], timeout_seconds=None)
        except Exception:  # noqa: BLE001 - a gold math-verify cannot read is compared as a string
            hit = hit if isinstance(hit, list) else []
        if len(_GOLDS) >= _GOLDS_MAX:
            _GOLDS.clear()
        _GOLDS[gold] = hit
    return hit


def _has_relation(value) -> bool:
    from sympy.core.relational import Relational

    return isinstance(value, Relational) or any(isinstance(a, Relational) for a in getattr(value, "args", ()))


def _at_gold_scale(gold_values: list, pred_values: list) -> tuple[list, list]:
    """Both sides divided by ``10**floor(log10|gold|)`` when the gold is one real number of magnitude below 10^-3
    or at least 10^6 (pred values that are not numbers are left alone); otherwise unchanged. See "Numeric
    tolerance" above."""
    import sympy

    if len(gold_values) != 1:
        return gold_values, pred_values
    g = gold_values[0]
    if not (isinstance(g, sympy.Expr) and g.is_number and g.is_real and g != 0):
        return gold_values, pred_values
    try:
        magnitude = abs(float(g))
    except (OverflowError, TypeError, ValueError):
        return gold_values, pred_values
    if 1e-3 <= magnitude < 1e6 or not math.isfinite(magnitude):
        return gold_values, pred_values
    scale = sympy.Integer(10) ** math.floor(math.log10(magnitude))
    return [g / scale], [p / scale if isinstance(p, sympy.Expr) and p.is_number else p for p in pred_values]


def match_unbounded(pred: str, gold: str) -> tuple[bool, str]:
    """Equivalence of two bare answers, timeouts disabled. Returns (correct, reason).

    Equal normalised strings are equal; otherwise a gold with no LaTeX reading gives "string_gold", a pred with
    none "wrong", and two readings are compared by ``math_verify.verify``. Runs in the calling thread with no
    time bound: call it only from a process that someone may kill.
    """
    from math_verify import verify

    try:
        gold_values = read_gold(gold)
        if normalized_string(pred) == normalized_string(gold):
            return True, "ok"
        if not gold_values:
            return False, "string_gold"
        pred_values = _parse_cached(pred)
        ok = bool(pred_values) and verify(*_at_gold_scale(gold_values, pred_values), timeout_seconds=None)
    except Exception:  # noqa: BLE001 - any sympy/latex2sympy failure is this pair's verdict, not a crash
        return False, "parse_error"
    return (True, "ok") if ok else (False, "wrong")


_WARMUP_PAIRS = (("1/2", "0.5"), ("(-\\infty, 3]", "(-\\infty,3]"), ("x^2+1", "1+x^2"), ("\\sqrt{2}", "\\sqrt{2}"),
                 ("\\{1, 2\\}", "1,2"), ("\\text{B}", "B"))


def _worker_main(conn) -> None:
    """Worker loop: receive a list of (pred, gold), send one (correct, reason) per pair, in order."""
    # The parent bounds time per answer, so math-verify's "timeout disabled" warning is noise here.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    # Warm up before reporting ready: the first parse of each kind builds grammars and sympy caches
    # (0.1-0.2 s each), which must not count against the first real answer's time limit.
    for pred, gold in _WARMUP_PAIRS:
        match_unbounded(pred, gold)
    # Gold equations are solved once per worker (read_gold); the seam is the module's own name for sympy.solve.
    import math_verify.grader

    math_verify.grader.solve = _solve_kept
    conn.send("ready")
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        _PARSED.clear()
        for pred, gold, probe in batch:
            if gold not in _GOLDS:  # the parent gives reading a gold its own limit, GOLD_TIMEOUT_S
                conn.send(_READING_GOLD)
                read_gold(gold, probe)
                conn.send(_GOLD_READ)
            conn.send(match_unbounded(pred, gold))


# Worker -> parent markers around the reading of a new gold; golds whose reading ran out of time, with the
# number of times (parent side).
_READING_GOLD = "reading_gold"
_GOLD_READ = "gold_read"
_SLOW_GOLDS: dict = {}


def _mp_context():
    """forkserver (workers fork from a clean server with math-verify preloaded: restarts after a timeout are
    cheap and never inherit the caller's threads); spawn where forkserver is unavailable."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["dft_verl.rewards", "math_verify"])
        return ctx
    return mp.get_context("spawn")


class _MatchWorker:
    """One worker process and its pipe. ``run`` judges pairs with a per-pair time limit."""

    def __init__(self, ctx):
        self._ctx = ctx
        self.proc = None
        self.conn = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        # The target is pickled by module name. verl may load this file under a generated name
        # (reward.custom_reward_function.path=<file>), which a child cannot import: use the package copy.
        target = importlib.import_module("dft_verl.rewards")._worker_main
        proc = self._ctx.Process(target=target, args=(child,), daemon=True, name="dft-verl-judge")
        proc.start()
        child.close()
        if not parent.poll(WORKER_START_TIMEOUT_S):
            proc.kill()
            proc.join()
            raise RuntimeError(f"judge worker did not start within {WORKER_START_TIMEOUT_S} s")
        ready = parent.recv()
        if ready != "ready":
            raise RuntimeError(f"judge worker sent {ready!r} instead of 'ready'")
        self.proc, self.conn = proc, parent

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.conn.close()
        self.proc, self.conn = None, None

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(timeout=5)
            self.kill()

    def _receive(self, timeout_s: float) -> tuple[tuple[bool, str] | None, str | None, bool]:
        """The worker's verdict on its current pair: (verdict, None, _) or (None, failure, reading_gold)."""
        wait, reading = timeout_s, False
        try:
            while self.conn.poll(wait):
                msg = self.conn.recv()
                if msg == _READING_GOLD:
                    wait, reading = GOLD_TIMEOUT_S, True
                elif msg == _GOLD_READ:
                    wait, reading = timeout_s, False
                else:
                    return msg, None, False
            return None, "timeout", reading
        except (EOFError, OSError):
            return None, "worker_error", reading

    def run(self, pairs: Sequence[tuple[str, str]], timeout_s: float) -> list[tuple[bool, str]]:
        """Judge ``pairs`` in order. A pair exceeding ``timeout_s`` seconds, or whose gold takes longer than
        GOLD_TIMEOUT_S to read, kills the worker ("timeout"); a worker dying on a pair gives "worker_error";
        either way the rest go to a fresh worker. A gold that took too long to read is read again without the
        probe that solves it (its equation answers may then run into ``timeout_s`` one by one); one that takes
        too long even so is not read again: its pairs are "timeout" at once."""
        results: list[tuple[bool, str] | None] = [None] * len(pairs)
        pending = list(range(len(pairs)))
        send_failed = False
        while pending:
            for i in pending:
                if _SLOW_GOLDS.get(pairs[i][1], 0) >= 2:
                    results[i] = (False, "timeout")
            pending = [i for i in pending if results[i] is None]
            if not pending:
                break
            if self.proc is None or not self.proc.is_alive():
                self.kill()
                self._start()
            try:
                self.conn.send([(*pairs[i], pairs[i][1] not in _SLOW_GOLDS) for i in pending])
            except OSError:  # the worker died between the liveness check and the send
                self.kill()
                if send_failed:  # twice in a row on a fresh worker: blame the first pair, go on without it
                    results[pending[0]] = (False, "worker_error")
                    pending = pending[1:]
                send_failed = not send_failed
                continue
            send_failed = False
            for k, i in enumerate(pending):
                verdict, failure, reading_gold = self._receive(timeout_s)
                if failure is None:
                    results[i] = verdict
                    continue
                if reading_gold and failure == "timeout":
                    _SLOW_GOLDS[pairs[i][1]] = _SLOW_GOLDS.get(pairs[i][1], 0) + 1
                results[i] = (False, failure)
                self.kill()
                pending = pending[k + 1 :]
                break
            else:
                pending = []
        return results  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------


class _SharedPool:
    """Process-wide pool of judge workers: thread-safe, started lazily, rebuilt after fork, grown on demand.

    Workers outlive a call, so math-verify's parse caches and the warm-up are paid once per process.
    """

    def __init__(self, size: int):
        self.pid = os.getpid()
        self.ctx = _mp_context()
        self.idle: queue.Queue[_MatchWorker] = queue.Queue()
        self.size = 0
        self.ensure(size)

    def ensure(self, size: int) -> None:
        while self.size < size:
            self.idle.put(_MatchWorker(self.ctx))
            self.size += 1

    def run(self, pairs, timeout_s):
        worker = self.idle.get()
        try:
            return worker.run(pairs, timeout_s)
        finally:
            self.idle.put(worker)

    def close(self):
        while True:
            try:
                self.idle.get_nowait().close()
            except queue.Empty:
                return


_POOL: _SharedPool | None = None
_POOL_LOCK = threading.Lock()


def _shared_pool(min_size: int = 1) -> _SharedPool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            size = int(os.environ.get("DFT_VERL_REWARD_WORKERS", "1"))
            if size < 1:
                raise ValueError(f"DFT_VERL_REWARD_WORKERS must be >= 1, got {size}")
            _POOL = _SharedPool(size)
        _POOL.ensure(min_size)
        return _POOL


@atexit.register
def _close_shared_pool() -> None:
    if _POOL is not None and _POOL.pid == os.getpid():
        _POOL.close()


def judge(response: str, ground_truth, timeout_s: float = DEFAULT_TIMEOUT_S) -> Judgement:
    """Judge one response against its gold answer (see module docstring for the rule and the reasons).

    Thread-safe. math-verify runs in a persistent worker process (a pool of ``DFT_VERL_REWARD_WORKERS``,
    default 1, per calling process) that is killed and replaced if this answer takes longer than
    ``timeout_s`` seconds.
    """
    checked = precheck(response, ground_truth)
    if isinstance(checked, Judgement):
        return checked
    pred, gold = checked
    (correct, reason), = _shared_pool().run([(pred, gold)], timeout_s)
    return Judgement(bool(correct), pred, reason)


def compute_score(data_source, solution_str, ground_truth, extra_info=None, timeout_s: float = DEFAULT_TIMEOUT_S,
                  **kwargs) -> float:
    """verl custom reward function: 1.0 if ``judge(solution_str, ground_truth)`` is correct else 0.0.

    Use with ``reward.custom_reward_function.path=pkg://dft_verl.rewards`` (a file path works too)
    ``reward.custom_reward_function.name=compute_score``; ``+reward.custom_reward_function.reward_kwargs.timeout_s``
    sets the per-answer limit. ``data_source`` and ``extra_info`` are accepted
    for the verl signature; every math source is judged by the same rule.
    """
    return 1.0 if judge(solution_str, ground_truth, timeout_s=timeout_s).correct else 0.0


def verify_many(
    responses: Sequence[str],
    ground_truths: Sequence,
    num_workers: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    chunk_size: int = 32,
    progress: bool = False,
    desc: str = "verify",
) -> list[Judgement]:
    """Judge ``responses[i]`` against ``ground_truths[i]`` for all i, in ``num_workers`` worker processes.

    Each answer gets at most ``timeout_s`` seconds; a slower one is recorded as "timeout" and its worker is
    killed and restarted, so the call always returns ``len(responses)`` judgements in input order.
    ``num_workers`` defaults to the number of CPUs this process may use; the worker processes are kept
    for later calls in this process (see ``DFT_VERL_REWARD_WORKERS`` for judge()).
    """
    if len(responses) != len(ground_truths):
        raise ValueError(f"{len(responses)} responses but {len(ground_truths)} ground truths")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    out: list[Judgement | None] = [None] * len(responses)
    # Identical (pred, gold) pairs are judged once: a collapsing policy repeats itself, and a repeated answer
    # that hangs math-verify must cost one timeout, not one per copy.
    pair_index: dict[tuple[str, str], int] = {}
    todo: list[tuple[str, str]] = []
    owners: list[list[int]] = []
    for i, (resp, gt) in enumerate(zip(responses, ground_truths)):
        checked = precheck(resp, gt)
        if isinstance(checked, Judgement):
            out[i] = checked
            continue
        k = pair_index.setdefault(checked, len(todo))
        if k == len(todo):
            todo.append(checked)
            owners.append([])
        owners[k].append(i)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(responses), desc=desc, unit="ans")
        bar.update(len(responses) - sum(len(o) for o in owners))

    if todo:
        if num_workers is None:
            num_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        num_workers = max(1, min(int(num_workers), math.ceil(len(todo) / chunk_size)))
        chunks: queue.Queue = queue.Queue()
        for s in range(0, len(todo), chunk_size):
            chunks.put(range(s, min(s + chunk_size, len(todo))))
        errors: list[BaseException] = []
        lock = threading.Lock()
        pool = _shared_pool(num_workers)

        def drive() -> None:
            worker = pool.idle.get()
            try:
                while not errors:
                    try:
                        chunk = chunks.get_nowait()
                    except queue.Empty:
                        return
                    results = worker.run([todo[k] for k in chunk], timeout_s)
                    done = 0
                    for k, (correct, reason) in zip(chunk, results):
                        for i in owners[k]:
                            out[i] = Judgement(bool(correct), todo[k][0], reason)
                        done += len(owners[k])
                    if bar is not None:
                        with lock:
                            bar.update(done)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread below
                errors.append(e)
            finally:
                pool.idle.put(worker)

        threads = [threading.Thread(target=drive, daemon=True) for _ in range(num_workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
    if bar is not None:
        bar.close()
    return out  # type: ignore[return-value]
