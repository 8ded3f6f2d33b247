"""The real verl engine SFT trainer under torchrun (2 ranks, gloo, CPU platform) with dft_verl losses."""

import random
import subprocess
import sys

import pandas as pd
import pytest

from dft_verl.trainer.metrics import metric_series

from dft_verl.trainer.overrides import cpu_env, cpu_overrides

pytestmark = pytest.mark.slow

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


@pytest.fixture(scope="module")
def sft_parquet(tmp_path_factory):
    rng = random.Random(0)
    rows = []
    for _ in range(64):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"What is {a} + {b}?"},
                    {"role": "assistant", "content": f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}."},
                ]
            }
        )
    path = tmp_path_factory.mktemp("sft") / "train.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def run_trainer(model, data, ckpt, loss_type, steps, extra=(), dtype="float32"):
    cmd = TORCHRUN + [
        "-m", "dft_verl.trainer.sft",
        f"data.train_files={data}", f"model.path={model}",
        "data.train_batch_size=16", "data.micro_batch_size_per_gpu=4", "data.max_length=128",
        f"trainer.total_training_steps={'null' if steps is None else steps}", f"trainer.default_local_dir={ckpt}",
        "trainer.save_freq=2", "optim.lr=3e-3", f"loss.type={loss_type}",
        *cpu_overrides(dtype), *extra,
    ]
    proc = subprocess.run(cmd, env=cpu_env(), capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.mark.parametrize("loss_type", ["dft", "sft"])
def test_training_lowers_ce_and_checkpoints_resume(tiny_model_dir, sft_parquet, tmp_path, loss_type):
    ckpt = tmp_path / "ckpt"
    log = run_trainer(tiny_model_dir, sft_parquet, ckpt, loss_type, steps=4)
    ce = metric_series(log, "dft/ce")
    assert sorted(ce) == [1, 2, 3, 4], log[-3000:]
    # the cross-entropy of the training tokens falls under both objectives
    assert ce[4] < ce[1] - 0.05, ce
    loss = metric_series(log, "train/loss")
    weight = metric_series(log, "dft/weight")
    prob = metric_series(log, "dft/token_prob")
    if loss_type == "sft":
        assert loss[4] < loss[1]
        assert all(w == pytest.approx(1.0) for w in weight.values())
        assert loss[1] == pytest.approx(ce[1], rel=1e-3)  # fp32: verl's loss is the token-mean CE
    else:
        # DFT: the loss is the p-weighted CE, weight == mean token probability
        assert all(weight[s] == pytest.approx(prob[s], rel=1e-5) for s in weight)
        assert loss[1] < ce[1] * 0.05  # random model: p ~ 1/V, so the weighted loss is tiny next to CE
    assert (ckpt / "global_step_4" / "huggingface" / "model.safetensors").exists()
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "4"

    if loss_type == "sft":
        return  # resuming does not depend on the loss: the dft run checks it (and an epoch-end resume, below)
    # resume: the same run asked for 6 steps continues at step 5 from the saved state
    log2 = run_trainer(tiny_model_dir, sft_parquet, ckpt, loss_type, steps=6)
    ce2 = metric_series(log2, "dft/ce")
    assert sorted(ce2) == [5, 6], log2[-3000:]
    assert ce2[5] < ce[1]
    assert (ckpt / "global_step_6").is_dir()


def test_bf16_mixed_precision_computes_in_bf16_and_keeps_fp32_weights(tiny_model_dir, sft_parquet, tmp_path):
    """cpu_overrides("bfloat16") (TRAIN_DTYPE=bfloat16): the forward runs in bf16, so step 1's CE of the same model
    and batch moves off the fp32 value by bf16 rounding (not more); training still lowers it; the weights the
    optimiser keeps, and the checkpoint evaluation reads, stay fp32."""
    from safetensors import safe_open

    fp32 = metric_series(run_trainer(tiny_model_dir, sft_parquet, tmp_path / "fp32", "sft", steps=1), "dft/ce")
    log = run_trainer(tiny_model_dir, sft_parquet, tmp_path / "bf16", "sft", steps=4, dtype="bfloat16")
    ce = metric_series(log, "dft/ce")
    assert sorted(ce) == [1, 2, 3, 4], log[-3000:]
    assert ce[1] != fp32[1] and ce[1] == pytest.approx(fp32[1], rel=2e-2), (ce[1], fp32[1])
    assert ce[4] < ce[1] - 0.05, ce
    with safe_open(str(tmp_path / "bf16" / "global_step_4" / "huggingface" / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float32"}


def test_a_run_resumed_at_an_epoch_end_trains_like_a_clean_run(tiny_model_dir, sft_parquet, tmp_path):
    """64 rows, 16 per step: 4 steps per epoch. A run stopped after epoch 1 (checkpoint 4, saved after the epoch's last
    batch) and resumed for 2 epochs trains steps 5-8 on epoch 2's order, as a clean 2-epoch run does (verl 0.9.1 alone
    restores an exhausted loader there and ends after 4 steps: dft_verl.trainer.sft.DataOrderMixin)."""
    epochs = ["trainer.total_epochs=2", "trainer.save_freq=4"]
    clean = run_trainer(tiny_model_dir, sft_parquet, tmp_path / "clean", "dft", steps=None, extra=epochs)
    run_trainer(tiny_model_dir, sft_parquet, tmp_path / "resumed", "dft", steps=None,
                extra=["trainer.total_epochs=1", "trainer.save_freq=4"])
    resumed = run_trainer(tiny_model_dir, sft_parquet, tmp_path / "resumed", "dft", steps=None, extra=epochs)
    ce_clean, ce_resumed = metric_series(clean, "dft/ce"), metric_series(resumed, "dft/ce")
    assert sorted(ce_clean) == [1, 2, 3, 4, 5, 6, 7, 8], clean[-3000:]
    assert sorted(ce_resumed) == [5, 6, 7, 8], resumed[-3000:]
    assert all(ce_resumed[s] == pytest.approx(ce_clean[s], rel=1e-5) for s in ce_resumed), (ce_clean, ce_resumed)
    assert (tmp_path / "resumed" / "latest_checkpointed_iteration.txt").read_text().strip() == "8"


@pytest.mark.parametrize(
    "extra",
    [
        ["engine.ulysses_sequence_parallel_size=2"],
        ["model.lora_rank=8", "model.lora_alpha=16", "model.use_remove_padding=False"],
    ],
    ids=["ulysses_sp2", "lora_padded_attention"],
)
def test_verl_overrides_still_apply_with_dft(tiny_model_dir, sft_parquet, tmp_path, extra):
    """verl's own sequence-parallel / LoRA / remove-padding switches run under the DFT loss. The
    first step sees the random initial model, whose CE is close to ln(vocab size)."""
    import math

    from transformers import AutoConfig

    log = run_trainer(tiny_model_dir, sft_parquet, tmp_path / "ckpt", "dft", steps=2, extra=extra)
    ce = metric_series(log, "dft/ce")
    assert sorted(ce) == [1, 2], log[-3000:]
    assert ce[1] == pytest.approx(math.log(AutoConfig.from_pretrained(tiny_model_dir).vocab_size), abs=0.3)
    assert ce[2] < ce[1]


def test_unknown_loss_type_fails_before_training(tiny_model_dir, sft_parquet, tmp_path):
    cmd = [sys.executable, "-m", "dft_verl.trainer.sft", f"data.train_files={sft_parquet}",
           f"model.path={tiny_model_dir}", "loss.type=focal", *cpu_overrides()]
    proc = subprocess.run(cmd, env=cpu_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "loss.type='focal' is not supported" in proc.stderr
    assert "dft_geo" in proc.stderr  # lists the supported values


def test_iw_sft_reference_aligns_with_trainer_log_probs(tiny_model_dir, sft_parquet, tmp_path):
    """With the reference = the initial model, iw-SFT's first-step weight is exactly 1: the
    reference log-probs written by ref_logprobs line up token-for-token with the trainer's."""
    from dft_verl.trainer.ref_logprobs import compute_ref_logprobs

    ref = compute_ref_logprobs(tiny_model_dir, sft_parquet, str(tmp_path / "ref.parquet"), max_length=128)
    log = run_trainer(tiny_model_dir, ref, tmp_path / "ckpt", "iw_sft", steps=3)
    weight = metric_series(log, "dft/weight")
    assert weight[1] == pytest.approx(1.0, abs=1e-4)
    assert weight[3] > weight[1] + 0.05  # the policy moved away from the reference on its own data
    assert max(weight.values()) <= 2.0 + 1e-6  # clipped at w_max


def test_ray_variant_trains_and_checkpoints(tiny_model_dir, sft_parquet, tmp_path):
    cmd = [sys.executable, "-m", "dft_verl.trainer.sft_ray",
           f"data.train_files={sft_parquet}", f"model.path={tiny_model_dir}",
           "data.train_batch_size=16", "data.micro_batch_size_per_gpu=4", "data.max_length=128",
           "trainer.total_training_steps=3", f"trainer.default_local_dir={tmp_path / 'ckpt'}",
           "optim.lr=3e-3", "loss.type=dft", "trainer.n_gpus_per_node=2", *cpu_overrides()]
    proc = subprocess.run(cmd, env=cpu_env(), capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    ce = metric_series(log, "dft/ce")
    assert sorted(ce) == [1, 2, 3]
    assert ce[3] < ce[1] - 0.05
    assert (tmp_path / "ckpt" / "global_step_3" / "huggingface" / "model.safetensors").exists()


@pytest.fixture(scope="module")
def fixed_micro_batch_runs(tiny_model_dir, sft_parquet, tmp_path_factory):
    """Two steps each of dft, dft with verl's fused linear-cross-entropy, asft and eaft, from the same initial
    model and data order, with the official DFT normalisation (loss.normalization=micro_batch) over fixed
    micro-batches: 16 sequences, 2 ranks, 4 per micro-batch -> 2 micro-batches per rank; and dft with the
    token normalisation over the same micro-batches."""
    fixed = ["loss.normalization=micro_batch", "data.use_dynamic_bsz=False"]
    runs = {
        "dft": ("dft", fixed),
        "dft_fused": ("dft", fixed + ["model.use_fused_kernels=True"]),
        "asft": ("asft", fixed),
        "eaft": ("eaft", fixed),
        "dft_token": ("dft", ["loss.normalization=token", "data.use_dynamic_bsz=False"]),
    }
    root = tmp_path_factory.mktemp("loss_family")
    return {name: run_trainer(tiny_model_dir, sft_parquet, root / name, loss, steps=2, extra=extra)
            for name, (loss, extra) in runs.items()}


def test_fused_kernels_give_the_same_dft_training(fixed_micro_batch_runs):
    """model.use_fused_kernels=True (verl's torch backend: log-probs without [tokens x vocab] logits)
    trains DFT identically: same loss, cross-entropy and gradient norm at both steps (fp32)."""
    plain, fused = fixed_micro_batch_runs["dft"], fixed_micro_batch_runs["dft_fused"]
    assert "Using Torch backend for fused kernels" in fused
    assert "Using Torch backend for fused kernels" not in plain
    for key, rel in [("dft/weighted_loss", 1e-5), ("train/loss", 1e-5), ("dft/ce", 1e-6), ("train/grad_norm", 1e-4)]:
        a, b = metric_series(plain, key), metric_series(fused, key)
        assert sorted(a) == sorted(b) == [1, 2], key
        assert all(b[s] == pytest.approx(a[s], rel=rel) for s in a), (key, a, b)


def test_micro_batch_gradient_is_m_times_the_token_mean(fixed_micro_batch_runs):
    """verl's engine back-propagates each micro-batch's returned loss as is and logs the sum of their values
    (what micro_batch relies on, dft_verl/losses.py): at step 1 (same model, same micro-batches) the official
    update's grad_norm is about M = 2 times the token mean's (not exactly: its micro-batch means weigh tokens
    unequally) while the logged loss, the mean of the micro-batch means, stays near the token mean."""
    micro, token = fixed_micro_batch_runs["dft"], fixed_micro_batch_runs["dft_token"]
    ratio = metric_series(micro, "train/grad_norm")[1] / metric_series(token, "train/grad_norm")[1]
    assert 1.6 < ratio < 2.4, ratio
    loss_ratio = metric_series(micro, "train/loss")[1] / metric_series(token, "train/loss")[1]
    assert 0.8 < loss_ratio < 1.25, loss_ratio


def test_asft_anchor_starts_at_zero_and_grows(fixed_micro_batch_runs):
    """The frozen reference is the starting model, aligned token for token: at step 1 the KL is 0 and
    asft's loss is dft's; after one update the policy has moved and the anchor is positive."""
    asft, dft = fixed_micro_batch_runs["asft"], fixed_micro_batch_runs["dft"]
    kl = metric_series(asft, "dft/kl_anchor")
    assert sorted(kl) == [1, 2], asft[-3000:]
    assert abs(kl[1]) < 1e-6
    assert kl[2] > 1e-4
    assert metric_series(asft, "train/loss")[1] == pytest.approx(metric_series(dft, "train/loss")[1], rel=1e-5)
    # loss = (positive) dft part + 0.1 * KL
    loss = metric_series(asft, "train/loss")
    assert loss[2] > 0.1 * kl[2]


def test_eaft_entropy_reaches_the_loss_on_the_real_trainer(fixed_micro_batch_runs):
    """eaft's top-k entropy comes from the engine's logits (the same seam as the KL anchor): logged at both steps,
    in (0, 1), and with alpha = 1 the mean weight is the mean normalised entropy; the weighted loss sits below the
    unweighted cross-entropy (every weight <= 1) and, from the same start, the step-1 cross-entropy is dft's."""
    eaft, dft = fixed_micro_batch_runs["eaft"], fixed_micro_batch_runs["dft"]
    entropy, weight = metric_series(eaft, "dft/topk_entropy"), metric_series(eaft, "dft/weight")
    assert sorted(entropy) == [1, 2], eaft[-3000:]
    assert all(0.0 < h < 1.0 for h in entropy.values()), entropy
    assert all(weight[s] == pytest.approx(entropy[s], rel=1e-5) for s in entropy)
    ce, loss = metric_series(eaft, "dft/ce"), metric_series(eaft, "dft/weighted_loss")
    assert 0.0 < loss[1] < ce[1]
    assert ce[1] == pytest.approx(metric_series(dft, "dft/ce")[1], rel=1e-5)


def test_fused_kernels_refuse_untied_embeddings(tiny_model_dir, sft_parquet, tmp_path):
    """verl 0.9.1's FSDP2 wrap shards an untied lm_head on its own and the fused forward then fails
    deep in the first step; the trainer refuses at start-up instead, naming the model and the fix."""
    import json
    import shutil

    untied = tmp_path / "untied"
    shutil.copytree(tiny_model_dir, untied)
    config = json.loads((untied / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (untied / "config.json").write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "dft_verl.trainer.sft", f"data.train_files={sft_parquet}", f"model.path={untied}",
           "model.use_fused_kernels=True", *cpu_overrides()]
    proc = subprocess.run(cmd, env=cpu_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"{untied} has tie_word_embeddings=False" in proc.stderr
    assert "Set model.use_fused_kernels=False" in proc.stderr
