"""Rollout throughput: the hf rollout server (Ray actor, concurrent requests) vs plain ``transformers.generate``.

Same model, prompts, sampling (temperature 1.0, one completion per request, n per prompt) and batch size, measured
side by side in one run; prints generated tokens/s of each, their ratio (target >= 0.9: the server's queueing,
batching and Ray round trips cost under 10%) and the load average.

    python bench/rollout_throughput.py                       # SmolLM2 if converted (dft-verl demo), else tiny
    python bench/rollout_throughput.py --model PATH --prompts 16 --n 4 --max-new-tokens 64 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time


def default_model() -> str:
    from dft_verl.demo.smollm2 import default_model_dir, is_converted

    path = default_model_dir()
    if is_converted(path):
        return str(path)
    from dft_verl.tiny import build_tiny_model

    return build_tiny_model("/tmp/dft_verl_bench/tiny")


def prompt_ids(tokenizer, n_prompts: int) -> list[list[int]]:
    from dft_verl.demo.tasks import make_problems
    from dft_verl.prompts import build_prompt

    ids = []
    for row in make_problems(n_prompts, 0):
        enc = tokenizer.apply_chat_template(build_prompt(row["question"]), add_generation_prompt=True, tokenize=True)
        ids.append(list(enc["input_ids"] if hasattr(enc, "keys") else enc))
    return ids


def plain_generate(model, tokenizer, requests, max_new: int, batch: int, eos: list[int] | None = None,
                   seed: int | None = None) -> list[list[int]]:
    """transformers ``generate`` over the requests (token ids) in left-padded batches, sampling the whole softmax at
    T=1 (top_k=0: its default would be 50); each completion cut after its first EOS id (``eos``, default the
    tokenizer's). ``seed``: batch b reseeds torch with ``batch_seed(seed, b)``, as the hf sampler's batches do."""
    import torch

    eos = [tokenizer.eos_token_id] if eos is None else eos
    tokenizer.padding_side = "left"
    completions = []
    for b, s in enumerate(range(0, len(requests), batch)):
        enc = tokenizer.pad({"input_ids": requests[s : s + batch]}, return_tensors="pt")
        if seed is not None:
            from dft_verl.generation import batch_seed

            torch.manual_seed(batch_seed(seed, b))
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new,
                                 eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            completions.append(row[: next((j + 1 for j, t in enumerate(row) if t in eos), len(row))])
    return completions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--n", type=int, default=4, help="completions per prompt (GRPO's group size)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch", type=int, default=64, help="sequences per generate call (both sides)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (both sides)")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()

    import ray
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from verl.workers.config import HFModelConfig, RolloutConfig

    from dft_verl.rollout.server import HFRolloutServer

    model_path = args.model or default_model()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="sdpa").eval()
    requests = [ids for ids in prompt_ids(tokenizer, args.prompts) for _ in range(args.n)]

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    config = RolloutConfig(name="hf", prompt_length=512, response_length=args.max_new_tokens, dtype="float32",
                           load_format="auto", tensor_model_parallel_size=1,
                           engine_kwargs={"hf": {"max_batch_size": args.batch, "num_threads": args.threads}})
    server = ray.remote(HFRolloutServer).options(max_concurrency=4096).remote(config, HFModelConfig(path=model_path), 0)
    ray.get(server.ready.remote())
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}

    def served() -> int:
        refs = [server.generate.remote(prompt_ids=ids, sampling_params=dict(params), request_id=str(i))
                for i, ids in enumerate(requests)]
        return sum(len(out.token_ids) for out in ray.get(refs))

    load = [os.getloadavg()[0]]
    rates = {"transformers.generate": [], "hf rollout server": []}
    served()  # warm-up: first-call allocations on both sides
    plain_generate(model, tokenizer, requests[: args.batch], args.max_new_tokens, args.batch)
    for _ in range(args.repeats):  # alternate, so drift in machine load hits both sides alike
        for name, fn in (("transformers.generate", lambda: sum(map(len, plain_generate(
                             model, tokenizer, requests, args.max_new_tokens, args.batch)))),
                         ("hf rollout server", served)):
            t0 = time.perf_counter()
            tokens = fn()
            rates[name].append(tokens / (time.perf_counter() - t0))
    load.append(os.getloadavg()[0])
    ray.shutdown()

    print(f"model {model_path}; {len(requests)} requests ({args.prompts} prompts x {args.n}), "
          f"<= {args.max_new_tokens} new tokens, batch {args.batch}, {args.threads} threads, T=1.0")
    for name, r in rates.items():
        print(f"  {name:24s} {max(r):8.1f} tokens/s (best of {len(r)}: {', '.join(f'{x:.1f}' for x in r)})")
    ratio = max(rates["hf rollout server"]) / max(rates["transformers.generate"])
    print(f"ratio server / generate: {ratio:.3f} (target >= 0.9); load average {load[0]:.2f} -> {load[1]:.2f}")


if __name__ == "__main__":
    main()
