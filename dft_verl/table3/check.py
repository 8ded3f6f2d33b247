"""``python -m dft_verl.table3 check`` (and ``DRY_RUN=1``): does each step's command resolve against the installed verl?

Each step names its module and arguments (dft_verl.table3.plan); nothing is parsed back from printed text.

- hydra entry points (verl's ``main_ppo`` and SFT trainers, ``dft_verl.trainer.sft``/``sft_ray``,
  ``dft_verl.dpo.train``, ``dft_verl.pipeline``): the config the command would run with is composed with hydra's
  compose API from the same config module or directory and the same overrides (``--config-path``/``--config-name``
  honoured). Hydra rejects an override of a key the config does not have; that failure is reported with the key.
  The composed config then goes through the checks the entry point itself makes before it touches a GPU:
  ``main_ppo``: verl's ``validate_config`` (batch sizes, micro-batch settings, actor dataclass), the critic
  dataclass, the advantage estimator, policy loss and rollout names against verl's registries, and the custom reward
  function loaded through verl's own loader; SFT/DPO trainers: the optimiser/engine/checkpoint dataclasses and the
  ``loss:`` (dft_sft) or ``dpo:`` (dpo) block; the pipeline: every mandatory value of the stages it will run, and
  prepare's prompt template. Model weights and data files are not opened (a check must work on a laptop without them).
- any other module (eval, report, reference log-probs): the module must exist; when it has a ``build_parser()``
  returning an ``argparse.ArgumentParser`` the arguments are parsed with it.

verl seams used (pinned 0.9.1; tests/test_table3_check.py fails loudly on a bump that moves them):
``verl.utils.config.validate_config``/``omega_conf_to_dataclass``, ``verl.trainer.ppo.core_algos``'s
ADV_ESTIMATOR_REGISTRY and POLICY_LOSS_REGISTRY, ``verl.workers.rollout.replica.RolloutReplicaRegistry._registry``
(semi-private: the only list of rollout names), ``verl.trainer.ppo.v1.get_trainer_cls``,
``verl.trainer.ppo.reward.get_custom_reward_fn``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import re
from pathlib import Path

DFT_VERL_CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"

# entry module -> (config source, default config name). A config source is "pkg://<module>" or a directory.
HYDRA_ENTRIES: dict[str, tuple[str, str]] = {
    "verl.trainer.main_ppo": ("pkg://verl.trainer.config", "ppo_trainer"),
    "verl.trainer.sft_trainer": ("pkg://verl.trainer.config", "sft_trainer_engine"),
    "verl.trainer.sft_trainer_ray": ("pkg://verl.trainer.config", "sft_trainer_engine"),
    "dft_verl.trainer.sft": (str(DFT_VERL_CONFIG_DIR), "dft_sft"),
    "dft_verl.trainer.sft_ray": (str(DFT_VERL_CONFIG_DIR), "dft_sft"),
    "dft_verl.dpo.train": (str(DFT_VERL_CONFIG_DIR), "dpo"),
    "dft_verl.dpo.train_ray": (str(DFT_VERL_CONFIG_DIR), "dpo"),
    "dft_verl.pipeline": (str(DFT_VERL_CONFIG_DIR / "pipeline"), "pipeline"),
}
PIPELINE_STAGES = ("prepare", "sample", "verify", "filter")
for _stage in PIPELINE_STAGES:
    HYDRA_ENTRIES[f"dft_verl.pipeline.{_stage}"] = HYDRA_ENTRIES["dft_verl.pipeline"]
PPO_ENTRIES = {"verl.trainer.main_ppo"}
PIPELINE_ENTRIES = {"dft_verl.pipeline", *(f"dft_verl.pipeline.{s}" for s in PIPELINE_STAGES)}


class CheckError(Exception):
    """A command does not resolve; the message names the command, the config and the cause."""


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
                        raise CheckError(f"{flag} without a value")
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
                raise CheckError(f"hydra flag {a!r} is not supported in a recipe (only --config-path/"
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
            raise CheckError(f"--config-path must be absolute or pkg://module (hydra resolves a relative "
                                   f"one against the entry point's file), got {source!r}")
        ctx = initialize_config_dir(config_dir=source, version_base=None)
    try:
        with ctx:
            return compose(config_name=name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError, ImportError) as e:
        msg = str(e).strip()
        bad = re.search(r"Could not override '([^']+)'", msg)
        hint = f"unknown key {bad.group(1)!r}: " if bad else ""
        raise CheckError(f"config {name!r} from {source} does not compose: {hint}{msg}") from None


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
        raise CheckError(f"algorithm.adv_estimator={est!r} is not a verl advantage estimator; "
                               f"supported: {sorted(core_algos.ADV_ESTIMATOR_REGISTRY)}")
    loss_mode = cfg.actor_rollout_ref.actor.policy_loss.loss_mode
    if loss_mode not in core_algos.POLICY_LOSS_REGISTRY:
        raise CheckError(f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode!r} is not a verl policy "
                               f"loss; supported: {sorted(core_algos.POLICY_LOSS_REGISTRY)}")
    if OmegaConf.select(cfg, "ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM") == "cpu":
        from dft_verl.plugin import register_cpu_mode  # what every Ray worker of this run registers

        register_cpu_mode()
    mode = cfg.trainer.v1.trainer_mode
    try:
        from verl.trainer.ppo.v1 import get_trainer_cls

        get_trainer_cls(mode)
    except ValueError as e:
        raise CheckError(f"trainer.v1.trainer_mode={mode!r}: {e}") from None
    rollout = cfg.actor_rollout_ref.rollout.name
    if rollout not in RolloutReplicaRegistry._registry:
        raise CheckError(f"actor_rollout_ref.rollout.name={rollout!r} is not a verl rollout; "
                               f"supported: {sorted(RolloutReplicaRegistry._registry)}")
    if mode == "cpu_sync":
        from dft_verl.trainer.ppo_cpu import check_cpu_rollout  # what the CPU trainer refuses when it starts

        try:
            check_cpu_rollout(cfg)
        except ValueError as e:
            raise CheckError(str(e)) from None
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
    except CheckError:
        raise
    except Exception as e:  # noqa: BLE001 - verl raises AssertionError/ValueError/hydra errors alike
        raise CheckError(f"verl rejects the composed config: {type(e).__name__}: {e}") from None
    notes.append(f"adv_estimator={est} critic={use_critic} ref={use_ref} rollout={rollout} trainer={mode} "
                 f"n={cfg.actor_rollout_ref.rollout.n}")
    path = cfg.reward.custom_reward_function.path
    if path:
        try:
            fn = get_custom_reward_fn(cfg)
        except Exception as e:  # noqa: BLE001
            raise CheckError(f"reward.custom_reward_function ({path}, "
                                   f"{cfg.reward.custom_reward_function.name}) does not load: {e}") from None
        if not callable(fn):
            raise CheckError(f"reward.custom_reward_function {path} is not callable")
        notes.append(f"reward={path}:{cfg.reward.custom_reward_function.name}")
    return notes


def check_sft_config(cfg, module: str = "") -> list[str]:
    """The dataclass checks verl's engine SFT trainer makes, and the objective block of our configs:
    ``loss:`` (dft_sft; dft_verl.losses.LossConfig) or ``dpo:`` (dpo; DPOConfig and the pair batching, and for
    ``module`` dft_verl.dpo.train_ray the batch order)."""
    from verl.utils.config import omega_conf_to_dataclass

    notes = []
    for key in ("optim", "engine", "checkpoint"):
        if key in cfg:
            try:
                omega_conf_to_dataclass(cfg[key])
            except Exception as e:  # noqa: BLE001
                raise CheckError(f"verl rejects the composed config ({key}): {type(e).__name__}: {e}") from None
    if "loss" in cfg:
        from dft_verl.losses import LossConfig

        try:
            loss = LossConfig.from_config(cfg.loss)
        except (ValueError, TypeError) as e:
            raise CheckError(f"loss block rejected: {e}") from None
        notes.append(f"loss.type={loss.type}")
    if "dpo" in cfg:
        from dft_verl.dpo.loss import DPOConfig
        from dft_verl.dpo.train import check_dpo_data_config

        try:
            dpo = DPOConfig.from_config(cfg.dpo)
            check_dpo_data_config(cfg.data, int(cfg.trainer.nnodes) * int(cfg.trainer.n_gpus_per_node))
            if module == "dft_verl.dpo.train_ray":
                from dft_verl.dpo.train_ray import check_ray_dpo_config

                check_ray_dpo_config(cfg)
        except (ValueError, TypeError) as e:
            raise CheckError(f"dpo config rejected: {e}") from None
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
        raise CheckError(f"stages={stages}: unknown stage(s) {unknown}; supported: {list(PIPELINE_STAGES)}")
    missing = [k for k in OmegaConf.missing_keys(cfg) if "." not in k or k.split(".", 1)[0] in stages]
    if missing:
        raise CheckError(f"missing required value(s) {sorted(missing)} (set them as key=value)")
    notes = [f"stages={stages}"]
    if "prepare" in stages:
        from dft_verl.prompts import check_template

        try:
            notes.append(f"prompt_template={check_template(cfg.prepare.prompt_template)}")
        except ValueError as e:
            raise CheckError(f"prepare.prompt_template: {e}") from None
    return notes


def check_hydra(module: str, args: list[str]) -> list[str]:
    if importlib.util.find_spec(module) is None:
        raise CheckError(f"module {module!r} not found")
    source, name, overrides = split_hydra_args(module, args)
    cfg = compose_config(source, name, overrides)
    notes = [f"config {name} ({source}), {len(overrides)} overrides"]
    if module in PPO_ENTRIES:
        notes += check_ppo_config(cfg)
    elif module in PIPELINE_ENTRIES:
        notes += check_pipeline_config(module, cfg)
    else:
        notes += check_sft_config(cfg, module)
    return notes


# ------------------------------------------------------------------------------------------------------
# other python -m modules
# ------------------------------------------------------------------------------------------------------


def check_module(module: str, args: list[str]) -> list[str]:
    """The module exists; its ``build_parser()`` (when it has one) accepts the arguments."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        raise CheckError(f"module {module!r} not found")
    build_parser = getattr(importlib.import_module(module), "build_parser", None)
    if build_parser is None:
        return [f"module {module} found; it has no build_parser(), arguments not checked"]
    parser = build_parser()
    if not isinstance(parser, argparse.ArgumentParser):
        return [f"module {module} found; build_parser() is not argparse, arguments not checked"]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser.parse_args(args)
    except SystemExit as e:
        if e.code not in (0, None):
            lines = stderr.getvalue().strip().splitlines()
            raise CheckError(f"{module} rejects its arguments: {lines[-1] if lines else e}") from None
    return [f"arguments accepted by {module}.build_parser()"]


def check_command(module: str, args: list[str]) -> list[str]:
    """Check ``python -m module args``; returns notes, raises CheckError naming what does not resolve."""
    if module in HYDRA_ENTRIES:
        return check_hydra(module, args)
    return check_module(module, args)
