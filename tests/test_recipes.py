"""recipes/table3: shell hygiene, what each row's commands say (bash only, through the dry-run queue), and the
config check of every command against the installed verl (DRY_RUN=1, python -m dft_verl.recipe_check)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "table3"
SCRIPTS = sorted(RECIPES.glob("*.sh"))
SFT_FAMILY = {  # row -> (loss.type, training data under DATA_DIR)
    "sft": ("sft", "prepare/sft.parquet"),
    "dft_sft": ("dft", "prepare/sft.parquet"),
    "iw_sft_sft": ("iw_sft", "prepare/sft.parquet"),
    "rft": ("sft", "filter/sft.parquet"),
    "dft_offline": ("dft", "filter/sft.parquet"),
    "iw_sft_offline": ("iw_sft", "filter/sft.parquet"),
}
# Every variable common.sh or a recipe reads from the caller's environment.
RECIPE_ENV = re.compile(r"^(PRESET|MODEL_PATH|MODEL_BUILD|SAVE_FREQ|VERIFY_\w+|DATA_DIR|RUNS_DIR|CKPT_DIR|NNODES|N_GPUS_PER_NODE|NODE_RANK|MASTER_\w+|"
                        r"RAY_ADDRESS|PYTHON|DRY_RUN|RECIPE_CHECK_QUEUE|SFT_\w+|RL_\w+|DPO_\w+|GRPO_\w+|PPO_\w+|"
                        r"IW_SFT_\w+|EVAL_\w+|DATA_\w+|SAMPLE_\w+|ROWS|PROMPT_TEMPLATE|KEEP_TRAINING_STATE)$")


def table3_rows() -> list[str]:
    from dft_verl.report import ROWS

    return [r.key for r in ROWS]


def recipe_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not RECIPE_ENV.match(k)}
    env.update(PYTHON=sys.executable, DATA_DIR=str(tmp_path / "data"), RUNS_DIR=str(tmp_path / "runs"),
               CKPT_DIR=str(tmp_path / "ckpt"))
    env.update(extra)
    return env


def queued_commands(tmp_path: Path, script: str, *args: str, **env: str) -> list[list[str]]:
    """Run a recipe in dry-run mode with a caller-owned queue (bash only, nothing checked); its commands."""
    queue = tmp_path / f"queue-{script}-{len(list(tmp_path.glob('queue-*')))}.txt"
    proc = subprocess.run(["bash", str(RECIPES / script), *args], capture_output=True, text=True, timeout=60,
                          env=recipe_env(tmp_path, DRY_RUN="1", RECIPE_CHECK_QUEUE=str(queue), **env))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = queue.read_text().splitlines() if queue.exists() else []
    return [shlex.split(line) for line in lines if line.strip()]


def overrides(cmd: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in cmd if "=" in a and not a.startswith("-"))


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


# ------------------------------------------------------------------------------------------------ shell hygiene


def test_one_recipe_per_table3_row():
    rows = {p.stem[len("run_"):] for p in SCRIPTS if p.stem.startswith("run_")}
    assert rows == set(table3_rows()) | {"all", "data"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_line_continuation_followed_by_spaces(script):
    # "\ " at a line end escapes the space, ends the command there and silently drops every later argument.
    bad = [(n, line) for n, line in enumerate(script.read_text().splitlines(), 1) if re.search(r"\\[ \t]+$", line)]
    assert not bad, f"{script.name}: backslash followed by whitespace at line end: {bad}"


def test_line_continuation_check_catches_the_bug(tmp_path):
    """The pattern above really is fatal: the argument after such a line never reaches the command."""
    script = tmp_path / "bad.sh"
    script.write_text("printf '%s\\n' a \\ \n    b\n")
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True).stdout.split()
    assert "b" not in out[:2]


@pytest.mark.parametrize("script", [p for p in SCRIPTS if p.name != "common.sh"], ids=lambda p: p.name)
def test_house_style(script):
    text = script.read_text()
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -xeuo pipefail" in lines
    assert re.search(r"^# Usage: bash recipes/table3/" + re.escape(script.name), text, re.M)
    assert "# ---- user-adjustable ----" in lines
    if script.stem.startswith("run_") and script.stem not in ("run_base", "run_all"):
        assert '"${extra_args[@]}" "$@"' in text, "the command must end in \"${extra_args[@]}\" \"$@\""


def test_user_settings_are_never_reassigned():
    """VAR=${VAR:-default} is the only assignment of a user setting in any recipe."""
    texts = {p.name: p.read_text() for p in SCRIPTS}
    defaults = {}
    for name, text in texts.items():
        for var in re.findall(r"^([A-Z][A-Z0-9_]*)=\$\{\1:-", text, re.M):
            defaults.setdefault(var, []).append(name)
    assert {"MODEL_PATH", "DATA_DIR", "NNODES", "N_GPUS_PER_NODE", "SFT_LR", "RL_LR", "DPO_LR"} <= set(defaults)
    for var, where in defaults.items():
        assert len(where) == 1, f"{var} has defaults in {where}"
        for name, text in texts.items():
            assigns = re.findall(rf"^\s*(?:export\s+)?{var}=(.*)$", text, re.M)
            assert all(a.startswith(f"${{{var}:-") for a in assigns), f"{name} reassigns {var}: {assigns}"


def test_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    proc = subprocess.run(["shellcheck", "-x", "-e", "SC1091", "-S", "warning", *map(str, SCRIPTS)],
                          capture_output=True, text=True, cwd=RECIPES)
    assert proc.returncode == 0, proc.stdout


# ------------------------------------------------------------------------------ what the rows run (bash only)


def test_sft_family_rows_share_the_paper_optimiser(tmp_path):
    data, ckpt, runs = tmp_path / "data", tmp_path / "ckpt", tmp_path / "runs"
    seen = {}
    for row, (loss, train_data) in SFT_FAMILY.items():
        cmds = queued_commands(tmp_path, f"run_{row}.sh")
        train = next(c for c in cmds if "dft_verl.trainer.sft" in c)
        assert train[:4] == ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=8"]
        o = overrides(train)
        assert o["loss.type"] == loss
        assert o["trainer.default_local_dir"] == str(ckpt / row)
        assert o["model.path"] == "Qwen/Qwen2.5-Math-1.5B"
        if loss == "iw_sft":  # reference log-probs first, on the row's data, at the training length
            ref = cmds[0]
            assert ref[:3] == [sys.executable, "-m", "dft_verl.trainer.ref_logprobs"]
            assert flag(ref, "--data") == str(data / train_data)
            assert flag(ref, "--out") == o["data.train_files"]
            assert flag(ref, "--max-length") == o["data.max_length"]
            assert flag(ref, "--model") == "Qwen/Qwen2.5-Math-1.5B"
        else:
            assert o["data.train_files"] == str(data / train_data)
        ev = cmds[-1]
        assert ev[:3] == [sys.executable, "-m", "dft_verl.eval"]
        assert flag(ev, "--out") == str(runs / row / "eval")
        assert flag(ev, "--model") == str(ckpt / row / "global_step_LATEST" / "huggingface")
        seen[row] = {k: v for k, v in o.items() if k.startswith(("optim.", "data.train_batch", "data.max_length",
                                                                   "trainer.total_epochs"))}
    paper = {"optim.lr": "5e-5", "optim.lr_scheduler_type": "cosine", "optim.lr_warmup_steps_ratio": "0.1",
             "data.train_batch_size": "256", "data.max_length": "2048", "trainer.total_epochs": "1"}
    for row, opt in seen.items():
        assert opt == paper, row


def test_online_rows_use_verl_main_ppo_with_paper_values(tmp_path):
    data, ckpt, runs = tmp_path / "data", tmp_path / "ckpt", tmp_path / "runs"
    for row in ("grpo", "ppo"):
        train, ev = queued_commands(tmp_path, f"run_{row}.sh")
        assert train[:3] == [sys.executable, "-m", "verl.trainer.main_ppo"]
        assert "--config-path=pkg://dft_verl.config.online" in train
        assert f"--config-name={row}" in train
        o = overrides(train)
        assert o["data.train_files"] == str(data / "prepare" / "rl.parquet")
        assert (o["actor_rollout_ref.actor.optim.lr"], o["data.train_batch_size"]) == ("1e-6", "256")
        assert o["actor_rollout_ref.actor.optim.lr_warmup_steps_ratio"] == "0.1"
        assert o["actor_rollout_ref.rollout.temperature"] == "1.0"
        assert o["trainer.default_local_dir"] == str(ckpt / row)
        assert flag(ev, "--model") == str(ckpt / row / "global_step_LATEST" / "actor" / "huggingface")
        assert flag(ev, "--out") == str(runs / row / "eval")
        if row == "grpo":
            assert o["actor_rollout_ref.rollout.n"] == "4"


def test_dpo_row(tmp_path):
    data, ckpt = tmp_path / "data", tmp_path / "ckpt"
    ref, train, ev = queued_commands(tmp_path, "run_dpo.sh")
    assert ref[:3] == [sys.executable, "-m", "dft_verl.dpo.ref_logprobs"]
    assert flag(ref, "--data") == str(data / "filter" / "dpo.parquet")
    assert train[:5] == ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=8", "-m"]
    assert train[5] == "dft_verl.dpo.train"
    o = overrides(train)
    assert o["data.train_files"] == flag(ref, "--out")
    assert o["data.max_length"] == flag(ref, "--max-length") and o["data.truncation"] == flag(ref, "--truncation")
    paper = {"optim.lr": "1e-6", "data.train_batch_size": "128", "optim.lr_warmup_steps_ratio": "0.05"}
    assert {k: o[k] for k in paper} == paper
    assert flag(ev, "--model") == str(ckpt / "dpo" / "global_step_LATEST" / "huggingface")


def test_keep_training_state_0_prunes_each_row_between_training_and_evaluation(tmp_path):
    ckpt = tmp_path / "ckpt"
    trainers = {"dft_verl.trainer.sft", "dft_verl.dpo.train", "verl.trainer.main_ppo"}
    for row, sub in (("sft", "huggingface"), ("dpo", "huggingface"), ("grpo", "actor/huggingface")):
        cmds = queued_commands(tmp_path, f"run_{row}.sh", KEEP_TRAINING_STATE="0")
        modules = [c[c.index("-m") + 1] for c in cmds]
        i = modules.index("dft_verl.checkpoints")
        assert modules[i - 1] in trainers and modules[i + 1] == "dft_verl.eval", modules
        assert cmds[i] == [sys.executable, "-m", "dft_verl.checkpoints", "--keep", sub, str(ckpt / row)]
        assert flag(cmds[i + 1], "--model") == str(ckpt / row / "global_step_LATEST" / sub)
        default = queued_commands(tmp_path, f"run_{row}.sh")  # 1: verl's whole checkpoints stay
        assert [c for c in default if "dft_verl.checkpoints" in c] == [] and len(default) == len(cmds) - 1
    bad = subprocess.run(["bash", str(RECIPES / "run_sft.sh")], capture_output=True, text=True, timeout=60,
                         env=recipe_env(tmp_path, DRY_RUN="1", KEEP_TRAINING_STATE="true"))
    assert bad.returncode == 2 and "KEEP_TRAINING_STATE=true: choose 1" in bad.stderr


def test_user_overrides_come_last(tmp_path):
    train = queued_commands(tmp_path, "run_grpo.sh", "actor_rollout_ref.rollout.n=8", "trainer.total_epochs=3")[0]
    assert train[-2:] == ["actor_rollout_ref.rollout.n=8", "trainer.total_epochs=3"]  # hydra: last one wins


def test_base_row_only_evaluates_the_base_model(tmp_path):
    (ev,) = queued_commands(tmp_path, "run_base.sh", MODEL_PATH="Qwen/Qwen2.5-Math-1.5B", EVAL_ARGS="--k 4 --limit 2")
    assert ev == [sys.executable, "-m", "dft_verl.eval", "--model", "Qwen/Qwen2.5-Math-1.5B",
                  "--out", str(tmp_path / "runs" / "base" / "eval"), "--prompt-template", "paper", "--k", "4",
                  "--limit", "2"]


def test_finished_work_is_skipped(tmp_path):
    (tmp_path / "runs" / "dft_sft" / "eval").mkdir(parents=True)
    (tmp_path / "runs" / "dft_sft" / "train.done").write_text("done\n")
    (tmp_path / "runs" / "dft_sft" / "eval" / "results.json").write_text("{}\n")
    assert queued_commands(tmp_path, "run_dft_sft.sh") == []


def test_multi_node_torchrun_and_ray_job_launchers(tmp_path):
    cmds = queued_commands(tmp_path, "run_dft_sft.sh", NNODES="2", NODE_RANK="1", MASTER_ADDR="10.0.0.1",
                           N_GPUS_PER_NODE="4", KEEP_TRAINING_STATE="0")
    assert len(cmds) == 1  # only node 0 prunes checkpoints and evaluates
    assert cmds[0][:6] == ["torchrun", "--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1",
                           "--master_port=29500", "--nproc_per_node=4"]
    assert overrides(cmds[0])["trainer.nnodes"] == "2"
    (train,) = queued_commands(tmp_path, "run_iw_sft_sft.sh", NNODES="2", NODE_RANK="1")
    assert "dft_verl.trainer.sft" in train  # node 0 alone writes the reference log-probs

    train, ev = queued_commands(tmp_path, "run_grpo.sh", RAY_ADDRESS="http://head:8265")
    assert train[:4] == ["ray", "job", "submit", "--address=http://head:8265"]
    assert train[train.index("--") + 1 : train.index("--") + 4] == ["python", "-m", "verl.trainer.main_ppo"]
    assert "--entrypoint-num-gpus=1" in ev
    sft = queued_commands(tmp_path, "run_sft.sh", RAY_ADDRESS="http://head:8265")[0]
    assert sft[sft.index("--") + 1 : sft.index("--") + 4] == ["python", "-m", "dft_verl.trainer.sft_ray"]


def test_run_all_resolves_relative_paths_from_the_callers_directory(tmp_path):
    queue = tmp_path / "q.txt"
    env = recipe_env(tmp_path, DRY_RUN="1", RECIPE_CHECK_QUEUE="q.txt", DATA_DIR="d", RUNS_DIR="r", CKPT_DIR="c",
                     EVAL_DATA_DIR="bench")
    proc = subprocess.run(["bash", str(RECIPES / "run_all.sh"), "sft"], capture_output=True, text=True, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    train, ev, report = [shlex.split(line) for line in queue.read_text().splitlines()]
    assert overrides(train)["data.train_files"] == str(tmp_path / "d" / "prepare" / "sft.parquet")
    assert overrides(train)["trainer.default_local_dir"] == str(tmp_path / "c" / "sft")
    assert flag(ev, "--out") == str(tmp_path / "r" / "sft" / "eval")
    assert flag(ev, "--data-dir") == str(tmp_path / "bench")
    assert report[-1] == str(tmp_path / "r")


def test_run_all_rejects_an_unknown_row(tmp_path):
    proc = subprocess.run(["bash", str(RECIPES / "run_all.sh"), "sft", "nope"], capture_output=True, text=True,
                          env=recipe_env(tmp_path, DRY_RUN="1", RECIPE_CHECK_QUEUE=str(tmp_path / "q")))
    assert proc.returncode == 2 and "unknown row 'nope'; valid:" in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("unknown row 'nope'; valid:")]
    assert sorted(line.split("valid:")[1].split()) == sorted(table3_rows() + ["data"])


# ------------------------------------------------------------------------------------------------ presets

PRESETS = sorted(p.stem for p in (RECIPES / "presets").glob("*.sh"))


def test_unknown_preset_lists_the_valid_ones(tmp_path):
    proc = subprocess.run(["bash", str(RECIPES / "run_sft.sh")], capture_output=True, text=True,
                          env=recipe_env(tmp_path, DRY_RUN="1", PRESET="cpu-huge"))
    assert proc.returncode == 2
    assert f"unknown PRESET=cpu-huge; valid: {' '.join(PRESETS)}" in proc.stderr
    assert PRESETS == ["cpu-small", "cpu-tiny", "paper"]


def test_presets_only_set_defaults_of_known_settings():
    """A preset line is VAR=${VAR:-value} for a setting some recipe reads (a typo would silently change nothing)."""
    known = set()
    for script in SCRIPTS:
        known |= set(re.findall(r"^([A-Z][A-Z0-9_]*)=\$\{\1:-", script.read_text(), re.M))
    for preset in PRESETS:
        for line in (RECIPES / "presets" / f"{preset}.sh").read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            m = re.match(r"^([A-Z][A-Z0-9_]*)=\$\{\1:-.*\}$", line)
            assert m, f"{preset}.sh: not a VAR=${{VAR:-value}} line: {line!r}"
            assert m.group(1) in known, f"{preset}.sh sets {m.group(1)}, which no recipe reads"


def test_cpu_preset_changes_sizes_and_device_only(tmp_path):
    from dft_verl.trainer import cpu_overrides

    paper = {row: queued_commands(tmp_path, f"run_{row}.sh") for row in ("sft", "dpo", "grpo")}
    tiny = {row: queued_commands(tmp_path, f"run_{row}.sh", PRESET="cpu-tiny", SFT_BATCH_SIZE="6")
            for row in ("sft", "dpo", "grpo")}
    for row in paper:  # same entry points; the CPU presets add only the Fig. 2 token probabilities (TOKEN_PROBS=1)
        tiny_modules = [c[c.index("-m") + 1] for c in tiny[row]]  # and keep only HF weights (KEEP_TRAINING_STATE=0)
        assert tiny_modules[-1] == "dft_verl.analysis.token_probs", row
        assert tiny_modules[-3] == "dft_verl.checkpoints", row
        added = ("dft_verl.checkpoints", "dft_verl.analysis.token_probs")
        assert [c[c.index("-m") + 1] for c in paper[row]] == [m for m in tiny_modules if m not in added], row
    sft = tiny["sft"][0]
    assert sft[:4] == ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    assert sft[-len(cpu_overrides()):] == cpu_overrides()  # the one definition of the CPU overrides
    assert overrides(sft)["data.train_batch_size"] == "6"  # a variable set by the caller beats the preset
    assert overrides(sft)["loss.type"] == overrides(paper["sft"][0])["loss.type"]
    dpo = tiny["dpo"][1]
    assert set(cpu_overrides()) <= set(dpo)
    grpo, _, ev, probs = tiny["grpo"]
    assert flag(probs, "--device") == "cpu" and flag(probs, "--data").endswith("filter/sft.parquet")
    assert "+platform=cpu" in grpo and overrides(grpo)["data.max_response_length"] == "48"
    assert flag(ev, "--backend") == "hf" and flag(ev, "--benchmarks") == "math500"
    assert not any(a.startswith(("trainer.device", "+platform")) for c in paper.values() for a in c[0])


def test_cpu_ray_jobs_get_the_cpu_platform_and_no_gpus(tmp_path):
    import json

    cmds = queued_commands(tmp_path, "run_dpo.sh", PRESET="cpu-tiny", RAY_ADDRESS="http://127.0.0.1:8265")
    for cmd in cmds:
        assert cmd[:3] == ["ray", "job", "submit"]
        assert not any(a.startswith("--entrypoint-num-gpus") for a in cmd), cmd
        env = json.loads(next(a for a in cmd if a.startswith("--runtime-env-json="))[len("--runtime-env-json="):])
        assert env["env_vars"]["VERL_PLATFORM"] == "cpu"
    gpu = queued_commands(tmp_path, "run_dpo.sh", RAY_ADDRESS="http://127.0.0.1:8265")
    assert "--entrypoint-num-gpus=8" in gpu[1]


# ---------------------------------------------------------------------- DRY_RUN: configs against installed verl


def dry_run(tmp_path: Path, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RECIPES / script), *args], capture_output=True, text=True, timeout=600,
                          env=recipe_env(tmp_path, DRY_RUN="1", **env))


@pytest.mark.slow
def test_run_all_dry_run_checks_every_command(tmp_path):
    proc = dry_run(tmp_path, "run_all.sh")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    printed = [line for line in proc.stdout.splitlines() if line.startswith("DRY_RUN: ")]
    assert re.search(rf"^recipe_check: {len(printed)} ok, 0 failed$", proc.stdout, re.M), proc.stdout[-2000:]
    outs = [flag(shlex.split(line[len("DRY_RUN: "):]), "--out") for line in printed if "dft_verl.eval" in line]
    assert sorted(outs) == sorted(str(tmp_path / "runs" / row / "eval") for row in table3_rows())
    assert "dft_verl.report" in printed[-1]
    assert sum("dft_verl.pipeline" in line for line in printed) == 1


@pytest.mark.slow
def test_single_recipe_dry_run_and_a_bad_override(tmp_path):
    ok = dry_run(tmp_path, "run_grpo.sh")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert re.search(r"^recipe_check: 2 ok, 0 failed$", ok.stdout, re.M)
    assert "adv_estimator=grpo" in ok.stdout and "reward=pkg://dft_verl.rewards:compute_score" in ok.stdout

    bad = dry_run(tmp_path, "run_grpo.sh", "actor_rollout_ref.actor.optim.lrr=1e-6")
    assert bad.returncode == 1
    assert "unknown key 'actor_rollout_ref.actor.optim.lrr'" in bad.stderr
    assert re.search(r"^recipe_check: 1 ok, 1 failed$", bad.stdout, re.M)
