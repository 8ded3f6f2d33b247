"""Average@k evaluation on the paper's five math benchmarks.

    python -m dft_verl.eval --model PATH --out runs/dft_sft/eval [--data-dir ../shared/data/eval]
        [--benchmarks math500,aime24] [--k 16] [--temperature 1.0] [--max-new-tokens 4096]
        [--backend vllm|hf|verl] [--limit N] [--seed 0] [--max-model-len N] [--prompt-template paper|qwen-boxed]
        [--dtype float32|bfloat16|auto]

Each question is shown through the model's own chat template as the messages of the named prompt template
(`dft_verl.prompts`): paper (default) = one user turn, the question followed by the boxed-answer instruction;
qwen-boxed = the same user turn after the system turn "You are a helpful assistant.", the Qwen2.5-Math evaluation
toolkit's prompt, which the paper's evaluation used. k responses are sampled per question
(`dft_verl.generation.generate`) and judged by `dft_verl.rewards.verify_many`, the project's one answer checker.

Metric, for a benchmark of n questions with c_i correct responses out of k for question i:
    p_i = c_i / k                      per-question accuracy
    Average@k = 100 * mean_i p_i       percent
    95% CI = Average@k +- 1.96 * 100 * s / sqrt(n), s = sample std (ddof=1) of the p_i,
a normal interval across questions (it carries both the question sampling and the k-sample noise), clipped to
[0, 100]; null when n < 2. The "average" over benchmarks is their unweighted mean (the paper's Avg. column);
its CI uses the standard error sqrt(sum_b se_b^2) / B, treating benchmarks as independent.

Outputs under --out (all written atomically):
    samples/<bench>.parquet   one row per (question, sample): index, sample_idx, data_source, prompt, response,
                              ground_truth, correct, pred, reason (the verified-parquet schema)
    samples/<bench>.json      the settings, backend, batch size and summary of that benchmark (written with the
                              parquet; questions_kept = how many questions came from an earlier run)
    results.json              written once every requested benchmark is done: {"model", "k", "temperature",
                              "max_new_tokens", "prompt_template", "dtype", "judge", "benchmarks": {name:
                              {"n_questions", "k", "avg_at_k", "ci95", "per_question_acc"}}, "average",
                              "average_ci95", "missing_benchmarks", ...}; judge = "dft_verl.rewards (math-verify
                              <version>)"; dtype = the model's dtype as sampled (hf default float32; vllm and verl
                              default "auto", vLLM's choice from the checkpoint)
A rerun skips benchmarks already done with the same settings (the prompt template and dtype included; files
written before they were recorded count as paper and the backend's default dtype) and refuses an --out holding
other settings. A rerun on more questions (a larger
--limit, a held-out file grown at its end) keeps the saved samples and samples only the new questions, with the
seeds a run over all of them gives them: the samples equal a fresh run's (hf: same --batch-size, whole batches
saved; otherwise every question is sampled again). Saved samples of other questions are refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from dft_verl.benchmarks import BENCHMARKS, HF_SOURCES, HFSource, Question, check_names, load_benchmark
from dft_verl.atomic import atomic_write
from dft_verl.prompts import DEFAULT_TEMPLATE, TEMPLATES, check_template
from dft_verl.stats import average_over_benchmarks, mean_ci95

logger = logging.getLogger("dft_verl.eval")

DEFAULT_K = 16
DEFAULT_TEMPERATURE = 1.0
DEFAULT_MAX_NEW_TOKENS = 4096
def summarize_samples(samples: pd.DataFrame, k: int, where: str = "samples") -> dict:
    """Benchmark summary from judged samples (columns index, sample_idx, correct): exactly k samples per question."""
    for col in ("index", "sample_idx", "correct"):
        if col not in samples.columns:
            raise ValueError(f"{where}: missing column '{col}' (has {list(samples.columns)})")
    if samples.empty:
        raise ValueError(f"{where}: no samples")
    per_question = []
    for index, group in samples.groupby("index", sort=True):
        got = sorted(int(s) for s in group["sample_idx"])
        if got != list(range(k)):
            raise ValueError(f"{where}: question index {index}: expected sample_idx 0..{k - 1}, got {got}")
        per_question.append(float(group["correct"].astype(bool).sum()) / k)
    avg, ci = mean_ci95(per_question)
    return {"n_questions": len(per_question), "k": k, "avg_at_k": avg, "ci95": ci, "per_question_acc": per_question}


# ---------------------------------------------------------------- atomic writes


def write_json(path: str | os.PathLike, obj) -> None:
    """JSON file written atomically (tmp file + os.replace)."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, allow_nan=False)
            f.write("\n")

    atomic_write(Path(path), write)


def write_parquet(path: str | os.PathLike, df: pd.DataFrame) -> None:
    """Parquet file written atomically (tmp file + os.replace)."""
    atomic_write(Path(path), lambda tmp: df.to_parquet(tmp, index=False))


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class EvalSettings:
    """Everything a benchmark's numbers depend on; a done benchmark is reused only when these match."""

    model: str
    k: int = DEFAULT_K
    temperature: float = DEFAULT_TEMPERATURE
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    seed: int = 0
    limit: int | None = None
    prompt_template: str = DEFAULT_TEMPLATE
    dtype: str | None = None  # the model's dtype; None: the backend's default (default_dtype), resolved by evaluate

    def __post_init__(self):
        check_template(self.prompt_template)
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


def _samples_paths(out: Path, bench: str) -> tuple[Path, Path]:
    return out / "samples" / f"{bench}.parquet", out / "samples" / f"{bench}.json"


def default_dtype(backend: str) -> str:
    """The dtype a backend samples in when none is given: hf float32; vllm and verl "auto" (vLLM decides from the
    checkpoint's dtype)."""
    return "float32" if backend == "hf" else "auto"


def _identity(settings: EvalSettings | dict, backend: str | None = None) -> dict:
    """What a saved benchmark's samples depend on, besides its questions: the settings without `limit` (the saved
    questions themselves say how many were asked). ``backend``: the saved benchmark's, whose default dtype applies
    to files written before the dtype was recorded."""
    recorded = dict(asdict(settings) if isinstance(settings, EvalSettings) else settings)
    recorded.setdefault("prompt_template", DEFAULT_TEMPLATE)  # written before templates had names
    if recorded.get("dtype") is None and backend is not None:
        recorded["dtype"] = default_dtype(backend)
    recorded.pop("limit", None)
    return recorded


def load_saved(out: str | os.PathLike, bench: str, settings: EvalSettings) -> tuple[pd.DataFrame, dict] | None:
    """(samples, meta) of a benchmark saved under `out` with these settings; None if there is none.

    Raises when `out` holds that benchmark under different settings (mixing them would corrupt the table)."""
    parquet, meta_path = _samples_paths(Path(out), bench)
    if not meta_path.is_file() or not parquet.is_file():
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    recorded = meta.get("settings")
    if not isinstance(recorded, dict) or _identity(recorded, meta.get("backend", "hf")) != _identity(settings):
        raise ValueError(
            f"{meta_path}: {bench} was evaluated with settings {recorded}, not {asdict(settings)}; "
            f"use another --out or delete {parquet} and {meta_path}"
        )
    return pd.read_parquet(parquet), meta


def load_done(out: str | os.PathLike, bench: str, settings: EvalSettings) -> dict | None:
    """Summary of a benchmark saved under `out` with these settings (whatever its questions); None if none."""
    saved = load_saved(out, bench, settings)
    if saved is None:
        return None
    return summarize_samples(saved[0], settings.k, where=str(_samples_paths(Path(out), bench)[0]))


def saved_prefix(samples: pd.DataFrame, questions: list[Question], settings: EvalSettings, where: str) -> int:
    """How many questions the saved samples answer: they must be the first of `questions`, in order (same index,
    prompt and gold answer). Raises when they are not, naming the first saved question that differs."""
    saved = samples[samples["sample_idx"] == 0].sort_values("index", kind="stable")
    if len(saved) > len(questions):
        raise ValueError(f"{where}: holds {len(saved)} questions, more than the {len(questions)} asked for; "
                         f"use another --out or delete it")
    for row, q in zip(saved.to_dict("records"), questions):
        index, prompt = int(row["index"]), [dict(m) for m in row["prompt"]]
        if (index, prompt, str(row["ground_truth"])) != (q.index, q.prompt(settings.prompt_template), q.gold):
            raise ValueError(f"{where}: question index {index} is not the benchmark's question "
                             f"{q.index} ({q.question[:60]!r}, answer {q.gold!r}); the saved samples answer other "
                             f"questions: use another --out or delete it")
    return len(saved)


def continues_exactly(meta: dict, backend: str, batch_size: int, n_samples: int) -> bool:
    """Whether sampling only the questions after `n_samples` saved samples gives what sampling all of them would:
    same backend, and for hf the same batch size with whole batches saved (`dft_verl.generation.generate`'s
    `start`). verl takes no seed, so any continuation is as good as a fresh run."""
    if meta.get("backend") != backend:
        return False
    if backend == "hf":
        return meta.get("batch_size") == batch_size and n_samples % batch_size == 0
    return True


def judge_name() -> str:
    """The answer checker, as recorded in results.json: dft_verl.rewards and the math-verify version under it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        mv = version("math-verify")
    except PackageNotFoundError:
        mv = "unknown"
    return f"dft_verl.rewards (math-verify {mv})"


def judge_samples(questions: list[Question], responses: list[list[str]], k: int, num_workers: int, timeout_s: float,
                  prompt_template: str = DEFAULT_TEMPLATE):
    """Verified-schema DataFrame of questions x k responses, judged by dft_verl.rewards.verify_many (the prompt
    column holds each question's messages under `prompt_template`)."""
    from dft_verl.rewards import verify_many

    if len(responses) != len(questions):
        raise ValueError(f"generate returned {len(responses)} response lists for {len(questions)} questions")
    rows = []
    for q, outs in zip(questions, responses):
        if len(outs) != k:
            raise ValueError(f"{q.benchmark} question {q.index}: expected {k} responses, got {len(outs)}")
        for j, text in enumerate(outs):
            rows.append({"index": q.index, "sample_idx": j, "data_source": q.benchmark,
                         "prompt": q.prompt(prompt_template),
                         "response": text, "ground_truth": q.gold})
    verdicts = verify_many([r["response"] for r in rows], [r["ground_truth"] for r in rows],
                           num_workers=num_workers, timeout_s=timeout_s, progress=True, desc="judge")
    if len(verdicts) != len(rows):
        raise ValueError(f"verify_many returned {len(verdicts)} verdicts for {len(rows)} responses")
    for row, v in zip(rows, verdicts):
        row.update(correct=bool(v.correct), pred=v.pred, reason=v.reason)
    return pd.DataFrame(rows)


def evaluate_benchmark(
    bench: str,
    questions: list[Question],
    settings: EvalSettings,
    out: str | os.PathLike,
    backend: str = "hf",
    batch_size: int = 8,
    num_workers: int = 1,
    timeout_s: float = 10.0,
    backend_kwargs: dict | None = None,
) -> dict:
    """Sample, judge, save samples/<bench>.parquet + .json; return the benchmark summary.

    Saved samples of the first of `questions` are kept: only the questions after them are sampled, with the seeds
    a run over all of them gives (`continues_exactly`; otherwise every question is sampled again).
    `backend_kwargs` go to `dft_verl.generation.generate` (e.g. max_model_len, tensor_parallel_size for vllm).
    """
    parquet, meta_path = _samples_paths(Path(out), bench)
    saved = load_saved(out, bench, settings)
    start, kept = 0, None
    if saved is not None:
        samples, meta = saved
        start = saved_prefix(samples, questions, settings, str(parquet))
        if start == len(questions):
            logger.info("%s: already done (%d questions), skipped", bench, start)
            return summarize_samples(samples, settings.k, where=str(parquet))
        if continues_exactly(meta, backend, batch_size, start * settings.k):
            kept = samples
            logger.info("%s: %d questions saved, sampling the %d after them", bench, start, len(questions) - start)
        else:
            logger.info("%s: %d questions saved by another backend or batching (%s, batch %s); sampling all %d "
                        "again", bench, start, meta.get("backend"), meta.get("batch_size"), len(questions))
            start = 0
    from dft_verl.generation import generate

    t0 = time.time()
    todo = questions[start:]
    logger.info("%s: sampling %d questions x %d (T=%s, max_new_tokens=%d, backend=%s, prompt %s)", bench,
                len(todo), settings.k, settings.temperature, settings.max_new_tokens, backend,
                settings.prompt_template)
    dtype = {} if backend == "verl" else {"dtype": settings.dtype}  # verl's replicas take vLLM's "auto"
    responses = generate(settings.model, [q.prompt(settings.prompt_template) for q in todo], n=settings.k,
                         temperature=settings.temperature, max_new_tokens=settings.max_new_tokens,
                         seed=settings.seed, backend=backend, batch_size=batch_size, start=start,
                         **dtype, **(backend_kwargs or {}))
    t1 = time.time()
    samples = judge_samples(todo, responses, settings.k, num_workers, timeout_s, settings.prompt_template)
    if kept is not None:
        samples = pd.concat([kept, samples], ignore_index=True)
    summary = summarize_samples(samples, settings.k, where=bench)
    write_parquet(parquet, samples)
    write_json(meta_path, {"benchmark": bench, "settings": asdict(settings), "backend": backend,
                           "batch_size": batch_size, "judge": judge_name(), "questions_kept": start,
                           "generate_s": round(t1 - t0, 2), "judge_s": round(time.time() - t1, 2),
                           "avg_at_k": summary["avg_at_k"], "ci95": summary["ci95"]})
    ci = summary["ci95"]
    logger.info("%s: Average@%d = %.2f%% %s over %d questions (sample %.0f s, judge %.0f s)", bench, settings.k,
                summary["avg_at_k"], f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "", summary["n_questions"],
                t1 - t0, time.time() - t1)
    return summary


def build_results(settings: EvalSettings, summaries: dict[str, dict]) -> dict:
    """The results.json object (schema in this module's docstring), benchmarks in canonical order."""
    ordered = {b: summaries[b] for b in BENCHMARKS if b in summaries}
    results = {"model": settings.model, "k": settings.k, "temperature": settings.temperature,
               "max_new_tokens": settings.max_new_tokens, "seed": settings.seed, "limit": settings.limit,
               "prompt_template": settings.prompt_template, "dtype": settings.dtype, "judge": judge_name(),
               "benchmarks": ordered,
               "average": None, "average_ci95": None,
               "missing_benchmarks": [b for b in BENCHMARKS if b not in ordered]}
    if ordered:
        avg, ci = average_over_benchmarks([s["per_question_acc"] for s in ordered.values()])
        results["average"], results["average_ci95"] = avg, ci
    return results


def evaluate(
    settings: EvalSettings,
    out: str | os.PathLike,
    benchmarks: Sequence[str] = BENCHMARKS,
    data_dir: str | os.PathLike | None = None,
    hf_sources: dict[str, HFSource] | None = None,
    backend: str = "hf",
    batch_size: int = 8,
    num_workers: int = 1,
    timeout_s: float = 10.0,
    backend_kwargs: dict | None = None,
) -> dict:
    """Evaluate `benchmarks` (each saved as it finishes), then write results.json; benchmarks done earlier under
    `out` with the same settings are kept in results.json. ``settings.dtype`` None: the backend's default
    (``default_dtype``)."""
    if settings.dtype is None:
        settings = replace(settings, dtype=default_dtype(backend))
    if backend == "verl" and settings.dtype != "auto":
        raise ValueError(f"dtype {settings.dtype!r}: the verl backend's replicas take vLLM's default (auto) only")
    out = Path(out)
    benchmarks = check_names(list(benchmarks))
    summaries = {}
    for bench in BENCHMARKS:  # earlier runs into the same folder (other --benchmarks) stay in results.json
        if bench not in benchmarks:
            done = load_done(out, bench, settings)
            if done is not None:
                summaries[bench] = done
    for i, bench in enumerate(benchmarks):
        logger.info("[%d/%d] %s", i + 1, len(benchmarks), bench)
        questions = load_benchmark(bench, data_dir=data_dir, hf_source=(hf_sources or {}).get(bench),
                                   limit=settings.limit)
        summaries[bench] = evaluate_benchmark(bench, questions, settings, out, backend=backend,
                                              batch_size=batch_size, num_workers=num_workers, timeout_s=timeout_s,
                                              backend_kwargs=backend_kwargs)
    results = build_results(settings, summaries)
    write_json(out / "results.json", results)  # written last: its presence means every requested benchmark is done
    return results


# ---------------------------------------------------------------- CLI


def _parse_hf_source(text: str) -> tuple[str, HFSource]:
    """'bench=path:config:split' (config may be empty) -> (bench, HFSource)."""
    try:
        bench, spec = text.split("=", 1)
        path, name, split = spec.split(":")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--hf-source {text!r}: expected BENCH=PATH:CONFIG:SPLIT, e.g. math500=HuggingFaceH4/MATH-500::test"
        ) from None
    check_names([bench])
    return bench, HFSource(path, name or None, split)


def _default_backend() -> str:
    try:
        import torch

        return "vllm" if torch.cuda.is_available() else "hf"
    except ImportError:
        return "hf"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dft_verl.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="HF model folder or hub id")
    p.add_argument("--out", required=True, help="output folder (results.json, samples/)")
    p.add_argument("--benchmarks", default=",".join(BENCHMARKS),
                   help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all)")
    p.add_argument("--data-dir", default=None,
                   help="local folder laid out <benchmark>/test.jsonl; without it the hub copies are used")
    p.add_argument("--hf-source", action="append", default=[], type=_parse_hf_source, metavar="BENCH=PATH:CONFIG:SPLIT",
                   help="override a hub id (defaults: " + ", ".join(
                       f"{b}={s.path}:{s.name or ''}:{s.split}" for b, s in HF_SOURCES.items()) + ")")
    p.add_argument("--k", type=int, default=DEFAULT_K, help="samples per question (Average@k)")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--backend", choices=["hf", "vllm", "verl"], default=None,
                   help="hf (transformers, CPU), vllm (offline LLM: GPU, or CPU with vLLM's CPU build from "
                        "`bash scripts/install.sh --vllm`), verl (Ray + vLLM replicas, multi-GPU); "
                        "default: vllm with CUDA, else hf")
    p.add_argument("--limit", type=int, default=None, help="first N questions per benchmark (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt-template", choices=list(TEMPLATES), default=DEFAULT_TEMPLATE,
                   help="dft_verl.prompts template: paper (one user turn: question + boxed instruction; the prompt "
                        "the rows train on by default) or qwen-boxed (the same after the system turn \"You are a "
                        "helpful assistant.\", the Qwen2.5-Math evaluation toolkit's prompt)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward for the hf backend")
    p.add_argument("--dtype", default=None,
                   help="model dtype, recorded in results.json (hf: float32 default; vllm: auto default; verl: auto)")
    p.add_argument("--processes", type=int, default=None,
                   help="hf: worker processes the batches are spread over (default 1; same samples for any value)")
    p.add_argument("--max-model-len", type=int, default=None, help="vllm: context length (prompt + response)")
    p.add_argument("--tensor-parallel-size", type=int, default=None, help="vllm/verl: GPUs per model replica")
    p.add_argument("--gpu-memory-utilization", type=float, default=None, help="vllm/verl: fraction of GPU memory")
    p.add_argument("--num-workers", type=int, default=4, help="judge processes")
    p.add_argument("--timeout-s", type=float, default=10.0, help="judge time limit per response")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = EvalSettings(model=args.model, k=args.k, temperature=args.temperature,
                            max_new_tokens=args.max_new_tokens, seed=args.seed, limit=args.limit,
                            prompt_template=args.prompt_template, dtype=args.dtype)
    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    backend = args.backend or _default_backend()
    allowed = {"hf": ("processes",), "vllm": ("max_model_len", "tensor_parallel_size", "gpu_memory_utilization"),
               "verl": ("tensor_parallel_size", "gpu_memory_utilization")}[backend]
    backend_kwargs = {}
    for name in ("processes", "max_model_len", "tensor_parallel_size", "gpu_memory_utilization"):
        value = getattr(args, name)
        if value is not None:
            if name not in allowed:
                raise SystemExit(f"--{name.replace('_', '-')} does not apply to --backend {backend}")
            backend_kwargs[name] = value
    results = evaluate(settings, args.out, benchmarks=benchmarks, data_dir=args.data_dir,
                       hf_sources=dict(args.hf_source), backend=backend, batch_size=args.batch_size,
                       num_workers=args.num_workers, timeout_s=args.timeout_s, backend_kwargs=backend_kwargs)
    from dft_verl import cost  # the row costs: the saved samples' generated tokens (only under the Table-3 runner)

    samples = [_samples_paths(Path(args.out), b)[0] for b in results["benchmarks"]]
    cost.record_generation("eval", settings.model, samples)
    for bench, s in results["benchmarks"].items():
        ci = s["ci95"]
        print(f"{bench:15s} Average@{s['k']} = {s['avg_at_k']:6.2f}%"
              + (f"  95% CI [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "") + f"  (n={s['n_questions']})")
    if results["average"] is not None:
        print(f"{'average':15s} {results['average']:6.2f}%  over {len(results['benchmarks'])} benchmark(s)")
    print(f"results: {Path(args.out) / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
