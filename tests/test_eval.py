"""Average@k evaluation: hand-worked statistics, and an end-to-end run on a tiny random model whose saved outputs
are re-judged independently here.

The tiny model's vocabulary is whole words, one of which is the single token "\\boxed{7}" and no other token
holds a digit. So a response is correct exactly when its gold is 7 and it contains "\\boxed{7}": the test judges
the saved responses with that string rule, not with dft_verl.rewards, and must reproduce results.json.
(Gold 7 is written "7", or "007" as AIME prints answers; "9" can never be produced.)
"""

import dataclasses
import json
from dataclasses import replace
import math
import shutil
from importlib.metadata import version

import numpy as np
import pandas as pd
import pytest

from dft_verl import eval as ev
from dft_verl.prompts import INSTRUCTION

Z = 1.959963984540054

# ------------------------------------------------------------------ statistics on hand-made judged samples


def judged(pattern: dict[int, list[bool]]) -> pd.DataFrame:
    return pd.DataFrame([{"index": i, "sample_idx": j, "correct": c}
                         for i, cs in pattern.items() for j, c in enumerate(cs)])


def test_summarize_hand_values():
    # per question: 4/4, 3/4, 2/4, 3/4 -> p = [1, .75, .5, .75], mean .75
    # s^2 = (.0625 + 0 + .0625 + 0) / 3 = .041667; se = sqrt(.041667 / 4) = .102062; half = 1.96 * se = .200038
    df = judged({0: [True] * 4, 1: [True, False, True, True], 2: [False, True, False, True],
                 3: [True, True, False, True]})
    s = ev.summarize_samples(df.sample(frac=1.0, random_state=0), k=4)  # row order must not matter
    assert s["n_questions"] == 4 and s["k"] == 4
    assert s["per_question_acc"] == [1.0, 0.75, 0.5, 0.75]
    assert s["avg_at_k"] == pytest.approx(75.0)
    assert s["ci95"] == pytest.approx([54.9962, 95.0038], abs=1e-3)


def test_summarize_rejects_incomplete_questions():
    df = judged({0: [True, False], 7: [True]})
    with pytest.raises(ValueError, match=r"question index 7: expected sample_idx 0..1, got \[0\]"):
        ev.summarize_samples(df, k=2)
    with pytest.raises(ValueError, match="missing column 'correct'"):
        ev.summarize_samples(df.drop(columns="correct"), k=2)


# ------------------------------------------------------------------ end to end on a tiny model

WORDS = ["the", "answer", "is", "so", "we", "get", "x", "plus", "\\boxed{7}"]
BOX7 = "\\boxed{7}"
SEVEN = ("7", "007")


def build_word_model(path):
    """2-layer random Qwen2 (hidden 64, head_dim 32) over a 15-word WordLevel vocabulary with a chat template."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

    special = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    vocab = {w: i for i, w in enumerate(special + ["user", "assistant"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"])
    fast.chat_template = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> "
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
    cfg = Qwen2Config(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<pad>"], tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return str(path)


def write_benchmarks(root):
    rows = {
        "math500": [{"problem": "what is x plus x", "answer": "7"},
                    {"problem": "so what do we get", "answer": "7"},
                    {"problem": "the answer is", "answer": "9"}],
        "amc23": [{"question": "x plus x plus x", "answer": 7.0}, {"question": "get x", "answer": 9.0}],
        "aime24": [{"problem": "is it x", "answer": "007"}],
    }
    for name, rs in rows.items():
        (root / name).mkdir(parents=True)
        (root / name / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    model = build_word_model(root / "model")
    data = write_benchmarks(root / "data")
    settings = ev.EvalSettings(model=model, k=6, temperature=1.0, max_new_tokens=8, seed=0)
    results = ev.evaluate(settings, root / "out", benchmarks=["math500", "amc23"], data_dir=data,
                          backend="hf", batch_size=12, num_workers=1)
    return {"root": root, "model": model, "data": data, "settings": settings, "results": results}


def hand_judge(samples: pd.DataFrame) -> list[float]:
    per_q = []
    for _, g in samples.groupby("index", sort=True):
        per_q.append(sum((gold in SEVEN and BOX7 in resp) for resp, gold in zip(g["response"], g["ground_truth"]))
                     / len(g))
    return per_q


def test_results_match_hand_judged_outputs(run):
    out = run["root"] / "out"
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(run["results"]))
    assert (saved["k"], saved["temperature"], saved["max_new_tokens"], saved["dtype"]) == (6, 1.0, 8, "float32")
    assert list(saved["benchmarks"]) == ["math500", "amc23"]
    means = []
    for bench, golds in (("math500", ["7", "7", "9"]), ("amc23", ["7", "9"])):
        samples = pd.read_parquet(out / "samples" / f"{bench}.parquet")
        assert {"index", "sample_idx", "data_source", "prompt", "response", "ground_truth", "correct", "pred",
                "reason"} <= set(samples.columns)
        assert len(samples) == 6 * len(golds)
        assert samples.groupby("index")["ground_truth"].first().tolist() == golds
        assert all(p[0]["content"].endswith("\n" + INSTRUCTION) for p in samples["prompt"])
        per_q = hand_judge(samples)
        n7 = sum(BOX7 in r for r, g in zip(samples["response"], samples["ground_truth"]) if g == "7")
        assert 0 < n7 < 6 * golds.count("7"), "fixture should mix right and wrong samples"
        s = saved["benchmarks"][bench]
        assert s["per_question_acc"] == pytest.approx(per_q)
        assert s["avg_at_k"] == pytest.approx(100 * np.mean(per_q))
        half = Z * 100 * np.std(per_q, ddof=1) / math.sqrt(len(per_q))
        lo, hi = max(0.0, 100 * np.mean(per_q) - half), min(100.0, 100 * np.mean(per_q) + half)
        assert s["ci95"] == pytest.approx([lo, hi])
        assert per_q[golds.index("9")] == 0.0
        means.append(100 * np.mean(per_q))
    assert saved["average"] == pytest.approx(np.mean(means))
    assert saved["missing_benchmarks"] == ["minerva_math", "olympiadbench", "aime24"]


def test_rerun_skips_done_and_refuses_other_settings(run, monkeypatch):
    import dft_verl.generation as generation

    def no_generation(*a, **kw):
        raise AssertionError("a finished benchmark was sampled again")

    monkeypatch.setattr(generation, "generate", no_generation)
    again = ev.evaluate(run["settings"], run["root"] / "out", benchmarks=["math500", "amc23"],
                        data_dir=run["data"], backend="hf")
    assert again == run["results"]
    # float32 is the hf default: the same settings spelled out
    spelled = replace(run["settings"], dtype="float32")
    assert ev.evaluate(spelled, run["root"] / "out", benchmarks=["math500", "amc23"], data_dir=run["data"]) == again
    for other in (ev.EvalSettings(model=run["model"], k=4, temperature=1.0, max_new_tokens=8, seed=0),
                  replace(run["settings"], dtype="bfloat16")):
        with pytest.raises(ValueError, match=r"samples/(math500|amc23).json: \w+ was evaluated with settings"):
            ev.evaluate(other, run["root"] / "out", benchmarks=["math500"], data_dir=run["data"], backend="hf")


def test_cli_adds_a_benchmark_to_the_same_folder(run, capsys):
    out = run["root"] / "out"
    results = ev.main(["--model", run["model"], "--out", str(out), "--data-dir", str(run["data"]),
                       "--benchmarks", "aime24", "--k", "6", "--max-new-tokens", "8", "--backend", "hf",
                       "--num-workers", "1"])
    assert list(results["benchmarks"]) == ["math500", "aime24", "amc23"]  # canonical order
    samples = pd.read_parquet(out / "samples" / "aime24.parquet")
    assert samples["ground_truth"].tolist() == ["007"] * 6
    assert results["benchmarks"]["aime24"]["per_question_acc"] == pytest.approx(hand_judge(samples))
    assert results["benchmarks"]["math500"] == run["results"]["benchmarks"]["math500"]
    assert "aime24" in capsys.readouterr().out
    assert not list(out.rglob("*.tmp*"))


def test_interrupted_run_resumes_without_resampling(run, tmp_path, monkeypatch):
    """A crash in the second benchmark leaves the first saved and no results.json; the rerun samples only the
    second. Uses a scripted generator (responses known in advance), judged by the real reward module."""
    import dft_verl.generation as generation

    calls = []

    def scripted(model, prompts, n, fail=False, **kw):
        calls.append(len(prompts))
        if fail:
            raise RuntimeError("simulated crash")
        return [[f"so \\boxed{{{j % 3 + 6}}}" for j in range(n)] for _ in prompts]  # boxes 6, 7, 8, 6, ...

    settings = ev.EvalSettings(model="scripted", k=4, max_new_tokens=8)
    monkeypatch.setattr(generation, "generate", lambda *a, **kw: scripted(*a, fail=len(calls) == 1, **kw))
    with pytest.raises(RuntimeError, match="simulated crash"):
        ev.evaluate(settings, tmp_path, benchmarks=["math500", "amc23"], data_dir=run["data"])
    assert (tmp_path / "samples" / "math500.json").is_file() and not (tmp_path / "results.json").exists()
    monkeypatch.setattr(generation, "generate", scripted)
    results = ev.evaluate(settings, tmp_path, benchmarks=["math500", "amc23"], data_dir=run["data"])
    assert calls == [3, 2, 2]  # math500 once; amc23 failed, then sampled once more
    # gold 7: one box of 4 (j = 1) is 7 -> 0.25; gold 9: 0
    assert results["benchmarks"]["math500"]["per_question_acc"] == [0.25, 0.25, 0.0]
    assert results["benchmarks"]["amc23"]["per_question_acc"] == [0.25, 0.0]
    assert json.loads((tmp_path / "results.json").read_text())["average"] == pytest.approx((100 / 6 + 12.5) / 2)


# ------------------------------------------------------------------ prompt template and judge


JUDGE = f"dft_verl.rewards (math-verify {version('math-verify')})"


def test_results_record_prompt_template_and_judge(run, tmp_path, capsys):
    saved = json.loads((run["root"] / "out" / "results.json").read_text())
    assert (saved["prompt_template"], saved["judge"]) == ("paper", JUDGE)
    args = ["--model", run["model"], "--data-dir", str(run["data"]), "--benchmarks", "aime24", "--k", "2",
            "--max-new-tokens", "4", "--backend", "hf", "--num-workers", "1"]
    out = tmp_path / "qwen-boxed"
    results = ev.main(args + ["--out", str(out), "--prompt-template", "qwen-boxed"])
    assert (results["prompt_template"], results["judge"]) == ("qwen-boxed", JUDGE)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    samples = pd.read_parquet(out / "samples" / "aime24.parquet")
    assert len(samples) == 2
    assert all([dict(m) for m in p] == [{"role": "system", "content": "You are a helpful assistant."},
                                        {"role": "user", "content": "is it x\n" + INSTRUCTION}]
               for p in samples["prompt"])
    meta = json.loads((out / "samples" / "aime24.json").read_text())
    assert (meta["settings"]["prompt_template"], meta["judge"]) == ("qwen-boxed", JUDGE)
    with pytest.raises(ValueError, match="aime24 was evaluated with settings"):  # one folder, one template
        ev.main(args + ["--out", str(out), "--prompt-template", "paper"])
    with pytest.raises(SystemExit):
        ev.main(args + ["--out", str(out), "--prompt-template", "qwen_boxed"])
    err = capsys.readouterr().err
    assert "--prompt-template: invalid choice: 'qwen_boxed'" in err and "qwen-boxed" in err
    with pytest.raises(ValueError, match="unknown prompt template 'qwen_boxed'; valid: paper, qwen-boxed"):
        ev.EvalSettings(model="m", prompt_template="qwen_boxed")


def test_samples_from_before_templates_count_as_paper(run, tmp_path, monkeypatch):
    import dft_verl.generation as generation

    out = tmp_path / "out"
    shutil.copytree(run["root"] / "out", out)
    for meta_path in (out / "samples").glob("*.json"):
        meta = json.loads(meta_path.read_text())
        del meta["settings"]["prompt_template"]
        meta_path.write_text(json.dumps(meta))

    def no_generation(*a, **kw):
        raise AssertionError("a finished benchmark was sampled again")

    monkeypatch.setattr(generation, "generate", no_generation)
    again = ev.evaluate(run["settings"], out, benchmarks=["math500", "amc23"], data_dir=run["data"], backend="hf")
    assert {b: again["benchmarks"][b] for b in ("math500", "amc23")} == run["results"]["benchmarks"]
    boxed = dataclasses.replace(run["settings"], prompt_template="qwen-boxed")
    with pytest.raises(ValueError, match="was evaluated with settings"):
        ev.evaluate(boxed, out, benchmarks=["math500"], data_dir=run["data"], backend="hf")


# ------------------------------------------------------------------ growing the question set


def write_questions(root, golds):
    (root / "math500").mkdir(parents=True, exist_ok=True)
    rows = [{"problem": f"what is x plus x {'plus x ' * i}".strip(), "answer": g} for i, g in enumerate(golds)]
    (root / "math500" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def spy_on_generate(monkeypatch):
    """Record (number of prompts, start) of every generate call; the real generate does the sampling."""
    import dft_verl.generation as generation

    calls, real = [], generation.generate

    def recording(model, prompts, **kw):
        calls.append((len(prompts), kw.get("start", 0)))
        return real(model, prompts, **kw)

    monkeypatch.setattr(generation, "generate", recording)
    return calls


def test_more_questions_sample_only_the_new_ones_as_a_fresh_run_would(run, tmp_path, monkeypatch):
    """--limit 2 then --limit 5 into one folder: the second call samples questions 2..4 only, and the saved samples
    equal a fresh 5-question run's (batches of 4 over k=2 samples: the new questions start batch 1)."""
    data = write_questions(tmp_path / "data", ["7", "9", "7", "7", "007"])
    settings = ev.EvalSettings(model=run["model"], k=2, temperature=1.0, max_new_tokens=8, seed=3)
    kw = dict(benchmarks=["math500"], data_dir=data, backend="hf", batch_size=4, num_workers=1)
    calls = spy_on_generate(monkeypatch)
    ev.evaluate(dataclasses.replace(settings, limit=2), tmp_path / "grown", **kw)
    grown = ev.evaluate(dataclasses.replace(settings, limit=5), tmp_path / "grown", **kw)
    fresh = ev.evaluate(dataclasses.replace(settings, limit=5), tmp_path / "fresh", **kw)
    assert calls == [(2, 0), (3, 2), (5, 0)]
    a = pd.read_parquet(tmp_path / "grown" / "samples" / "math500.parquet")
    b = pd.read_parquet(tmp_path / "fresh" / "samples" / "math500.parquet")
    assert a["response"].tolist() == b["response"].tolist() and len(a) == 10
    assert a["ground_truth"].tolist() == [g for g in ["7", "9", "7", "7", "007"] for _ in range(2)]
    assert grown["benchmarks"] == fresh["benchmarks"]
    assert grown["benchmarks"]["math500"]["per_question_acc"] == pytest.approx(hand_judge(a))
    meta = json.loads((tmp_path / "grown" / "samples" / "math500.json").read_text())
    assert (meta["questions_kept"], meta["batch_size"], meta["settings"]["limit"]) == (2, 4, 5)
    ev.evaluate(dataclasses.replace(settings, limit=5), tmp_path / "grown", **kw)  # all saved: nothing sampled
    assert len(calls) == 3


def test_more_questions_resample_all_when_batches_do_not_continue(run, tmp_path, monkeypatch):
    """k=3 at batch 4: 2 saved questions are 6 samples, not whole batches, so all 3 questions are sampled again;
    a smaller or different question set is refused, naming the file and the question."""
    data = write_questions(tmp_path / "data", ["7", "9", "7"])
    settings = ev.EvalSettings(model=run["model"], k=3, temperature=1.0, max_new_tokens=8)
    kw = dict(benchmarks=["math500"], data_dir=data, backend="hf", batch_size=4, num_workers=1)
    calls = spy_on_generate(monkeypatch)
    ev.evaluate(dataclasses.replace(settings, limit=2), tmp_path / "out", **kw)
    ev.evaluate(settings, tmp_path / "out", **kw)
    assert calls == [(2, 0), (3, 0)]
    meta = json.loads((tmp_path / "out" / "samples" / "math500.json").read_text())
    assert meta["questions_kept"] == 0
    with pytest.raises(ValueError, match=r"math500.parquet: holds 3 questions, more than the 2 asked for"):
        ev.evaluate(dataclasses.replace(settings, limit=2), tmp_path / "out", **kw)
    write_questions(data, ["7", "8", "7", "7"])
    with pytest.raises(ValueError, match=r"math500.parquet: question index 1 is not the benchmark's question 1 "
                                         r"\('what is x plus x plus x', answer '8'\)"):
        ev.evaluate(settings, tmp_path / "out", **kw)
    assert calls == [(2, 0), (3, 0)]
