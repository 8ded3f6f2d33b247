"""dft_verl.table3: the rows and presets as data, what each row's steps run (argument lists built in Python, never
parsed back from text), the recipes' shell hygiene, and the shell scripts as thin launchers of the same plan."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dft_verl.table3 import launch, plan
from dft_verl.table3.rows import ROW_KEYS, ROWS, STAGES
from dft_verl.table3.settings import NAMES, PRESETS, SettingsError, resolve

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "table3"
SCRIPTS = sorted(RECIPES.glob("*.sh"))
SFT_FAMILY = {  # row -> (loss.type, training data under DATA_DIR)
    "sft": ("sft", "prepare/sft.parquet"),
    "dft_sft": ("dft", "prepare/sft.parquet"),
    "iw_sft_sft": ("iw_sft", "ref_logprobs/sft.parquet"),
    "rft": ("sft", "filter/sft.parquet"),
    "dft_offline": ("dft", "filter/sft.parquet"),
    "iw_sft_offline": ("iw_sft", "ref_logprobs/rft.parquet"),
}


def settings(tmp_path: Path, **env: str):
    """Settings as a caller with only ``env`` set would get them (relative paths from ``tmp_path``)."""
    base = {"DATA_DIR": str(tmp_path / "data"), "RUNS_DIR": str(tmp_path / "runs"), "CKPT_DIR": str(tmp_path / "ckpt")}
    return resolve({**base, **env}, cwd=tmp_path)


def commands(s, stage: str, *extra: str) -> list[list[str]]:
    return [launch.command(s, st.module, st.args, kind=st.kind, env=st.env, gpus=st.gpus, local=st.local)
            for st in plan.steps(s, stage, list(extra))]


def overrides(cmd: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in cmd if "=" in a and not a.startswith("-"))


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def module(cmd: list[str]) -> str:
    return cmd[cmd.index("-m") + 1]


# ------------------------------------------------------------------------------------------------ rows and settings


def test_rows_are_one_definition_with_the_paper_averages():
    assert ROW_KEYS == ("base", "sft", "iw_sft_sft", "dft_sft", "dpo", "rft", "ppo", "grpo", "iw_sft_offline",
                        "dft_offline")
    paper = {r.key: r.paper_average for r in ROWS}
    assert (paper["base"], paper["dft_offline"], paper["grpo"], paper["iw_sft_sft"]) == (15.92, 35.43, 32.00, None)
    assert STAGES == ("data", *ROW_KEYS, "report")
    from dft_verl import report
    from dft_verl.demo import run as demo

    assert report.ROWS is ROWS and demo.ALL_ROWS == ROW_KEYS


def test_caller_beats_preset_beats_default_and_paths_are_absolute(tmp_path):
    s = resolve({"PRESET": "cpu-tiny", "SFT_BATCH_SIZE": "6", "RUNS_DIR": "r"}, cwd=tmp_path)
    assert s.SFT_BATCH_SIZE == "6" and s.RL_BATCH_SIZE == "4" and s.SFT_LR == "5e-5"  # caller, preset, default
    assert s.RUNS_DIR == str(tmp_path / "r") and s.DATA_DIR == str(tmp_path / "r" / "data")  # {RUNS_DIR}/data
    assert s.MODEL_PATH == str(tmp_path / "r" / "data" / "tiny_model")
    paper = resolve({}, cwd=tmp_path)
    assert paper.MODEL_PATH == "Qwen/Qwen2.5-Math-1.5B"  # a hub id stays as it is
    assert resolve({"SFT_LR": ""}, cwd=tmp_path).SFT_LR == "5e-5"  # empty = unset (the recipes export empty knobs)


@pytest.mark.parametrize("env, message", [
    ({"PRESET": "cpu-huge"}, "unknown PRESET=cpu-huge; valid: cpu-small cpu-tiny paper"),
    ({"KEEP_TRAINING_STATE": "true"}, "KEEP_TRAINING_STATE=true: choose one of 0, 1"),
    ({"PROMPT_TEMPLATE": "qwen_boxed"}, "PROMPT_TEMPLATE=qwen_boxed: choose one of paper, qwen-boxed"),
    ({"NNODES": "two"}, "NNODES=two: a whole number"),
    ({"LOGGER": "neptune"}, "LOGGER=neptune: choose one of tensorboard, wandb, mlflow, console"),
])
def test_bad_settings_are_named(tmp_path, env, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        resolve(env, cwd=tmp_path)


def test_presets_set_only_known_settings():
    for name, values in PRESETS.items():
        assert set(values) <= set(NAMES), name


# ------------------------------------------------------------------------------------------------ what the rows run


def test_sft_family_rows_share_the_paper_optimiser(tmp_path):
    s = settings(tmp_path)
    data, ckpt, runs = tmp_path / "data", tmp_path / "ckpt", tmp_path / "runs"
    seen = {}
    for row, (loss, train_data) in SFT_FAMILY.items():
        cmds = commands(s, row)
        train = next(c for c in cmds if module(c) == "dft_verl.trainer.sft")
        assert train[:4] == ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=8"]
        o = overrides(train)
        assert o["loss.type"] == loss and o["data.train_files"] == str(data / train_data)
        assert o["trainer.default_local_dir"] == str(ckpt / row) and o["model.path"] == "Qwen/Qwen2.5-Math-1.5B"
        if loss == "iw_sft":  # reference log-probs first, on the row's data, at the training length
            ref = cmds[0]
            assert ref[:3] == [sys.executable, "-m", "dft_verl.trainer.ref_logprobs"]
            assert flag(ref, "--data") == str(data / SFT_FAMILY["sft" if row == "iw_sft_sft" else "rft"][1])
            assert flag(ref, "--out") == o["data.train_files"] and flag(ref, "--max-length") == o["data.max_length"]
            assert flag(ref, "--model") == "Qwen/Qwen2.5-Math-1.5B"
        ev = cmds[-1]
        assert ev[:3] == [sys.executable, "-m", "dft_verl.eval"]
        assert flag(ev, "--out") == str(runs / row / "eval")
        assert flag(ev, "--model") == str(ckpt / row / "global_step_LATEST" / "huggingface")
        seen[row] = {k: v for k, v in o.items() if k.startswith(("optim.", "data.train_batch", "data.max_length",
                                                                   "trainer.total_epochs"))}
    paper = {"optim.lr": "5e-5", "optim.lr_scheduler_type": "cosine", "optim.lr_warmup_steps_ratio": "0.1",
             "data.train_batch_size": "256", "data.max_length": "2048", "trainer.total_epochs": "1",
             # where the paper is silent, the official trainer's values and update (docs/losses.md)
             "optim.clip_grad": "1.0", "optim.betas": "[0.9,0.95]"}
    assert all(opt == paper for opt in seen.values()), seen
    official = {"loss.normalization": "micro_batch", "data.use_dynamic_bsz": "False", "trainer.seed": "0",
                "data.micro_batch_size_per_gpu": "4"}
    assert {k: o[k] for k in official} == official
    tiny = overrides(commands(settings(tmp_path, PRESET="cpu-tiny"), "dft_sft")[0])
    assert tiny["loss.normalization"] == "token" and "data.use_dynamic_bsz" not in tiny and "trainer.seed" not in tiny


def test_online_rows_use_verl_main_ppo_with_paper_values(tmp_path):
    s = settings(tmp_path)
    for row in ("grpo", "ppo"):
        train, ev = commands(s, row)
        assert train[:3] == [sys.executable, "-m", "verl.trainer.main_ppo"]
        assert "--config-path=pkg://dft_verl.config.online" in train and f"--config-name={row}" in train
        o = overrides(train)
        assert o["data.train_files"] == str(tmp_path / "data" / "prepare" / "rl.parquet")
        assert (o["actor_rollout_ref.actor.optim.lr"], o["data.train_batch_size"]) == ("1e-6", "256")
        assert o["actor_rollout_ref.actor.optim.lr_warmup_steps_ratio"] == "0.1"
        assert o["actor_rollout_ref.rollout.temperature"] == "1.0"
        assert o["trainer.default_local_dir"] == str(tmp_path / "ckpt" / row)
        assert flag(ev, "--model") == str(tmp_path / "ckpt" / row / "global_step_LATEST" / "actor" / "huggingface")
        assert (row == "grpo") == (o.get("actor_rollout_ref.rollout.n") == "4")


def test_dpo_row(tmp_path):
    ref, train, ev = commands(settings(tmp_path), "dpo")
    assert ref[:3] == [sys.executable, "-m", "dft_verl.dpo.ref_logprobs"]
    assert flag(ref, "--data") == str(tmp_path / "data" / "filter" / "dpo.parquet")
    assert train[:6] == ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=8", "-m", "dft_verl.dpo.train"]
    o = overrides(train)
    assert o["data.train_files"] == flag(ref, "--out")
    assert o["data.max_length"] == flag(ref, "--max-length") and o["data.truncation"] == flag(ref, "--truncation")
    assert {k: o[k] for k in ("optim.lr", "data.train_batch_size", "optim.lr_warmup_steps_ratio")} == \
        {"optim.lr": "1e-6", "data.train_batch_size": "128", "optim.lr_warmup_steps_ratio": "0.05"}
    assert flag(ev, "--model") == str(tmp_path / "ckpt" / "dpo" / "global_step_LATEST" / "huggingface")


def test_keep_training_state_0_prunes_each_row_between_training_and_evaluation(tmp_path):
    for row, sub in (("sft", "huggingface"), ("dpo", "huggingface"), ("grpo", "actor/huggingface")):
        cmds = commands(settings(tmp_path, KEEP_TRAINING_STATE="0"), row)
        modules = [module(c) for c in cmds]
        i = modules.index("dft_verl.checkpoints")
        assert modules[i + 1] == "dft_verl.eval" and modules[i - 1] in ("dft_verl.trainer.sft", "dft_verl.dpo.train",
                                                                         "verl.trainer.main_ppo"), modules
        assert cmds[i] == [sys.executable, "-m", "dft_verl.checkpoints", "--keep", sub, str(tmp_path / "ckpt" / row)]
        assert "dft_verl.checkpoints" not in [module(c) for c in commands(settings(tmp_path), row)]


def test_user_overrides_come_last_and_go_to_one_row(tmp_path):
    s = settings(tmp_path)
    train = commands(s, "grpo", "actor_rollout_ref.rollout.n=8", "trainer.total_epochs=3")[0]
    assert train[-2:] == ["actor_rollout_ref.rollout.n=8", "trainer.total_epochs=3"]  # hydra: the last one wins
    from dft_verl.table3.runner import Runner

    with pytest.raises(ValueError, match="overrides after -- apply to one row"):
        Runner(s).run(["sft", "grpo"], ["optim.lr=1"])


def test_base_row_only_evaluates_the_base_model(tmp_path):
    (ev,) = commands(settings(tmp_path, EVAL_ARGS="--k 4 --limit 2"), "base")
    assert ev == [sys.executable, "-m", "dft_verl.eval", "--model", "Qwen/Qwen2.5-Math-1.5B", "--out",
                  str(tmp_path / "runs" / "base" / "eval"), "--prompt-template", "paper", "--k", "4", "--limit", "2"]


def test_changing_the_iw_sft_reference_model_changes_the_reference_step(tmp_path):
    """The reference log-probs depend on IW_SFT_REF_MODEL through their command: a new reference is a new input."""
    a = next(plan.steps(settings(tmp_path), "iw_sft_offline"))
    b = next(plan.steps(settings(tmp_path, IW_SFT_REF_MODEL="other/model"), "iw_sft_offline"))
    assert a.name == b.name == "ref_logprobs" and a.args != b.args and "other/model" in b.reads


def test_multi_node_torchrun_and_ray_job_launchers(tmp_path):
    s = settings(tmp_path, NNODES="2", NODE_RANK="1", MASTER_ADDR="10.0.0.1", N_GPUS_PER_NODE="4")
    train = next(st for st in plan.steps(s, "dft_sft") if st.name == "train")
    cmd = launch.command(s, train.module, train.args, kind=train.kind)
    assert cmd[:6] == ["torchrun", "--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1", "--master_port=29500",
                       "--nproc_per_node=4"]
    assert overrides(cmd)["trainer.nnodes"] == "2"
    assert [st.name for st in plan.steps(s, "iw_sft_sft") if st.all_nodes] == ["train"]  # node 0 alone does the rest

    ray = settings(tmp_path, RAY_ADDRESS="http://head:8265")
    train, ev = commands(ray, "grpo")
    assert train[:4] == ["ray", "job", "submit", "--address=http://head:8265"]
    k = train.index("--")
    assert train[k + 1: k + 4] == ["python", "-m", "verl.trainer.main_ppo"]
    assert "--entrypoint-num-gpus=1" in ev
    sft = commands(ray, "sft")[0]
    assert sft[sft.index("--") + 1: sft.index("--") + 4] == ["python", "-m", "dft_verl.trainer.sft_ray"]
    assert commands(ray, "report")[0][:3] == [sys.executable, "-m", "dft_verl.report"]  # the report runs here
    # DPO on two nodes: verl's Ray trainer with the DPO loss, ranks on both (trainer.nnodes=2)
    dpo = commands(settings(tmp_path, RAY_ADDRESS="http://head:8265", NNODES="2"), "dpo")[1]
    assert dpo[dpo.index("--") + 1: dpo.index("--") + 4] == ["python", "-m", "dft_verl.dpo.train_ray"]
    assert overrides(dpo)["trainer.nnodes"] == "2" and not any(a.startswith("--entrypoint-num-gpus") for a in dpo)


def test_cpu_preset_changes_sizes_and_device_only(tmp_path):
    from dft_verl.trainer import cpu_overrides

    paper = {row: commands(settings(tmp_path), row) for row in ("sft", "dpo", "grpo")}
    tiny = {row: commands(settings(tmp_path, PRESET="cpu-tiny"), row) for row in ("sft", "dpo", "grpo")}
    added = ("dft_verl.checkpoints", "dft_verl.analysis.token_probs")  # KEEP_TRAINING_STATE=0, TOKEN_PROBS=1
    for row in paper:
        assert [module(c) for c in paper[row]] == [module(c) for c in tiny[row] if module(c) not in added], row
    sft = tiny["sft"][0]
    assert sft[:4] == ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    assert set(cpu_overrides()) <= set(sft) and set(cpu_overrides()) <= set(tiny["dpo"][1])
    assert overrides(sft)["loss.type"] == overrides(paper["sft"][0])["loss.type"]
    grpo, _, ev, probs = tiny["grpo"]
    assert flag(probs, "--device") == "cpu" and flag(probs, "--data").endswith("filter/sft.parquet")
    assert "+platform=cpu" in grpo and overrides(grpo)["data.max_response_length"] == "48"
    assert flag(ev, "--backend") == "hf" and flag(ev, "--benchmarks") == "math500"
    assert not any(a.startswith(("trainer.device", "+platform")) for c in paper.values() for a in c[0])


def test_the_train_dtype_bench_refuses_data_copied_from_an_earlier_run_of_its_demo(tmp_path):
    """bench/train_dtype.py trains rows from a demo's data, copied to OUT/data once: a second call reuses the copy;
    after the demo ran again (another filtered-data fingerprint) it stops, naming the copy, instead of training the
    demo's new settings on its old data."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("train_dtype_bench", Path(__file__).parents[1] / "bench" /
                                                  "train_dtype.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    demo, out = tmp_path / "demo", tmp_path / "out"
    (demo / "warmup" / "checkpoints" / "sft").mkdir(parents=True)
    (demo / "warmup" / "checkpoints" / "sft" / "latest_checkpointed_iteration.txt").write_text("3")
    (demo / "data" / "filter").mkdir(parents=True)
    (demo / "config.json").write_text(json.dumps({"preset": "cpu-small", "recipe_env": {"SFT_EPOCHS": "2"}}))
    manifest = demo / "data" / "filter" / "_manifest.json"
    manifest.write_text(json.dumps({"fingerprint": "first", "stage": "filter"}))
    env = bench.base_env(demo, out)
    assert env["DATA_DIR"] == str(out / "data") and env["SFT_EPOCHS"] == "2" and env["PRESET"] == "cpu-small"
    assert env["MODEL_PATH"].endswith("global_step_3/huggingface")
    assert json.loads((out / "data" / "filter" / "_manifest.json").read_text())["fingerprint"] == "first"
    assert bench.base_env(demo, out) == env  # the copy is reused
    manifest.write_text(json.dumps({"fingerprint": "second", "stage": "filter"}))
    with pytest.raises(SystemExit, match=r"copied from an earlier run .*fingerprint first, the demo's is now second"):
        bench.base_env(demo, out)


def test_train_dtype_bfloat16_is_fsdp2_mixed_precision_in_every_cpu_trainer(tmp_path):
    """TRAIN_DTYPE=bfloat16: bf16 parameters and compute, fp32 master weights and reduction, in the SFT family's and
    DPO's engine and in main_ppo's actor, reference and critic (composed as main_ppo composes it, then checked by
    verl's own config classes); the rollout samples in bf16 too. auto follows the CPU's native bf16."""
    from dft_verl.platform.cpu import native_bf16
    from dft_verl.table3.check import check_command, compose_config, split_hydra_args

    s = settings(tmp_path, PRESET="cpu-tiny", TRAIN_DTYPE="bfloat16")
    for row, i in (("sft", 0), ("dpo", 1)):
        o = overrides(commands(s, row)[i])
        assert (o["+engine.mixed_precision.param_dtype"], o["+engine.mixed_precision.reduce_dtype"]) == ("bf16", "fp32")
    fp32 = overrides(commands(settings(tmp_path, PRESET="cpu-tiny"), "sft")[0])
    assert fp32["+engine.mixed_precision.param_dtype"] == "fp32"
    for row in ("ppo", "grpo"):
        step = next(st for st in plan.steps(s, row) if st.name == "train")
        assert "+platform=cpu_bf16" in step.args
        cfg = compose_config(*split_hydra_args(step.module, step.args))
        engines = [cfg.actor_rollout_ref.actor.fsdp_config, cfg.actor_rollout_ref.ref.fsdp_config, cfg.critic.fsdp]
        assert [(e.mixed_precision.param_dtype, e.mixed_precision.reduce_dtype, e.model_dtype) for e in engines] == \
            [("bf16", "fp32", "fp32")] * 3
        # everything else of platform/cpu still applies
        assert (cfg.actor_rollout_ref.rollout.dtype, cfg.actor_rollout_ref.rollout.name, cfg.trainer.device) == \
            ("bfloat16", "hf", "cpu")
        check_command(step.module, step.args)
    # the dtype each train step records for the report: TRAIN_DTYPE on CPU, verl's bf16 on GPUs; no other step has one
    cases = ((s, "bfloat16"), (settings(tmp_path, PRESET="cpu-tiny"), "float32"), (settings(tmp_path), "bfloat16"))
    for st, want in cases:
        assert {(step.name, step.dtype) for row in ("sft", "dpo", "grpo") for step in plan.steps(st, row)
                if step.name in ("train", "eval")} == {("train", want), ("eval", None)}
    auto = settings(tmp_path, PRESET="cpu-tiny", TRAIN_DTYPE="auto").TRAIN_DTYPE
    assert auto == ("bfloat16" if native_bf16() else "float32")
    # GPUs: verl's own bf16 mixed precision, no override
    assert settings(tmp_path, TRAIN_DTYPE="auto").TRAIN_DTYPE == "bfloat16"
    assert not any("mixed_precision" in a for a in commands(settings(tmp_path, TRAIN_DTYPE="bfloat16"), "sft")[0])


def test_gen_dtype_samples_and_evaluates_in_bf16_on_cpu_with_the_hf_backend_only(tmp_path):
    """GEN_DTYPE=bfloat16: the pipeline's sampling (composed as the pipeline composes it) and every evaluation (parsed
    by dft_verl.eval's own parser) run in bf16; float32 leaves both commands as they were; a --dtype in EVAL_ARGS
    wins; GPUs and other backends ignore it; cpu-small's auto follows the CPU's native bf16."""
    from dft_verl.eval import build_parser
    from dft_verl.platform.cpu import native_bf16
    from dft_verl.table3.check import compose_config, split_hydra_args

    def data_and_eval(s):
        pipeline = next(st for st in plan.steps(s, "data") if st.module == "dft_verl.pipeline")
        ev = next(st for st in plan.steps(s, "sft") if st.name == "eval")
        return pipeline, build_parser().parse_args(ev.args).dtype

    bf16 = settings(tmp_path, PRESET="cpu-tiny", GEN_DTYPE="bfloat16", DATA_GENERATE_TRAIN="8")
    pipeline, eval_dtype = data_and_eval(bf16)
    cfg = compose_config(*split_hydra_args(pipeline.module, pipeline.args))
    assert (cfg.sample.backend, cfg.sample.backend_kwargs.dtype, eval_dtype) == ("hf", "bfloat16", "bfloat16")
    fp32 = settings(tmp_path, PRESET="cpu-tiny")
    pipeline, eval_dtype = data_and_eval(fp32)
    assert not any(".dtype=" in a for a in pipeline.args) and eval_dtype is None  # the hf default: float32
    given = settings(tmp_path, PRESET="cpu-tiny", GEN_DTYPE="bfloat16", EVAL_ARGS="--dtype float32")
    assert data_and_eval(given)[1] == "float32"
    for other in (settings(tmp_path, GEN_DTYPE="bfloat16"),  # GPUs: vLLM's own dtype
                  settings(tmp_path, PRESET="cpu-tiny", GEN_DTYPE="bfloat16", SAMPLE_BACKEND="vllm",
                       EVAL_BACKEND="vllm")):
        pipeline, eval_dtype = data_and_eval(other)
        assert not any(".dtype=" in a for a in pipeline.args) and eval_dtype is None
    small = settings(tmp_path, PRESET="cpu-small")
    assert small.GEN_DTYPE == ("bfloat16" if native_bf16() else "float32")
    assert settings(tmp_path, PRESET="cpu-small", GEN_DTYPE="float32").GEN_DTYPE == "float32"


def test_cpu_ray_jobs_get_the_cpu_platform_and_no_gpus(tmp_path):
    import json

    for cmd in commands(settings(tmp_path, PRESET="cpu-tiny", RAY_ADDRESS="http://127.0.0.1:8265"), "dpo"):
        assert cmd[:3] == ["ray", "job", "submit"] and not any(a.startswith("--entrypoint-num-gpus") for a in cmd)
        env = json.loads(next(a for a in cmd if a.startswith("--runtime-env-json="))[len("--runtime-env-json="):])
        assert env["env_vars"]["VERL_PLATFORM"] == "cpu"
    # on GPUs the reference log-probs' job reserves one; the trainer's ranks are Ray workers with their own GPUs
    ref, train, _ = commands(settings(tmp_path, RAY_ADDRESS="http://127.0.0.1:8265"), "dpo")
    assert "--entrypoint-num-gpus=1" in ref and not any(a.startswith("--entrypoint-num-gpus") for a in train)


def test_every_trained_row_logs_to_its_board_and_its_cost_records(tmp_path):
    """The board's backend, and verl's file logger (the metrics the row's cost is read from) beside the file the
    step's own counts go to: both cleared with the checkpoint when the inputs change."""
    s = settings(tmp_path)
    for row in ROW_KEYS[1:]:
        train = next(st for st in plan.steps(s, row) if st.name == "train")
        assert "trainer.logger=[console,tensorboard,file]" in train.args, row
        runs = tmp_path / "runs" / row
        assert train.env == {"TENSORBOARD_DIR": str(tmp_path / "runs" / "tensorboard" / row),
                             "DFT_VERL_COST_FILE": str(runs / "cost" / "train.json"),
                             "VERL_FILE_LOGGER_PATH": str(runs / "metrics" / "train.jsonl")}, row
        assert {str(runs / "cost" / "train.json"), str(runs / "metrics" / "train.jsonl")} <= set(train.clears), row
    wandb = next(st for st in plan.steps(settings(tmp_path, LOGGER="wandb"), "dpo") if st.name == "train")
    assert "trainer.logger=[console,wandb,file]" in wandb.args


def test_unknown_rows_are_refused_with_the_valid_ones():
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="unknown row 'nope'; valid: all data base sft"):
        plan.parse_stages(["sft", "nope"])
    assert plan.parse_stages(["report", "sft", "data"]) == ["data", "sft", "report"]  # table order


# ------------------------------------------------------------------------------------------------ the shell recipes


def test_one_recipe_per_table3_row():
    rows = {p.stem[len("run_"):] for p in SCRIPTS}
    assert rows == set(ROW_KEYS) | {"all", "data"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_recipe_is_a_thin_launcher(script):
    text = script.read_text()
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in lines
    assert re.search(r"^# Usage: bash recipes/table3/" + re.escape(script.name), text, re.M)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert not [n for n, line in enumerate(lines, 1) if re.search(r"\\[ \t]+$", line)]  # "\ " drops what follows
    knobs = re.findall(r"^(?:export )?([A-Z][A-Z0-9_]*)=\$\{\1:-", text, re.M)
    assert set(knobs) - {"ROWS"} <= set(NAMES), script.name  # a knob the orchestrator does not read changes nothing
    calls = [line for line in lines if "-m dft_verl.table3 run" in line]
    assert len(calls) == 1, script.name
    if script.stem not in ("run_all",):
        assert calls[0].endswith(f'run {script.stem[4:]} -- "$@"'), calls


def test_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    proc = subprocess.run(["shellcheck", "-x", "-S", "warning", *map(str, SCRIPTS), str(RECIPES.parent / "env.sh")],
                          capture_output=True, text=True, cwd=RECIPES)
    assert proc.returncode == 0, proc.stdout


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NAMES and k != "PYTHON"}
    return {**env, **extra}


def test_recipe_print_is_the_plan_and_env_knobs_reach_it(tmp_path):
    """What a recipe runs is `python -m dft_verl.table3 run <row>`: its knobs arrive as settings, "$@" arrives last."""
    out = subprocess.run([sys.executable, "-m", "dft_verl.table3", "print", "grpo", "--", "trainer.total_epochs=3"],
                         capture_output=True, text=True, env=_clean_env(GRPO_N="8", RUNS_DIR=str(tmp_path)))
    assert out.returncode == 0, out.stderr
    train = out.stdout.splitlines()[1]
    assert "actor_rollout_ref.rollout.n=8" in train and train.endswith("trainer.total_epochs=3")


def test_recipes_find_the_project_environment_or_say_what_to_activate(tmp_path):
    """No PYTHON and no .venv beside the recipes: python3 on PATH must import dft_verl, else the message says how."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\nexit 1\n")
    (fake / "python3").chmod(0o755)
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "recipes", repo / "recipes")
    proc = subprocess.run(["bash", str(repo / "recipes" / "table3" / "run_sft.sh")], capture_output=True, text=True,
                          env=_clean_env(PATH=f"{fake}:/usr/bin:/bin"))
    assert proc.returncode == 1
    assert "cannot import dft_verl: run 'bash scripts/install.sh'" in proc.stderr and "PYTHON=" in proc.stderr
