"""Config check behind the recipes' ``DRY_RUN=1``: does each command resolve against the installed verl?

A recipe command is parsed the way its launcher would run it (``ray job submit ... --``, ``torchrun ...
-m``, ``python -m``), then checked by what its entry point is:

- hydra entry points (verl's ``main_ppo`` and SFT trainers, ``dft_verl.trainer.sft``/``sft_ray``,
  ``dft_verl.dpo.train``, ``dft_verl.pipeline``): the config the command would run with is composed
  with hydra's compose API from the same config module or directory and the same overrides
  (``--config-path``/``--config-name`` honoured). Hydra rejects an
  override of a key the config does not have; that failure is reported with the key. The composed
  config then goes through the checks the entry point itself makes before it touches a GPU:
  ``main_ppo``: verl's ``validate_config`` (batch sizes, micro-batch settings, actor dataclass),
  the critic dataclass, the advantage estimator, policy loss and rollout names against verl's
  registries, and the custom reward function loaded through verl's own loader;
  SFT/DPO trainers: the optimiser/engine/checkpoint dataclasses and the ``loss:`` (dft_sft) or ``dpo:``
  (dpo) block; the pipeline: every mandatory value of the stages it will run, and prepare's prompt template.
  Model weights and data files are not opened (a dry run must work on a laptop without them).
- any other ``python -m`` module (eval, report, reference log-probs): the module must exist; when it has a
  ``build_parser()`` returning an ``argparse.ArgumentParser`` the arguments are parsed with it.

Usage:
    python -m dft_verl.recipe_check -- python -m verl.trainer.main_ppo --config-name=grpo ...
    python -m dft_verl.recipe_check --queue cmds.txt      # one shell-quoted command per line
Exit status 0 when every command passes, 1 otherwise (each failure printed with its command).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

DFT_VERL_CONFIG_DIR = Path(__file__).resolve().parent / "config"

# entry module -> (config source, default config name). A config source is "pkg://<module>" or a directory.
HYDRA_ENTRIES: dict[str, tuple[str, str]] = {
    "verl.trainer.main_ppo": ("pkg://verl.trainer.config", "ppo_trainer"),
    "verl.trainer.sft_trainer": ("pkg://verl.trainer.config", "sft_trainer_engine"),
    "verl.trainer.sft_trainer_ray": ("pkg://verl.trainer.config", "sft_trainer_engine"),
    "dft_verl.trainer.sft": (str(DFT_VERL_CONFIG_DIR), "dft_sft"),
    "dft_verl.trainer.sft_ray": (str(DFT_VERL_CONFIG_DIR), "dft_sft"),
    "dft_verl.dpo.train": (str(DFT_VERL_CONFIG_DIR), "dpo"),
    "dft_verl.pipeline": (str(DFT_VERL_CONFIG_DIR / "pipeline"), "pipeline"),
}
PIPELINE_STAGES = ("prepare", "sample", "verify", "filter")
for _stage in PIPELINE_STAGES:
    HYDRA_ENTRIES[f"dft_verl.pipeline.{_stage}"] = HYDRA_ENTRIES["dft_verl.pipeline"]
PPO_ENTRIES = {"verl.trainer.main_ppo"}
PIPELINE_ENTRIES = {"dft_verl.pipeline", *(f"dft_verl.pipeline.{s}" for s in PIPELINE_STAGES)}

_PYTHON_RE = re.compile(r"(^|/)python(\d+(\.\d+)?)?$")
_ENV_ASSIGN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# torchrun / ray job submit options that take a separate value (``--opt value``)
_TORCHRUN_VALUE_OPTS = {
    "--nnodes", "--nproc_per_node", "--nproc-per-node", "--node_rank", "--node-rank", "--master_addr",
    "--master-addr", "--master_port", "--master-port", "--rdzv_backend", "--rdzv-backend", "--rdzv_endpoint",
    "--rdzv-endpoint", "--rdzv_id", "--rdzv-id", "--rdzv_conf", "--rdzv-conf", "--max_restarts",
    "--max-restarts", "--monitor_interval", "--monitor-interval", "--start_method", "--start-method",
    "--role", "--log_dir", "--log-dir", "-r", "--redirects", "-t", "--tee", "--local_addr", "--local-addr",
}


class RecipeCheckError(Exception):
    """A command does not resolve; the message names the command, the config and the cause."""


@dataclass
class Launch:
    """What a recipe command runs: a Python module with its arguments, and how it was launched."""

    module: str
    args: list[str]
    launcher: str  # "python", "torchrun", "ray-job"
    command: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.launcher}: python -m {self.module} ({len(self.args)} args)"


def parse_command(argv: list[str]) -> Launch:
    """The module and arguments a launcher command would run (``ray job submit``/``torchrun``/``python``)."""
    command = list(argv)
    rest = list(argv)
    launcher = "python"
    while rest and (_ENV_ASSIGN_RE.match(rest[0]) or rest[0] == "env"):
        rest.pop(0)
    if not rest:
        raise RecipeCheckError(f"empty command: {shlex.join(command)!r}")
    if rest[0] == "ray" and rest[1:3] == ["job", "submit"]:
        if "--" not in rest:
            raise RecipeCheckError(f"`ray job submit` without `--` before the entrypoint: {shlex.join(command)}")
        rest = rest[rest.index("--") + 1 :]
        launcher = "ray-job"
        while rest and (_ENV_ASSIGN_RE.match(rest[0]) or rest[0] == "env"):
            rest.pop(0)
    head = os.path.basename(rest[0]) if rest else ""
    if head == "torchrun":
        launcher = "torchrun" if launcher == "python" else launcher
        i = 1
        while i < len(rest) and rest[i] != "-m" and rest[i].startswith("-"):
            i += 2 if rest[i] in _TORCHRUN_VALUE_OPTS else 1
        if i >= len(rest) or rest[i] != "-m" or i + 1 >= len(rest):
            raise RecipeCheckError(f"torchrun command without `-m <module>`: {shlex.join(command)}")
        return Launch(rest[i + 1], rest[i + 2 :], launcher, command)
    if _PYTHON_RE.search(rest[0] if rest else ""):
        i = 1
        while i < len(rest) and rest[i] in ("-u", "-O", "-B", "-E", "-s"):
            i += 1
        if i + 1 < len(rest) and rest[i] == "-m":
            return Launch(rest[i + 1], rest[i + 2 :], launcher, command)
        raise RecipeCheckError(f"python command is not `python -m <module>`: {shlex.join(command)}")
    raise RecipeCheckError(f"unknown launcher {rest[0]!r} (expected python, torchrun or ray job submit): "
                           f"{shlex.join(command)}")


# ------------------------------------------------------------------------------------------------------
# hydra entry points
# ------------------------------------------------------------------------------------------------------


def split_hydra_args(module: str, args: list[str]) -> tuple[str, str, list[str]]:
    """(config source, config name, overrides) for a hydra entry point called with ``args``."""
    source, name = HYDRA_ENTRIES[module]
    overrides: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        for flag in ("--config-path", "-cp", "--config-name", "-cn"):
            if a == flag or a.startswith(flag + "="):
                if a == flag:
                    if i + 1 >= len(args):
                        raise RecipeCheckError(f"{flag} without a value")
                    value, i = args[i + 1], i + 2
                else:
                    value, i = a.split("=", 1)[1], i + 1
                if flag in ("--config-path", "-cp"):
                    source = value
                else:
                    name = value
                break
        else:
            if a.startswith("-"):
                raise RecipeCheckError(f"hydra flag {a!r} is not supported in a recipe (only --config-path/"
                                       "--config-name and key=value overrides)")
            overrides.append(a)
            i += 1
    if name.endswith(".yaml"):
        name = name[: -len(".yaml")]
    return source, name, overrides


def compose_config(source: str, name: str, overrides: list[str]):
    """Compose ``name`` from ``source`` ("pkg://module" or a directory) with ``overrides``, as hydra.main would."""
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if source.startswith("pkg://"):
        ctx = initialize_config_module(config_module=source[len("pkg://") :], version_base=None)
    else:
        if not os.path.isabs(source):
            raise RecipeCheckError(f"--config-path must be absolute or pkg://module (hydra resolves a relative "
                                   f"one against the entry point's file), got {source!r}")
        ctx = initialize_config_dir(config_dir=source, version_base=None)
    try:
        with ctx:
            return compose(config_name=name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError, ImportError) as e:
        msg = str(e).strip()
        bad = re.search(r"Could not override '([^']+)'", msg)
        hint = f"unknown key {bad.group(1)!r}: " if bad else ""
        raise RecipeCheckError(f"config {name!r} from {source} does not compose: {hint}{msg}") from None


def check_ppo_config(cfg) -> list[str]:
    """The checks verl.trainer.main_ppo makes before starting Ray, plus registry look-ups. Returns notes."""
    import warnings

    from omegaconf import OmegaConf, open_dict
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    notes = []
    est = cfg.algorithm.adv_estimator
    if est not in core_algos.ADV_ESTIMATOR_REGISTRY:
        raise RecipeCheckError(f"algorithm.adv_estimator={est!r} is not a verl advantage estimator; "
                               f"supported: {sorted(core_algos.ADV_ESTIMATOR_REGISTRY)}")
    loss_mode = cfg.actor_rollout_ref.actor.policy_loss.loss_mode
    if loss_mode not in core_algos.POLICY_LOSS_REGISTRY:
        raise RecipeCheckError(f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode!r} is not a verl policy "
                               f"loss; supported: {sorted(core_algos.POLICY_LOSS_REGISTRY)}")
    if OmegaConf.select(cfg, "ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM") == "cpu":
        from dft_verl.plugin import register_cpu_mode  # what every Ray worker of this run registers

        register_cpu_mode()
    mode = cfg.trainer.v1.trainer_mode
    try:
        from verl.trainer.ppo.v1 import get_trainer_cls

        get_trainer_cls(mode)
    except ValueError as e:
        raise RecipeCheckError(f"trainer.v1.trainer_mode={mode!r}: {e}") from None
    rollout = cfg.actor_rollout_ref.rollout.name
    if rollout not in RolloutReplicaRegistry._registry:
        raise RecipeCheckError(f"actor_rollout_ref.rollout.name={rollout!r} is not a verl rollout; "
                               f"supported: {sorted(RolloutReplicaRegistry._registry)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Disabled critic as adv_estimator != gae"
            use_ref, use_critic = need_reference_policy(cfg), need_critic(cfg)
            # validate_config builds the critic dataclass, whose HFModelConfig downloads the model's HF
            # config; the critic is checked below with its model left out instead.
            validate_config(config=cfg, use_reference_policy=use_ref, use_critic=False)
            if use_critic:
                critic = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False)).critic
                with open_dict(critic):
                    critic.model = None
                n_gpus = cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes
                omega_conf_to_dataclass(critic).validate(n_gpus, cfg.data.train_batch_size)
            omega_conf_to_dataclass(cfg.algorithm)
    except RecipeCheckError:
        raise
    except Exception as e:  # noqa: BLE001 - verl raises AssertionError/ValueError/hydra errors alike
        raise RecipeCheckError(f"verl rejects the composed config: {type(e).__name__}: {e}") from None
    notes.append(f"adv_estimator={est} critic={use_critic} ref={use_ref} rollout={rollout} trainer={mode} "
                 f"n={cfg.actor_rollout_ref.rollout.n}")
    path = cfg.reward.custom_reward_function.path
    if path:
        try:
            fn = get_custom_reward_fn(cfg)
        except Exception as e:  # noqa: BLE001
            raise RecipeCheckError(f"reward.custom_reward_function ({path}, "
                                   f"{cfg.reward.custom_reward_function.name}) does not load: {e}") from None
        if not callable(fn):
            raise RecipeCheckError(f"reward.custom_reward_function {path} is not callable")
        notes.append(f"reward={path}:{cfg.reward.custom_reward_function.name}")
    return notes


def check_sft_config(cfg) -> list[str]:
    """The dataclass checks verl's engine SFT trainer makes, and the objective block of our configs:
    ``loss:`` (dft_sft; dft_verl.losses.LossConfig) or ``dpo:`` (dpo; DPOConfig and the pair batching)."""
    from verl.utils.config import omega_conf_to_dataclass

    notes = []
    for key in ("optim", "engine", "checkpoint"):
        if key in cfg:
            try:
                omega_conf_to_dataclass(cfg[key])
            except Exception as e:  # noqa: BLE001
                raise RecipeCheckError(f"verl rejects the composed config ({key}): {type(e).__name__}: {e}") from None
    if "loss" in cfg:
        from dft_verl.losses import LossConfig

        try:
            loss = LossConfig.from_config(cfg.loss)
        except (ValueError, TypeError) as e:
            raise RecipeCheckError(f"loss block rejected: {e}") from None
        notes.append(f"loss.type={loss.type}")
    if "dpo" in cfg:
        from dft_verl.dpo.loss import DPOConfig
        from dft_verl.dpo.train import check_dpo_data_config

        try:
            dpo = DPOConfig.from_config(cfg.dpo)
            check_dpo_data_config(cfg.data, int(cfg.trainer.nnodes) * int(cfg.trainer.n_gpus_per_node))
        except (ValueError, TypeError) as e:
            raise RecipeCheckError(f"dpo config rejected: {e}") from None
        notes.append(f"dpo.beta={dpo.beta}")
    notes.append(f"lr={cfg.optim.lr} scheduler={cfg.optim.lr_scheduler_type} "
                 f"warmup={cfg.optim.lr_warmup_steps_ratio} batch={cfg.data.train_batch_size}")
    return notes


def check_pipeline_config(module: str, cfg) -> list[str]:
    """Every mandatory (``???``) value the stages that will run need is set."""
    from omegaconf import OmegaConf

    stages = list(cfg.stages) if module == "dft_verl.pipeline" else [module.rsplit(".", 1)[1]]
    unknown = [s for s in stages if s not in PIPELINE_STAGES]
    if unknown:
        raise RecipeCheckError(f"stages={stages}: unknown stage(s) {unknown}; supported: {list(PIPELINE_STAGES)}")
    missing = [k for k in OmegaConf.missing_keys(cfg) if "." not in k or k.split(".", 1)[0] in stages]
    if missing:
        raise RecipeCheckError(f"missing required value(s) {sorted(missing)} (set them as key=value)")
    notes = [f"stages={stages}"]
    if "prepare" in stages:
        from dft_verl.prompts import check_template

        try:
            notes.append(f"prompt_template={check_template(cfg.prepare.prompt_template)}")
        except ValueError as e:
            raise RecipeCheckError(f"prepare.prompt_template: {e}") from None
    return notes


def check_hydra_launch(launch: Launch) -> list[str]:
    if importlib.util.find_spec(launch.module) is None:
        raise RecipeCheckError(f"module {launch.module!r} not found")
    source, name, overrides = split_hydra_args(launch.module, launch.args)
    cfg = compose_config(source, name, overrides)
    notes = [f"config {name} ({source}), {len(overrides)} overrides"]
    if launch.module in PPO_ENTRIES:
        notes += check_ppo_config(cfg)
    elif launch.module in PIPELINE_ENTRIES:
        notes += check_pipeline_config(launch.module, cfg)
    else:
        notes += check_sft_config(cfg)
    return notes


# ------------------------------------------------------------------------------------------------------
# other python -m modules
# ------------------------------------------------------------------------------------------------------


def check_module_launch(launch: Launch) -> list[str]:
    """The module exists; its ``build_parser()`` (when it has one) accepts the arguments."""
    try:
        spec = importlib.util.find_spec(launch.module)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        raise RecipeCheckError(f"module {launch.module!r} not found")
    module = importlib.import_module(launch.module)
    build_parser = getattr(module, "build_parser", None)
    if build_parser is None:
        return [f"module {launch.module} found; it has no build_parser(), arguments not checked"]
    parser = build_parser()
    if not isinstance(parser, argparse.ArgumentParser):
        return [f"module {launch.module} found; build_parser() is not argparse, arguments not checked"]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser.parse_args(launch.args)
    except SystemExit as e:
        if e.code not in (0, None):
            lines = stderr.getvalue().strip().splitlines()
            raise RecipeCheckError(f"{launch.module} rejects its arguments: {lines[-1] if lines else e}") from None
    return [f"arguments accepted by {launch.module}.build_parser()"]


def check_command(argv: list[str]) -> list[str]:
    """Check one command; returns notes, raises RecipeCheckError naming what does not resolve."""
    launch = parse_command(argv)
    if launch.module in HYDRA_ENTRIES:
        return [launch.summary()] + check_hydra_launch(launch)
    return [launch.summary()] + check_module_launch(launch)


def read_queue(path: str) -> list[list[str]]:
    """Commands from a queue file: one shell-quoted command per line (bash ``printf '%q '``)."""
    commands = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                commands.append(shlex.split(line))
            except ValueError as e:
                raise RecipeCheckError(f"{path}:{lineno}: cannot split command: {e}") from None
    return commands


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        k = argv.index("--")
        argv, command = argv[:k], argv[k + 1 :]
    parser = argparse.ArgumentParser(prog="python -m dft_verl.recipe_check", description=__doc__.split("\n")[0])
    parser.add_argument("--queue", help="file with one shell-quoted command per line")
    args = parser.parse_args(argv)
    if bool(args.queue) == bool(command):
        parser.error("give either --queue FILE or `-- <command ...>`")
    commands = read_queue(args.queue) if args.queue else [command]
    failures = 0
    for cmd in commands:
        shown = shlex.join(cmd)
        try:
            notes = check_command(cmd)
        except RecipeCheckError as e:
            failures += 1
            print(f"recipe_check FAIL: {shown}\n  {e}", file=sys.stderr, flush=True)
            continue
        print(f"recipe_check ok: {'; '.join(notes)}", flush=True)
    print(f"recipe_check: {len(commands) - failures} ok, {failures} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
