"""Reference log-probs (DPO's and iw-SFT's precompute step): one forward per sequence vs length-sorted batches.

Same model and sequences for every configuration, measured side by side in one run:

    per sequence    ``batched_token_log_probs(model, [s])`` for each sequence s (what the step did before batching)
    batch <= N      ``batched_token_log_probs(model, sequences, max_batch_tokens=N)``: sorted by length, right-padded
                    batches of at most N padded tokens
    seq/s, ratio    sequences per second; speed-up over "per sequence"
    max |diff|      largest difference of any token's log-prob from the per-sequence values (nats)

Sequences: the demo's arithmetic questions with their gold solutions in the model's chat template (~60-110 tokens
on SmolLM2), the shape of the demo's DPO and iw-SFT data.

    python bench/ref_logprobs_speed.py                      # SmolLM2-135M-Instruct if converted, else a tiny model
    python bench/ref_logprobs_speed.py --sequences 128 --budgets 1024,4096,16384
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv=None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dft_verl.demo.tasks import make_problems
    from dft_verl.trainer.ref_logprobs import batched_token_log_probs

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="HF folder (default: converted SmolLM2, else a tiny model)")
    ap.add_argument("--sequences", type=int, default=128)
    ap.add_argument("--budgets", default="1024,4096,16384", help="max_batch_tokens values to compare")
    args = ap.parse_args(argv)

    model_path = args.model
    if model_path is None:
        from dft_verl.demo.smollm2 import default_model_dir, is_converted

        if is_converted(default_model_dir()):
            model_path = str(default_model_dir())
        else:
            import tempfile

            from dft_verl.tiny import build_tiny_model

            model_path = str(build_tiny_model(tempfile.mkdtemp(prefix="ref_bench_")))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    rows = make_problems(args.sequences, 0, ("add", "mul", "word_add", "word_two"))
    sequences = [torch.tensor(tokenizer.apply_chat_template(
        [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["solution"]}],
        tokenize=True, return_dict=True)["input_ids"]) for r in rows]
    lengths = sorted(len(s) for s in sequences)
    print(f"model {model_path}; {len(sequences)} sequences, {lengths[0]}-{lengths[-1]} tokens; "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f} at start")

    batched_token_log_probs(model, sequences[:4])  # warm-up
    t0 = time.perf_counter()
    reference = [batched_token_log_probs(model, [s])[0] for s in sequences]
    base = time.perf_counter() - t0
    print(f"{'config':<16} {'s':>7} {'seq/s':>7} {'ratio':>6} {'max |diff|':>11}")
    print(f"{'per sequence':<16} {base:7.2f} {len(sequences) / base:7.1f} {1.0:6.2f} {0.0:11.2e}")
    for budget in (int(b) for b in args.budgets.split(",")):
        t0 = time.perf_counter()
        got = batched_token_log_probs(model, sequences, max_batch_tokens=budget)
        wall = time.perf_counter() - t0
        diff = max(float((a - b).abs().max()) for a, b in zip(got, reference))
        print(f"{'batch <= ' + str(budget):<16} {wall:7.2f} {len(sequences) / wall:7.1f} {base / wall:6.2f} {diff:11.2e}")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
