"""How a step's process is started: the argv that runs ``python -m <module> <args>`` on this machine (one process or
torchrun) or as a `ray job submit` to RAY_ADDRESS, and the environment it gets. Nothing here is printed and parsed
back: the orchestrator runs these lists, ``print`` shows them, ``check`` reads the module and arguments beside them.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from dft_verl.placement import DEDUP_ENV, RANK_RESOURCE_ENV
from dft_verl.table3.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
# What a Ray job does not upload from the checkout it runs in
RAY_EXCLUDES = [".git", ".venv", "runs", "checkpoints", "outputs"]
# The CPU platform in every process a CPU job starts. The trainers' own ray.init(runtime_env=...) sets some of these
# again (same values): Ray refuses such a job unless RAY_OVERRIDE_JOB_RUNTIME_ENV=1 lets it merge the two.
CPU_JOB_ENV = {"VERL_PLATFORM": "cpu", "TOKENIZERS_PARALLELISM": "false", "OMP_WAIT_POLICY": "PASSIVE",
               "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}


def is_checkout(root: Path = REPO_ROOT) -> bool:
    """Whether dft_verl runs from a source checkout (a Ray job then uploads it as its working directory)."""
    return (root / "pyproject.toml").is_file() and (root / "dft_verl").is_dir()


def rendezvous(s: Settings) -> list[str]:
    if s.int("NNODES") > 1:
        return [f"--nnodes={s.NNODES}", f"--node_rank={s.NODE_RANK}", f"--master_addr={s.MASTER_ADDR}",
                f"--master_port={s.MASTER_PORT}"]
    return ["--standalone", "--nnodes=1"]


def torchrun(s: Settings) -> list[str]:
    return ["torchrun", *rendezvous(s), f"--nproc_per_node={s.N_GPUS_PER_NODE}"]


def ray_job(s: Settings, env: dict[str, str], gpus: int) -> list[str]:
    """`ray job submit` up to its `--`: this checkout as working directory, ``env`` in every process of the job,
    ``gpus`` GPUs reserved for the entrypoint (DEVICE=gpu only)."""
    runtime_env: dict = {"excludes": RAY_EXCLUDES} if is_checkout() else {}
    job_env = {**(CPU_JOB_ENV if s.cpu else {}), **DEDUP_ENV, **env}
    if s.cpu and s.RAY_RANK_RESOURCE:
        job_env[RANK_RESOURCE_ENV] = s.RAY_RANK_RESOURCE
    if job_env:
        runtime_env["env_vars"] = job_env
    argv = ["ray", "job", "submit", f"--address={s.RAY_ADDRESS}"]
    if is_checkout():
        argv.append(f"--working-dir={REPO_ROOT}")
    argv.append(f"--runtime-env-json={json.dumps(runtime_env, sort_keys=True)}")
    if gpus and not s.cpu:
        argv.append(f"--entrypoint-num-gpus={gpus}")
    return [*argv, "--"]


def command(s: Settings, module: str, args: list[str], kind: str = "python", env: dict[str, str] | None = None,
            gpus: int = 0, local: bool = False) -> list[str]:
    """The argv of ``python -m module args``: kind "python" (one process) or "torchrun" (N_GPUS_PER_NODE processes
    on each of NNODES nodes); submitted as a Ray job with RAY_ADDRESS unless ``local``."""
    if kind not in ("python", "torchrun"):
        raise ValueError(f"kind={kind!r}: python or torchrun")
    if s.RAY_ADDRESS and not local:
        inner = torchrun(s) if kind == "torchrun" else ["python"]
        return [*ray_job(s, env or {}, gpus), *inner, "-m", module, *args]
    head = torchrun(s) if kind == "torchrun" else [sys.executable]
    return [*head, "-m", module, *args]


def step_command(s: Settings, step, args: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """A dft_verl.table3.plan.Step's argv (with ``args`` instead of its own when given) and the environment this
    machine passes it: the step's own, except for a Ray job, whose variables travel in its runtime env."""
    argv = command(s, step.module, step.args if args is None else args, kind=step.kind, env=step.env, gpus=step.gpus,
                   local=step.local)
    return argv, {} if s.RAY_ADDRESS and not step.local else step.env


def process_env(s: Settings, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a step's process on this machine: ours, this interpreter's bin folder first on PATH (its
    torchrun and ray), this checkout importable in every process (torchrun ranks, Ray workers), and ``env``."""
    out = dict(os.environ)
    out["PATH"] = str(Path(sys.executable).parent) + os.pathsep + out.get("PATH", "")
    if is_checkout():
        out["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + out["PYTHONPATH"] if out.get("PYTHONPATH") else "")
    for key, value in DEDUP_ENV.items():  # every rank's placement line in the log of a local Ray driver
        out.setdefault(key, value)
    if s.cpu:
        # OpenMP threads that sleep while they wait: spinning threads on busy cores ran 50x slower (measured)
        out.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    out.update(env or {})
    return out


def shell_line(argv: list[str], env: dict[str, str] | None = None) -> str:
    """A copy-pasteable shell line: the step's own environment variables, then the command."""
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    return (prefix + " " if prefix else "") + shlex.join(argv)
