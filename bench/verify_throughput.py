"""Throughput of answer verification (dft_verl.rewards) on Ray: answers/s per core, parallel efficiency.

Responses are real worked solutions, four per question like the pipeline's n=4 samples: the reference
solution (correct), the same with the final answer re-rendered (equivalent: 72 -> 72.0, \\frac -> \\dfrac),
the same with a wrong final answer, and either a truncated solution without a box or a second wrong answer.
Questions: MATH-500 (LaTeX answers: fractions, intervals, radicals, tuples, text) and GSM8K test (integers),
read from ``--data-root`` (/work/shared/data layout). Shards of ``--shard-size`` answers run as Ray tasks
(num_cpus=1, each judging in one worker process with a per-answer timeout) with 1, then 2 in flight.

    rate_w      = answers / wall seconds with w tasks in flight (after every worker is warm)
    per core    = rate_1 (one task = one busy core: the judge process; the task itself waits on a pipe),
                  and answers / CPU-seconds of the tasks' process trees (insensitive to other load)
    efficiency  = rate_2 / (2 * rate_1)
    where time goes: CPU-seconds of the caller's checks (``precheck``: extraction, gold normalisation,
                  integer fast path) and of math-verify alone (``match_unbounded`` in this process, parse
                  cache cleared every 32 pairs as in a worker); the rest of a task's CPU-seconds is the
                  worker round trip (pickling, pipes) and Ray

    python bench/verify_throughput.py [--data-root ../shared/data] [--questions 750] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from dft_verl.pipeline.prepare import gsm8k_solution_to_boxed
from dft_verl import rewards
from dft_verl.rewards import last_boxed, verify_many


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _replace_last_box(text: str, new: str) -> str:
    i = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    old = last_boxed(text[i:])
    j = text.index(old, i)
    return text[:j] + new + text[j + len(old):]


def _equivalent(ans: str) -> str:
    if re.fullmatch(r"-?\d+", ans):
        return ans + ".0"
    if "\\frac" in ans:
        return ans.replace("\\frac", "\\dfrac")
    return " " + ans + " "


def _wrong(ans: str, k: int) -> str:
    if re.fullmatch(r"-?\d+", ans):
        return str(int(ans) + k)
    return f"{ans}+{k}"


def build_cases(data_root: Path, n_questions: int) -> tuple[list[str], list[str]]:
    """4 responses per question (see module docstring); returns (responses, golds)."""
    math500 = _read_jsonl(data_root / "eval/math500/test.jsonl")
    gsm8k = _read_jsonl(data_root / "train/gsm8k/test.jsonl")
    questions = []
    for r in math500:
        if last_boxed(r["solution"]):
            questions.append((r["solution"], r["answer"]))
    for r in gsm8k:
        questions.append((gsm8k_solution_to_boxed(r["answer"]), r["answer"]))
    # interleave the two sources so a prefix has both kinds
    half = len(questions) - len(gsm8k)
    mixed = [q for pair in zip(questions[:half], questions[half:]) for q in pair]
    mixed = (mixed + questions[2 * half:])[:n_questions]
    responses, golds = [], []
    for q, (solution, gold) in enumerate(mixed):
        ans = last_boxed(solution)
        fourth = solution[: int(len(solution) * 0.6)] if q % 2 == 0 else _replace_last_box(solution, _wrong(ans, 2))
        for resp in (solution, _replace_last_box(solution, _equivalent(ans)), _replace_last_box(solution, _wrong(ans, 1)),
                     fourth):
            responses.append(resp)
            golds.append(gold)
    return responses, golds


def _process_tree_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process and its live children (judge workers)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def judge_timed(responses, golds, timeout_s):
    """One Ray task: verify_many in one worker process; returns (judgements, CPU seconds it cost)."""
    before = _process_tree_cpu_s()
    judged = verify_many(responses, golds, num_workers=1, timeout_s=timeout_s)
    return judged, _process_tree_cpu_s() - before


def time_split(responses, golds, chunk: int = 32) -> tuple[float, float, int]:
    """CPU-seconds of the caller's checks and of math-verify alone for all answers; pairs sent to workers."""
    t0 = time.process_time()
    pairs = [c for c in (rewards.precheck(r, g) for r, g in zip(responses, golds)) if isinstance(c, tuple)]
    t1 = time.process_time()
    for s in range(0, len(pairs), chunk):
        rewards._PARSED.clear()
        for pred, gold in pairs[s:s + chunk]:
            rewards.match_unbounded(pred, gold)
    return t1 - t0, time.process_time() - t1, len(pairs)


def run_ray(responses, golds, in_flight: int, shard_size: int, timeout_s: float) -> tuple[float, float, list]:
    """Judge all answers with ``in_flight`` concurrent Ray tasks; returns (wall s, CPU s, judgements)."""
    import ray

    task = ray.remote(num_cpus=1)(judge_timed)
    shards = [(responses[s:s + shard_size], golds[s:s + shard_size]) for s in range(0, len(responses), shard_size)]
    # warm every worker that will run (Ray worker process, forkserver, judge process, math-verify caches)
    ray.get([task.remote(responses[:8], golds[:8], timeout_s) for _ in range(in_flight)])
    t0 = time.perf_counter()
    out: list = [None] * len(shards)
    cpu = 0.0
    pending: dict = {}
    nxt = 0
    while nxt < len(shards) or pending:
        while nxt < len(shards) and len(pending) < in_flight:
            r, g = shards[nxt]
            pending[task.remote(r, g, timeout_s)] = nxt
            nxt += 1
        done, _ = ray.wait(list(pending), num_returns=1)
        judged, cpu_s = ray.get(done[0])
        out[pending.pop(done[0])] = judged
        cpu += cpu_s
    return time.perf_counter() - t0, cpu, [j for shard in out for j in shard]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_root = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    p.add_argument("--data-root", type=Path, default=default_root)
    p.add_argument("--questions", type=int, default=750, help="questions (x4 responses)")
    p.add_argument("--shard-size", type=int, default=250)
    p.add_argument("--timeout-s", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=2, help="timed passes per setting; the best is reported")
    args = p.parse_args(argv)
    if not (args.data_root / "eval/math500/test.jsonl").exists():
        sys.exit(f"{args.data_root}: no eval/math500/test.jsonl; pass --data-root (the shared data folder)")
    responses, golds = build_cases(args.data_root, args.questions)
    if len(responses) < 2000:
        sys.exit(f"only {len(responses)} responses; need >= 2000 (raise --questions)")

    import ray

    load_before = os.getloadavg()[0]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rates, cpu_rates, verdicts = {}, {}, None
        for w in (1, 2):
            best, best_cpu = None, None
            for _ in range(args.repeats):
                secs, cpu_s, judged = run_ray(responses, golds, w, args.shard_size, args.timeout_s)
                best = secs if best is None else min(best, secs)
                best_cpu = cpu_s if best_cpu is None else min(best_cpu, cpu_s)
                reasons = [j.reason for j in judged]
                if verdicts is None:
                    verdicts = reasons
                elif reasons != verdicts:
                    sys.exit("verdicts differ between runs: verification is not deterministic")
            rates[w], cpu_rates[w] = len(responses) / best, len(responses) / best_cpu
            if w == 1:
                best_cpu_1 = best_cpu
            print(f"{w} Ray worker(s): {len(responses)} answers in {best:.2f} s wall, {best_cpu:.2f} CPU-s "
                  f"-> {rates[w]:.0f} answers/s, {cpu_rates[w]:.0f} answers per CPU-second")
    finally:
        ray.shutdown()
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    time_split(responses, golds)  # warm-up pass: the parser's prediction caches, as in a long-lived worker
    check_s, mv_s, n_pairs = time_split(responses, golds)
    counts = {r: verdicts.count(r) for r in sorted(set(verdicts))}
    efficiency = rates[2] / (2 * rates[1])
    print(f"responses: {len(responses)} ({len(responses) // 4} questions x 4), sent to math-verify workers: "
          f"{n_pairs}, verdicts: {counts}")
    print(f"where time goes (CPU-s for all {len(responses)}): caller checks {check_s:.2f}, math-verify alone "
          f"{mv_s:.2f}, round trip + Ray {max(best_cpu_1 - check_s - mv_s, 0.0):.2f} (of {best_cpu_1:.2f} with 1 worker)")
    print(f"answers/s per core (1 worker, wall): {rates[1]:.0f}   per CPU-second: {cpu_rates[1]:.0f}   "
          f"(target >= 1000)")
    print(f"parallel efficiency (2 workers, wall): {efficiency:.2f}   (target >= 0.8)")
    print(f"cpus visible: {os.cpu_count()}, load average before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f}"
          " (other processes on the machine lower the wall-clock figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
