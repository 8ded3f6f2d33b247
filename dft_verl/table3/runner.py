"""Running the Table-3 stages: each step is skipped or run by the one resume rule (dft_verl.table3.manifest), its
output appended to its log, its wall time recorded; a failed step stops the run naming its log.

    results = Runner(settings).run(["data", "sft", "report"])       # what dft-verl demo and the CLI call

Logs: RUNS_DIR/<row>/<step>.log (train.log, eval.log, eval/step_<N>.log, token_probs.log, ...), RUNS_DIR/report.log.
Manifests: RUNS_DIR/<row>/steps/, each with the step's wall seconds, the CPU seconds of its local process tree, the
GPUs it held and how it was launched (what dft_verl.cost reads, beside the counts the step records itself).
Wall seconds per stage and run: RUNS_DIR/timings.tsv (stage, seconds, UTC time).
"""

from __future__ import annotations

import logging
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from dft_verl import cost
from dft_verl.table3 import cluster, launch, plan
from dft_verl.table3.manifest import Manifest, step_inputs
from dft_verl.table3.settings import Settings

logger = logging.getLogger("dft_verl.table3")
NODE_WAIT_S = 30  # how often a node other than 0 looks for the files node 0 writes


def children_cpu_seconds() -> float:
    """User + system CPU seconds of the finished child processes this process waited for, and of theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class StepFailed(RuntimeError):
    """A step's process ended with ``rc`` != 0; ``lost``: what it lost while it ran (dft_verl.table3.cluster): Ray
    nodes declared dead (RAY_ADDRESS, several nodes), Ray actors its log reports dead."""

    def __init__(self, step: plan.Step, rc: int, log: Path, lost: list[str] | None = None):
        self.step, self.rc, self.log, self.lost = step, rc, log, list(lost or [])
        message = f"FAILED (exit {rc}): {step.id}; full log: {log}"
        if self.lost:
            message += "; lost during the step: " + "; ".join(self.lost)
        super().__init__(message)


@dataclass(frozen=True)
class StepResult:
    stage: str
    step: str
    ran: bool
    reason: str
    seconds: float


def log_path(s: Settings, step: plan.Step) -> Path:
    if step.stage == "report":
        return plan.runs(s, "report.log")
    return plan.runs(s, step.stage, f"{step.name}.log")


def recorded_config(step: plan.Step) -> dict:
    """The config values a step's manifest records: its module, launch kind and arguments, without the tracking
    board (a changed LOGGER changes no result)."""
    return {"module": step.module, "kind": step.kind,
            "args": [a for a in step.args if not a.startswith("trainer.logger=")]}


def _remove(path: str) -> None:
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


class Runner:
    """Runs stages with settings ``s``. overwrite: rerun every step (OVERWRITE=1). echo: copy each step's output to
    ``out`` as well as to its log (the CLI; the demo keeps it in the logs)."""

    def __init__(self, s: Settings, overwrite: bool | None = None, echo: bool = True, out: TextIO | None = None):
        self.s = s
        self.overwrite = s.flag("OVERWRITE") if overwrite is None else overwrite
        self.echo = echo
        self.out = out or sys.stdout

    def run(self, stages: list[str], extra: list[str] | tuple = ()) -> list[StepResult]:
        """Every step of ``stages`` in order; ``extra`` overrides go to the one row named (refused for several)."""
        if extra and len([st for st in stages if st != "report"]) != 1:
            raise ValueError(f"overrides after -- apply to one row; got rows {stages}")
        results: list[StepResult] = []
        for stage in stages:
            logger.info("==== [table3] %s start", stage)
            t0 = time.perf_counter()
            for step in plan.steps(self.s, stage, extra):
                results.append(self.execute(step))
            seconds = round(time.perf_counter() - t0)
            logger.info("==== [table3] %s done in %d s", stage, seconds)
            if self.s.node0:
                timings = plan.runs(self.s, "timings.tsv")
                timings.parent.mkdir(parents=True, exist_ok=True)
                with open(timings, "a") as f:
                    f.write(f"{stage}\t{seconds}\t{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        return results

    def execute(self, step: plan.Step) -> StepResult:
        s = self.s
        if not s.node0 and not step.all_nodes:
            logger.info("[%s] %s: node 0 runs it", step.stage, step.name)
            return StepResult(step.stage, step.name, False, "node 0 runs it", 0.0)
        if not s.node0:
            self._wait_for(step)
        manifest = Manifest(plan.runs(s, step.stage, "steps"), step.name)
        inputs = step_inputs(recorded_config(step), step.reads)
        decision = manifest.decide(inputs, step.outputs, overwrite=self.overwrite)
        if not decision.run:
            logger.info("[%s] %s: skipped (%s)", step.stage, step.name, decision.reason)
            if step.after:
                step.after(False)
            return StepResult(step.stage, step.name, False, decision.reason, 0.0)
        logger.info("[%s] %s: running (%s)", step.stage, step.name, decision.reason)
        args = list(step.args)
        if decision.clear and s.node0:
            for path in step.clears:
                if Path(path).exists():
                    logger.info("[%s] %s: removing %s (%s)", step.stage, step.name, path,
                                "OVERWRITE=1" if self.overwrite else "made from other inputs")
                    _remove(path)
        if self.overwrite:
            args += step.overwrite_args
        if s.node0:
            manifest.start(inputs)
        if "VERL_FILE_LOGGER_PATH" in step.env:  # resuming: verl would overwrite the steps logged so far
            cost.keep_metrics(step.env["VERL_FILE_LOGGER_PATH"])
        for var in ("VERL_FILE_LOGGER_PATH", cost.ENV):  # verl's file logger does not make its folder
            if var in step.env:
                Path(step.env[var]).parent.mkdir(parents=True, exist_ok=True)
        t0, cpu0 = time.perf_counter(), children_cpu_seconds()
        on_cluster = bool(s.RAY_ADDRESS) and not step.local
        nodes = cluster.alive_nodes(s.RAY_ADDRESS) if on_cluster else set()
        log = log_path(s, step)
        offset = log.stat().st_size if log.is_file() else 0
        try:
            self._run_process(step, args)
        except StepFailed as failed:
            # what the step lost: the nodes of a multi-node cluster that Ray declared dead, the actors whose death
            # this attempt's log reports
            lost = cluster.lost_nodes(s.RAY_ADDRESS, nodes) if len(nodes) > 1 else []
            with open(log, encoding="utf-8", errors="replace") as f:
                f.seek(offset)
                lost += cluster.died_actors(f.read())
            if lost:
                raise StepFailed(step, failed.rc, failed.log, lost) from None
            raise
        seconds, cpu_seconds = time.perf_counter() - t0, children_cpu_seconds() - cpu0
        if s.node0:
            manifest.finish(inputs, seconds, **self._usage(step, cpu_seconds))
        if step.after:
            step.after(True)
        return StepResult(step.stage, step.name, True, decision.reason, round(seconds, 1))

    def _usage(self, step: plan.Step, cpu_seconds: float) -> dict:
        """What a step held and used, for dft_verl.cost: CPU seconds of its process tree on this machine, GPUs held
        (a training step: every GPU of every node), the device, where it ran (local, ray, nodes) and, for a training
        step, the dtype it computed in (the report's "training dtype")."""
        s = self.s
        if (s.RAY_ADDRESS and not step.local) or step.module == "verl.trainer.main_ppo":
            where = "ray"  # main_ppo starts a Ray cluster of its own: its workers are not this process's children
        elif step.all_nodes and s.int("NNODES") > 1:
            where = "nodes"  # the other nodes' processes are not this machine's children
        else:
            where = "local"
        gpus = s.int("NNODES") * s.int("N_GPUS_PER_NODE") if step.all_nodes else max(step.gpus, 1)
        usage = {"cpu_seconds": round(cpu_seconds, 1), "gpus": 0 if s.cpu else gpus,
                 "device": "cpu" if s.cpu else "gpu", "launch": where}
        return {**usage, "dtype": step.dtype} if step.dtype else usage

    def _run_process(self, step: plan.Step, args: list[str]) -> None:
        argv, local_env = launch.step_command(self.s, step, args)
        log = log_path(self.s, step)
        log.parent.mkdir(parents=True, exist_ok=True)
        cwd = plan.runs(self.s, step.stage)  # hydra's outputs/ folders land beside the row's logs
        cwd.mkdir(parents=True, exist_ok=True)
        logger.info("[%s] %s: %s (log: %s)", step.stage, step.name, launch.shell_line(argv, local_env), log)
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"==== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: {launch.shell_line(argv, local_env)}\n")
            f.flush()
            proc = subprocess.Popen(argv, env=launch.process_env(self.s, local_env), cwd=cwd, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1, errors="replace")
            assert proc.stdout is not None
            for line in proc.stdout:
                f.write(line)
                if self.echo:
                    self.out.write(line)
                    self.out.flush()
            rc = proc.wait()
        if rc != 0:
            raise StepFailed(step, rc, log)

    def _wait_for(self, step: plan.Step) -> None:
        """A node other than 0 waits for the files node 0 writes before the step (reference log-probs, data)."""
        while True:
            missing = [p for p in step.reads if p.startswith(self.s.DATA_DIR) and not Path(p).exists()]
            if not missing:
                return
            logger.info("[node %s] waiting for %s (written by node 0)", self.s.NODE_RANK, missing[0])
            time.sleep(NODE_WAIT_S)
