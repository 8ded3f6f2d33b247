"""DPO on verl's engine trainer: loss arithmetic, pair batching, reference log-probs, a real 2-rank run."""

import math
import os
import random
import subprocess
import sys

import pandas as pd
import pytest

from dft_verl.trainer.metrics import metric_series
import torch

from dft_verl.dpo.data import (
    DPODataError,
    DPOPairDataset,
    PairCollator,
    check_dpo_files,
    mark_pair_groups,
)
from dft_verl.dpo.loss import DPOConfig, dpo_pair_losses, make_dpo_loss_fn

LOG2 = math.log(2.0)
DATA_CONFIG = {"pad_mode": "no_padding", "max_length": 128, "truncation": "right"}


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


def pair_rows(n, seed=0):
    """Arithmetic prompts; chosen = a worked answer, rejected = a short wrong one (lengths vary)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        rows.append({
            "prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
            "chosen": f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}.",
            "rejected": rng.choice(["I do not know.", "Maybe 7?", "no", "The answer is \\boxed{0}, since 0 + 0 = 0."]),
            "index": i,
            "data_source": "toy",
        })
    return rows


def write(path, rows):
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def pairs_parquet(tmp_path_factory):
    return write(tmp_path_factory.mktemp("dpo") / "pairs.parquet", pair_rows(16))


@pytest.fixture
def one_thread():
    """Reference forwards in this process on one thread (a shared CPU oversubscribed by OpenMP
    threads runs a tiny model ~50x slower); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def dataset(path, tokenizer, require_ref=False, **config):
    return DPOPairDataset(path, tokenizer, {**DATA_CONFIG, **config}, require_ref=require_ref)


# ---------------------------------------------------------------------------
# the loss: hand-worked values
# ---------------------------------------------------------------------------


def test_loss_golden_values_by_hand():
    # pair 0: r_c = 0.1 * (-10 - -11) = 0.1, r_r = 0.1 * (-12 - -11) = -0.1, h = 0.2,
    #         l = log(1 + e^-0.2) = log(1.8187307531) = 0.5981388693
    # pair 1: r_c = 0.1 * (-5 - -3) = -0.2, r_r = 0.1 * (-5 - -6) = 0.1, h = -0.3,
    #         l = log(1 + e^0.3) = log(2.3498588076) = 0.8543552444
    t = dpo_pair_losses(torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -5.0]),
                        torch.tensor([-11.0, -3.0]), torch.tensor([-11.0, -6.0]), beta=0.1)
    assert t.losses.tolist() == pytest.approx([0.5981388693, 0.8543552444], abs=1e-7)
    assert t.reward_chosen.tolist() == pytest.approx([0.1, -0.2], abs=1e-7)
    assert t.reward_rejected.tolist() == pytest.approx([-0.1, 0.1], abs=1e-7)
    assert t.margin.tolist() == pytest.approx([0.2, -0.3], abs=1e-7)

    # cDPO, eps = 0.1: 0.9 log(1 + e^-h) + 0.1 log(1 + e^h) = log(1 + e^-h) + 0.1 h
    #   pair 0: 0.5981388693 + 0.02 = 0.6181388693; pair 1: 0.8543552444 - 0.03 = 0.8243552444
    ls = dpo_pair_losses(torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -5.0]),
                         torch.tensor([-11.0, -3.0]), torch.tensor([-11.0, -6.0]), beta=0.1, label_smoothing=0.1)
    assert ls.losses.tolist() == pytest.approx([0.6181388693, 0.8243552444], abs=1e-7)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_policy_equal_to_reference_gives_log2(label_smoothing):
    lp = torch.tensor([-31.5, -2.25, -400.0])
    t = dpo_pair_losses(lp, lp - 7.0, lp, lp - 7.0, beta=0.3, label_smoothing=label_smoothing)
    assert t.losses.tolist() == pytest.approx([LOG2] * 3, abs=1e-7)
    assert t.reward_chosen.abs().max() == 0 and t.reward_rejected.abs().max() == 0


def test_gradient_raises_chosen_and_lowers_rejected():
    pi_c = torch.tensor([-10.0, -4.0], requires_grad=True)
    pi_r = torch.tensor([-12.0, -9.0], requires_grad=True)
    ref_c, ref_r = torch.tensor([-10.0, -6.0]), torch.tensor([-12.0, -8.0])
    dpo_pair_losses(pi_c, pi_r, ref_c, ref_r, beta=0.1).losses.sum().backward()
    # dl/dpi_c = -beta * sigmoid(-h): pair 0 at h = 0 -> -0.05; pair 1: h = 0.1 * (2 - -1) = 0.3
    g1 = 0.1 * torch.sigmoid(torch.tensor(-0.3)).item()
    assert pi_c.grad.tolist() == pytest.approx([-0.05, -g1], abs=1e-7)
    assert pi_r.grad.tolist() == pytest.approx([0.05, g1], abs=1e-7)
    # one descent step moves the policy the right way
    assert (pi_c.grad < 0).all() and (pi_r.grad > 0).all()


def test_dpo_config_rejects_bad_values():
    assert DPOConfig.from_config({"beta": "0.5"}).beta == 0.5
    unknown = r"unknown key\(s\) in dpo config: \['gamma'\]; supported: \['beta', 'label_smoothing'\]"
    with pytest.raises(ValueError, match=unknown):
        DPOConfig.from_config({"gamma": 1})
    with pytest.raises(ValueError, match="dpo.beta must be > 0"):
        DPOConfig(beta=0.0)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 0.5\)"):
        DPOConfig(label_smoothing=0.5)


# ---------------------------------------------------------------------------
# the loss as verl calls it: layout, pairing, normalisation over micro-batches and ranks
# ---------------------------------------------------------------------------


def micro_batch(seqs, dp_size, global_pairs):
    """A verl no_padding micro-batch. Each seq: (log_probs, loss_mask, pair_index, is_chosen, ref_logp);
    log_probs[t] is the log-prob of token t+1 (verl's layout), loss_mask[t] marks token t."""
    from verl.utils import tensordict_utils as tu

    def nested(xs, dtype):
        return torch.nested.as_nested_tensor([torch.tensor(x, dtype=dtype) for x in xs], layout=torch.jagged)

    log_probs = nested([s[0] for s in seqs], torch.float32)
    data = tu.get_tensordict(
        {
            "input_ids": nested([[1] * len(s[1]) for s in seqs], torch.int64),
            "loss_mask": nested([s[1] for s in seqs], torch.int64),
            "pair_index": torch.tensor([s[2] for s in seqs]),
            "is_chosen": torch.tensor([s[3] for s in seqs]),
            "ref_logp": torch.tensor([s[4] for s in seqs], dtype=torch.float64),
        },
        {"dp_size": dp_size, "global_batch_size": global_pairs, "pad_mode": "no_padding"},
    )
    return {"log_probs": log_probs}, data


# Four pairs. Sequences are 2 prompt tokens + response; the last log_prob (-100) predicts nothing
# and must be ignored. Response sums: chosen -(2+3) = -5 etc.
PAIRS = {
    # pair: (chosen seq, rejected seq) as (log_probs, loss_mask, pair, is_chosen, ref)
    0: (([-1, -2, -3, -100], [0, 0, 1, 1], 0, True, -6.0), ([-1, -4, -100], [0, 0, 1], 0, False, -3.0)),
    1: (([-9, -1, -1, -1, -100], [0, 0, 1, 1, 1], 1, True, -3.0), ([-9, -8, -100], [0, 0, 1], 1, False, -8.0)),
    2: (([-1, -0.5, -100], [0, 0, 1], 2, True, -0.5), ([-1, -2, -2, -100], [0, 0, 1, 1], 2, False, -1.0)),
    3: (([-1, -7, -100], [0, 0, 1], 3, True, -9.0), ([-1, -1, -100], [0, 0, 1], 3, False, -2.0)),
}
# policy sums (pi_c, pi_r): 0: (-5, -4)  1: (-3, -8)  2: (-0.5, -4)  3: (-7, -1)
# h = 0.1 * ((pi_c - ref_c) - (pi_r - ref_r)):  0: 0.1*(1 - -1) = 0.2  1: 0.1*(0 - 0) = 0
#                                               2: 0.1*(0 - -3) = 0.3  3: 0.1*(2 - 1) = 0.1
H = [0.2, 0.0, 0.3, 0.1]


def test_loss_fn_aligns_tokens_pairs_and_normalises_over_micro_batches_and_ranks():
    from verl.utils.metric import Metric

    loss_fn = make_dpo_loss_fn(DPOConfig(beta=0.1))
    # rank 0: micro-batches [pair 0], [pair 1]; rank 1: [pair 2 rejected-first], [pair 3]
    layout = {0: [[PAIRS[0][0], PAIRS[0][1]], [PAIRS[1][0], PAIRS[1][1]]],
              1: [[PAIRS[2][1], PAIRS[2][0]], [PAIRS[3][0], PAIRS[3][1]]]}
    rank_losses, rank_metrics = [], {}
    for rank, mbs in layout.items():
        total = 0.0
        for seqs in mbs:
            loss, metrics = loss_fn(*micro_batch(seqs, dp_size=2, global_pairs=4))
            total += loss.item()
            for k, m in metrics.items():
                rank_metrics.setdefault(k, [Metric(m.aggregation), Metric(m.aggregation)])[rank].extend(m)
        rank_losses.append(total)
    per_pair = [math.log1p(math.exp(-h)) for h in H]
    # verl: sum over micro-batches, FSDP/all-reduce average over ranks -> the global pair mean
    assert sum(rank_losses) / 2 == pytest.approx(sum(per_pair) / 4, abs=1e-6)
    reduced = {k: Metric.aggregate_dp(v) for k, v in rank_metrics.items()}
    assert reduced["dpo/reward_margin"] == pytest.approx(sum(H) / 4, abs=1e-6)
    assert reduced["dpo/reward_accuracy"] == pytest.approx(3 / 4)  # h = 0 (pair 1) is not a win
    assert reduced["dpo/logp_chosen"] == pytest.approx((-5 - 3 - 0.5 - 7) / 4)
    assert reduced["dpo/logp_rejected"] == pytest.approx((-4 - 8 - 4 - 1) / 4)
    # r_c = 0.1 * (pi_c - ref_c): 0.1, 0, 0, 0.2
    assert reduced["dpo/reward_chosen"] == pytest.approx(0.3 / 4)


def test_loss_fn_refuses_a_split_pair():
    loss_fn = make_dpo_loss_fn(DPOConfig())
    with pytest.raises(ValueError, match=r"does not hold whole pairs: chosen pair ids \[0\], rejected pair ids \[1\]"):
        loss_fn(*micro_batch([PAIRS[0][0], PAIRS[1][1]], dp_size=1, global_pairs=2))


def test_loss_gradient_flows_to_response_tokens_only():
    loss_fn = make_dpo_loss_fn(DPOConfig(beta=0.1))
    model_output, data = micro_batch([PAIRS[0][0], PAIRS[0][1]], dp_size=1, global_pairs=1)
    lp = model_output["log_probs"].values().clone().requires_grad_(True)
    offsets = model_output["log_probs"].offsets()
    nested = torch.nested.nested_tensor_from_jagged(lp, offsets)
    loss, _ = loss_fn({"log_probs": nested}, data)
    loss.backward()
    g = 0.1 * torch.sigmoid(torch.tensor(-0.2)).item()
    # chosen positions 1, 2 predict its response tokens; rejected position 1 (flat index 5)
    assert lp.grad.tolist() == pytest.approx([0, -g, -g, 0, 0, g, 0], abs=1e-7)


# ---------------------------------------------------------------------------
# the dataset and pair integrity through verl's sampler, collator and micro-batching
# ---------------------------------------------------------------------------


def test_dataset_masks_exactly_the_response(pairs_parquet, tokenizer):
    ds = dataset(pairs_parquet, tokenizer)
    rows = pd.read_parquet(pairs_parquet)
    assert len(ds) == 16
    item = ds[3]
    assert item["pair_index"] == 3
    for key in ("chosen", "rejected"):
        seq = item[key]
        masked = seq["input_ids"][seq["loss_mask"].bool()]
        assert tokenizer.decode(masked) == rows[key][3] + "<|im_end|>\n"
        prompt_text = tokenizer.decode(seq["input_ids"][~seq["loss_mask"].bool()])
        assert prompt_text == f"<|im_start|>user\n{rows['prompt'][3][0]['content']}<|im_end|>\n<|im_start|>assistant\n"


def test_multi_turn_prompt_trains_on_the_final_response_only(tmp_path, tokenizer):
    row = {"prompt": [{"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "2"},
                      {"role": "user", "content": "And 2 + 2?"}],
           "chosen": "4", "rejected": "5"}
    ds = dataset(write(tmp_path / "mt.parquet", [row]), tokenizer)
    seq = ds[0]["chosen"]
    assert tokenizer.decode(seq["input_ids"][seq["loss_mask"].bool()]) == "4<|im_end|>\n"


def pair_ids_of(batch):
    """[(pair, is_chosen), ...] of a TensorDict micro-batch."""
    return list(zip(batch["pair_index"].tolist(), batch["is_chosen"].tolist()))


def whole_pairs(ids) -> bool:
    """Every pair in ``ids`` appears exactly twice: once chosen, once rejected."""
    pairs = {}
    for p, c in ids:
        pairs.setdefault(p, []).append(c)
    return all(sorted(v) == [False, True] for v in pairs.values())


@pytest.mark.parametrize("dynamic", [True, False])
def test_every_micro_batch_holds_whole_pairs(pairs_parquet, tokenizer, dynamic):
    """verl's own DistributedSampler (shuffling items = pairs), the pair collator, and verl's
    prepare_micro_batches with the pair groups: no micro-batch ever holds half a pair."""
    from torch.utils.data import DistributedSampler
    from torchdata.stateful_dataloader import StatefulDataLoader
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine.utils import prepare_micro_batches

    ds = dataset(pairs_parquet, tokenizer)
    lengths = [len(ds[i][k]["input_ids"]) for i in range(len(ds)) for k in ("chosen", "rejected")]
    meta = {"use_dynamic_bsz": dynamic, "micro_batch_size_per_gpu": 3,
            "max_token_len_per_gpu": 2 * max(lengths) + 10, "pad_mode": "no_padding"}
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, shuffle=True, num_replicas=2, rank=rank, drop_last=True, seed=1)
        loader = StatefulDataLoader(ds, batch_size=6, sampler=sampler, collate_fn=PairCollator(), drop_last=True)
        for batch in loader:
            td = tu.get_tensordict(batch, dict(meta))
            assert len(td) == 12  # 6 pairs = 12 sequences per rank
            micro, _ = prepare_micro_batches(mark_pair_groups(td))
            assert len(micro) > 1
            for mb in micro:
                assert whole_pairs(pair_ids_of(mb)), pair_ids_of(mb)
                seen += [p for p, c in pair_ids_of(mb) if c]
            # control: the same batch without the groups is cut through pairs by verl
            control, _ = prepare_micro_batches(tu.get_tensordict(batch, dict(meta)))
            assert not all(whole_pairs(pair_ids_of(mb)) for mb in control)
    assert len(seen) == len(set(seen)) == 12  # 2 ranks x 6 distinct pairs


def test_mark_pair_groups_rejects_a_scrambled_batch(pairs_parquet, tokenizer):
    from verl.utils import tensordict_utils as tu

    ds = dataset(pairs_parquet, tokenizer)
    batch = PairCollator()([ds[0], ds[1]])
    batch["is_chosen"] = batch["is_chosen"].flip(0)
    with pytest.raises(ValueError, match=r"not laid out as \[chosen_0, rejected_0"):
        mark_pair_groups(tu.get_tensordict(batch, {}))


# ---------------------------------------------------------------------------
# bad input: file, row and field named
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["prompt", "chosen", "rejected"])
def test_missing_column_names_file_and_column(tmp_path, column):
    rows = pair_rows(2)
    for r in rows:
        del r[column]
    path = write(tmp_path / "bad.parquet", rows)
    with pytest.raises(DPODataError, match=rf"bad\.parquet: missing column\(s\) \['{column}'\]; columns are"):
        check_dpo_files(path)


@pytest.mark.parametrize("field,value,message", [
    ("rejected", "   ", "expected a non-empty response string"),
    ("chosen", None, "expected a non-empty response string"),
    ("prompt", [], "expected a non-empty list of"),
    ("prompt", [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
     "the last prompt message is an assistant turn"),
    ("prompt", [{"role": "user"}], r"\[0\]: expected a dict with string 'role' and 'content'"),
])
def test_bad_row_names_file_row_and_field(tmp_path, field, value, message):
    rows = pair_rows(3)
    rows[2][field] = value
    path = write(tmp_path / "bad.parquet", rows)
    with pytest.raises(DPODataError, match=rf"bad\.parquet: row 2: field '{field}'.*{message}"):
        check_dpo_files(path)


def test_response_truncated_away_names_row_and_field(tmp_path, tokenizer):
    rows = pair_rows(2)
    rows[1]["prompt"] = [{"role": "user", "content": "x " * 200}]
    ds = dataset(write(tmp_path / "long.parquet", rows), tokenizer, max_length=64)
    ds[0]
    with pytest.raises(DPODataError, match=r"long\.parquet: row 1: field 'chosen': the response has no tokens left"):
        ds[1]
    strict = dataset(write(tmp_path / "long2.parquet", rows), tokenizer, max_length=64, truncation="error")
    with pytest.raises(DPODataError, match=r"long2\.parquet: row 1: field 'chosen': sequence_length=\d+ is larger"):
        strict[1]


def test_training_needs_reference_columns(pairs_parquet, tokenizer):
    hint = r"missing column\(s\) \['ref_chosen_logp'.*python -m dft_verl\.dpo\.ref_logprobs"
    with pytest.raises(DPODataError, match=hint):
        dataset(pairs_parquet, tokenizer, require_ref=True)


# ---------------------------------------------------------------------------
# reference log-probs: stored once, aligned with training
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("max_batch_tokens", [40, 4096])
def test_batched_reference_log_probs_equal_one_sequence_forwards(tiny_model_dir, one_thread, max_batch_tokens):
    """Right-padded batches (several of them at a 40-token budget, one at 4096; a sequence longer than the budget
    alone) give each sequence's own forward pass, in the input order."""
    from transformers import AutoModelForCausalLM

    from dft_verl.trainer.ref_logprobs import batched_token_log_probs

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    sequences = [torch.randint(0, vocab, (n,), generator=gen) for n in (7, 19, 3, 50, 12, 19, 2)]
    got = batched_token_log_probs(model, sequences, max_batch_tokens=max_batch_tokens)
    for ids, lp in zip(sequences, got):
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids[None]).logits[0, :-1].double(), -1)
        expected = torch.cat([torch.zeros(1, dtype=torch.double), logp.gather(-1, ids[1:, None])[:, 0]])
        assert lp.shape == ids.shape and lp[0] == 0
        torch.testing.assert_close(lp.double(), expected, atol=1e-5, rtol=0)


def test_reference_tool_matches_an_independent_computation(tiny_model_dir, tokenizer, pairs_parquet, tmp_path,
                                                            one_thread):
    """The stored sums equal log pi_ref(response | prompt) computed straight from the HF chat template
    and model (prompt = template with the generation prompt; response = every token after it)."""
    from transformers import AutoModelForCausalLM

    from dft_verl.dpo.ref_logprobs import compute_ref_logprobs

    out = tmp_path / "ref.parquet"
    compute_ref_logprobs(tiny_model_dir, pairs_parquet, str(out), max_length=128)
    ref = pd.read_parquet(out)
    assert len(ref) == 16 and list(ref["index"]) == list(range(16))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    for i in (0, 7):
        prompt = [dict(m) for m in ref["prompt"][i]]
        prefix = tokenizer(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False),
                           add_special_tokens=False)["input_ids"]
        for key in ("chosen", "rejected"):
            text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": ref[key][i]}],
                                                 tokenize=False)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert ids[: len(prefix)] == prefix
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1].double(), -1)
            target = torch.tensor(ids[1:])
            expected = logp.gather(-1, target[:, None])[len(prefix) - 1:, 0].sum().item()
            assert ref[f"ref_{key}_tokens"][i] == len(ids) - len(prefix)
            assert ref[f"ref_{key}_logp"][i] == pytest.approx(expected, abs=1e-4)
    # stored once: a second call leaves the file alone
    mtime = os.path.getmtime(out)
    compute_ref_logprobs(tiny_model_dir, pairs_parquet, str(out), max_length=128)
    assert os.path.getmtime(out) == mtime
    # a different max_length (response cut) no longer matches the stored token counts
    ds = dataset(str(out), tokenizer, require_ref=True, max_length=24)
    with pytest.raises(DPODataError, match=r"response tokens, but 'ref_chosen_logp' was summed over \d+: recompute"):
        ds[0]
    assert dataset(str(out), tokenizer, require_ref=True)[0]["chosen"]["ref_logp"] == ref["ref_chosen_logp"][0]


def test_config_composes_with_paper_defaults():
    from hydra import compose, initialize_config_dir

    import dft_verl

    config_dir = os.path.join(os.path.dirname(dft_verl.__file__), "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="dpo", overrides=["dpo.beta=0.2"])
    assert DPOConfig.from_config(cfg.dpo) == DPOConfig(beta=0.2, label_smoothing=0.0)
    assert (cfg.optim.lr, cfg.data.train_batch_size, cfg.optim.lr_warmup_steps_ratio) == (1e-6, 128, 0.05)
    assert (cfg.data.custom_cls.path, cfg.data.custom_cls.name) == ("pkg://dft_verl.dpo.data", "DPOPairDataset")
    assert cfg.data.pad_mode == "no_padding" and "hf_model" in cfg.checkpoint.save_contents
    assert cfg.trainer.balance_batch is False  # verl's Ray trainer keeps each batch's order (whole pairs)


# ---------------------------------------------------------------------------
# the real trainer: 2 ranks under torchrun (gloo, CPU platform)
# ---------------------------------------------------------------------------


DPO_LAUNCHES = {
    # verl's engine SFT trainer under torchrun, and verl's Ray SFT trainer (a local Ray, one worker per rank)
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                 "dft_verl.dpo.train"],
    "ray": [sys.executable, "-m", "dft_verl.dpo.train_ray", "trainer.n_gpus_per_node=2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("launch", sorted(DPO_LAUNCHES))
def test_dpo_learns_the_preference_and_checkpoints(launch, tiny_model_dir, tmp_path, one_thread):
    """Reference = the initial policy: step 1 sees zero implicit rewards and loss log 2 exactly
    (stored reference sums line up with the trainer's log-probs); then the margin and the reward
    accuracy rise, and verl writes the checkpoint with HF weights. Both trainers, 2 ranks."""
    from dft_verl.dpo.ref_logprobs import compute_ref_logprobs
    from dft_verl.trainer.overrides import cpu_env, cpu_overrides

    pairs = write(tmp_path / "pairs.parquet", pair_rows(8, seed=1))
    ref = compute_ref_logprobs(tiny_model_dir, pairs, str(tmp_path / "ref.parquet"), max_length=128)
    ckpt = tmp_path / "ckpt"
    cmd = [*DPO_LAUNCHES[launch], f"data.train_files={ref}", f"data.val_files={ref}",
           f"model.path={tiny_model_dir}", "data.train_batch_size=8", "data.micro_batch_size_per_gpu=2",
           "data.max_length=128", "data.truncation=right", "trainer.total_training_steps=3",
           f"trainer.default_local_dir={ckpt}", "optim.lr=3e-3", "optim.lr_warmup_steps_ratio=0",
           *cpu_overrides()]
    proc = subprocess.run(cmd, env=cpu_env(), capture_output=True, text=True, timeout=240, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    loss = metric_series(log, "train/loss")
    margin = metric_series(log, "dpo/reward_margin")
    acc = metric_series(log, "dpo/reward_accuracy")
    chosen = metric_series(log, "dpo/reward_chosen")
    assert sorted(loss) == [1, 2, 3], log[-3000:]
    assert loss[1] == pytest.approx(LOG2, abs=1e-6)
    assert abs(margin[1]) < 1e-5 and abs(chosen[1]) < 1e-5
    assert margin[1] < margin[2] < margin[3] and margin[3] > 0.3
    assert acc[3] == 1.0 and acc[3] > acc[1]
    assert loss[3] < loss[1] - 0.1
    assert metric_series(log, "val/loss")[3] < LOG2
    assert (ckpt / "global_step_3" / "huggingface" / "model.safetensors").exists()
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "3"


@pytest.mark.slow
def test_entry_rejects_bad_pairs_before_training(tmp_path):
    from dft_verl.trainer.overrides import cpu_env, cpu_overrides

    rows = pair_rows(2)
    rows[1]["chosen"] = ""
    ref_cols = {"ref_chosen_logp": -1.0, "ref_rejected_logp": -1.0, "ref_chosen_tokens": 1, "ref_rejected_tokens": 1}
    path = write(tmp_path / "pairs.parquet", [{**r, **ref_cols} for r in rows])
    cmd = [sys.executable, "-m", "dft_verl.dpo.train", f"data.train_files={path}", "model.path=unused",
           *cpu_overrides()]
    proc = subprocess.run(cmd, env=cpu_env(), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    assert "pairs.parquet: row 1: field 'chosen': expected a non-empty response string" in proc.stderr


def test_ray_trainer_refuses_a_batch_order_that_splits_pairs(tmp_path):
    from omegaconf import OmegaConf

    from dft_verl.dpo.train_ray import check_ray_dpo_config

    cfg = OmegaConf.create({"trainer": {"balance_batch": True}})
    with pytest.raises(ValueError, match="trainer.balance_batch=False"):
        check_ray_dpo_config(cfg)
    check_ray_dpo_config(OmegaConf.create({"trainer": {"balance_batch": False}}))
