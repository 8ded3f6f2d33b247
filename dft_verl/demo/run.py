"""The demo: the Table-3 comparison rehearsed on CPU, through the same orchestration a cluster user launches.

Stages, in order (each resumes: a second run skips what is finished):

    model    SmolLM2-135M-Instruct as an HF folder (converted once into the cache), or model.path  -> path logged
    task     train/test (+ format) jsonl: generated arithmetic, or the user's files                -> task/
             and the held-out split in dft_verl.eval's local layout                                 -> bench/math500/
    warmup   the data step (prepare only) and the SFT row on the format split, EVAL=0, so the      -> warmup/
             model ends its answers with \\boxed{} (the raw model almost never does): the base model
    rows     dft_verl.table3 at the preset (cpu-small) with MODEL_PATH = the base model and          -> data/,
             DATA_SOURCE = task/train.jsonl: the offline pipeline, every row trained by its real       <row>/, report/
             trainer on the CPU platform, evaluated on bench/, token probabilities, the report
             (seeds > 1: the trained rows again with SEED=1.. on the same data)                          -> seeds/<s>/
    summary  report/summary.{md,json}: dft_verl.report's table, paired comparisons and ranks, plus
             wall time per stage and row and the data statistics

Resume is dft_verl.table3's one rule: a step is skipped only when it finished with the same inputs. A changed
setting reruns what it changes and says why: a held-out set grown at its end is evaluated again keeping every saved
sample (only the added questions are sampled), nothing is retrained; overwrite=true reruns every step.
Each row's logs are under <row>/ (train.log, eval.log, ...); the orchestrator's own lines are in demo.log.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dft_verl.atomic import write_json_atomic
from dft_verl.table3.manifest import Manifest, step_inputs
from dft_verl.table3.rows import ROW_KEYS
from dft_verl.table3.runner import Runner
from dft_verl.table3.settings import NAMES, Settings, resolve

logger = logging.getLogger("dft_verl.demo")

CONFIG_DIR = Path(__file__).resolve().parent
BENCH = "math500"  # the column the held-out questions fill (dft_verl.eval reads <out>/bench/math500/test.jsonl)
ALL_ROWS = ROW_KEYS  # the Table-3 rows in table order (their one definition: dft_verl.table3.rows)
PRESETS = ("cpu-small", "cpu-tiny")
# Settings the demo sets itself (the folders, the model and the task it made)
OWN_VARIABLES = ("PRESET", "RUNS_DIR", "DATA_DIR", "CKPT_DIR", "MODEL_PATH", "MODEL_BUILD", "DATA_SOURCE",
                 "DATA_GENERATE_TRAIN", "EVAL_DATA_DIR", "SEED")


# ---------------------------------------------------------------------------------------------- config


def load_config(fast: bool = False, config_file: str | None = None, overrides: list[str] | tuple = ()) -> DictConfig:
    """demo.yaml, then demo_fast.yaml (--fast), then ``config_file``, then ``key=value`` overrides.

    Keys not present in demo.yaml are rejected (a typo must not silently change nothing); recipe_env takes any
    upper-case recipe variable."""
    cfg = OmegaConf.load(CONFIG_DIR / "demo.yaml")
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_struct(cfg.recipe_env, False)
    layers = []
    if fast:
        layers.append(OmegaConf.load(CONFIG_DIR / "demo_fast.yaml"))
    if config_file:
        layers.append(OmegaConf.load(config_file))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"overrides must be key=value, got {bad}")
    layers.append(OmegaConf.from_dotlist(list(overrides)))
    for layer in layers:
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except Exception as e:  # omegaconf's ConfigKeyError names the unknown key
            raise ValueError(f"invalid demo config value: {e}") from None
    if cfg.preset not in PRESETS:
        raise ValueError(f"preset={cfg.preset!r}; choose one of {list(PRESETS)}")
    rows = list(cfg.rows)
    unknown = [r for r in rows if r not in ALL_ROWS]
    if unknown or not rows:
        raise ValueError(f"rows={rows}: unknown {unknown}; valid rows: {', '.join(ALL_ROWS)}")
    if int(cfg.seeds) < 1:
        raise ValueError(f"seeds={cfg.seeds}: at least 1 (the main run)")
    for key in cfg.recipe_env:
        if key not in NAMES:
            raise ValueError(f"recipe_env.{key}: not a Table-3 setting (python -m dft_verl.table3 settings lists them)")
        if key in OWN_VARIABLES:
            raise ValueError(f"recipe_env.{key}: set by the demo itself (use out, model.path or task.* instead)")
    return cfg


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


# ---------------------------------------------------------------------------------------------- stages


class Demo:
    """One demo run: ``Demo(cfg).run()``; ``self.out`` holds every file, ``self.timings`` the seconds per stage."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.out = Path(cfg.out).expanduser().resolve()
        self.timings: dict[str, float] = {}
        self.row_seconds: dict[str, int] = {}
        self.skipped: list[str] = []
        self.raw_model: str | None = None  # the model as given (SmolLM2 converted from the package)
        self.base_model: str | None = None  # the raw model after the format warm-up: what every row starts from

    def _stage(self, name: str, fn):
        logger.info("──── %s ────", name)
        t0 = time.perf_counter()
        result = fn()
        self.timings[name] = round(time.perf_counter() - t0, 1)
        logger.info("%s: %.1f s", name, self.timings[name])
        return result

    def _skip(self, what: str, where: Path | str) -> None:
        self.skipped.append(what)
        logger.info("%s: done already, reusing %s", what, where)

    # ------------------------------------------------------------------ model

    def model(self) -> str:
        if self.cfg.model.path:
            path = Path(self.cfg.model.path).expanduser()
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"model.path={self.cfg.model.path!r}: no config.json there (need an HF folder)")
        else:
            from dft_verl.demo.smollm2 import default_model_dir, ensure_smollm2, is_converted

            cache = self.cfg.model.cache_dir
            target = Path(cache).expanduser() if cache else default_model_dir()
            if is_converted(target):
                self._skip("model", target)
            path = ensure_smollm2(target)
        self.raw_model = str(path.resolve())
        logger.info("model: %s", self.raw_model)
        return self.raw_model

    # ------------------------------------------------------------------ task

    def task(self) -> dict[str, Path]:
        """The questions: task/{train,test,format}.jsonl and bench/math500/test.jsonl (problem, answer). A file whose
        bytes do not change keeps its date (what reads it is not redone)."""
        from dft_verl.demo.offline_inputs import write_bench
        from dft_verl.demo.tasks import make_problems, read_task_file, split_rows, write_jsonl, write_task

        tc = self.cfg.task
        n_format = int(self.cfg.warmup.n_questions)
        folder = self.out / "task"
        names = {"train": "train.jsonl", "test": "test.jsonl", "bench": f"bench/{BENCH}/test.jsonl"}
        if n_format:
            names["format"] = "format.jsonl"
        files = {k: folder / v if k != "bench" else self.out / v for k, v in names.items()}
        inputs = step_inputs({"task": _plain(tc), "n_format": n_format, "seed": int(self.cfg.seed)},
                             [tc[f"{k}_file"] for k in ("train", "test") if tc[f"{k}_file"]])
        manifest = Manifest(folder / "steps", "task")
        decision = manifest.decide(inputs, files.values())
        if not decision.run:
            self._skip("task", folder)
            return files
        logger.info("task: writing the questions (%s)", decision.reason)
        staging = self.out / "task.new"
        shutil.rmtree(staging, ignore_errors=True)
        new = {k: staging / v for k, v in names.items()}
        if tc.train_file:
            train = read_task_file(tc.train_file)
            if tc.test_file:
                test = read_task_file(tc.test_file)
            else:
                train, test = split_rows(train, int(tc.n_test), int(self.cfg.seed))
            write_jsonl(train, new["train"])
            write_jsonl(test, new["test"])
            if n_format:  # the warm-up teaches the answer format, on generated problems whatever the task
                write_jsonl(make_problems(n_format, int(self.cfg.seed) + 2, tuple(tc.families)), new["format"])
        else:
            write_task(staging, int(tc.n_train), int(tc.n_test), int(self.cfg.seed), tuple(tc.families), n_format)
        write_bench(new["test"], new["bench"])
        for key, path in files.items():
            if not (path.is_file() and path.read_bytes() == new[key].read_bytes()):
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(new[key], path)
        shutil.rmtree(staging)
        manifest.finish(inputs, 0.0)
        logger.info("task: %s", ", ".join(str(p) for p in files.values()))
        return files

    # ------------------------------------------------------------------ the Table-3 runs

    def settings(self, **own) -> Settings:
        """The Table-3 settings of a run: the environment (any setting set there applies, as for the recipes), the
        preset, recipe_env, then the demo's own values."""
        env = dict(os.environ)
        env["PRESET"] = str(self.cfg.preset)
        env.update({str(k): str(v) for k, v in self.cfg.recipe_env.items()})
        env["MODEL_BUILD"] = "none"  # the demo makes its model itself (model, warmup)
        env.update({k: str(v) for k, v in own.items()})
        return resolve(env)

    def run_stages(self, s: Settings, stages: list[str], extra: list[str] | tuple = (), tag: str = "") -> dict[str, int]:
        """dft_verl.table3's runner on ``stages`` (output in each step's log under RUNS_DIR); returns {stage: wall
        seconds}; a stage in which no step ran is recorded as reused (``tag`` appended)."""
        results = Runner(s, overwrite=bool(self.cfg.overwrite), echo=False).run(stages, extra)
        seconds: dict[str, int] = {}
        for stage in stages:
            mine = [r for r in results if r.stage == stage]
            seconds[stage] = round(sum(r.seconds for r in mine))
            if mine and not any(r.ran for r in mine):
                self.skipped.append(f"row {stage}{tag}")
        return seconds

    # ------------------------------------------------------------------ warm-up

    def warmup(self, task_files: dict[str, Path]) -> str:
        """One epoch of the SFT row on the format split (constant lr, no evaluation); returns the base model folder."""
        if int(self.cfg.warmup.n_questions) == 0:
            self.base_model = self.raw_model
            logger.info("warmup: disabled (warmup.n_questions=0); base model = %s", self.base_model)
            return self.base_model
        folder = self.out / "warmup"
        s = self.settings(RUNS_DIR=folder, DATA_DIR=folder / "data", CKPT_DIR=folder / "checkpoints",
                          MODEL_PATH=self.raw_model, DATA_SOURCE=task_files["format"], DATA_GENERATE_TRAIN=0,
                          EVAL_DATA_DIR=self.out / "bench", EVAL=0, SFT_EPOCHS=1)
        before = len(self.skipped)
        self.run_stages(s, ["data"], ["stages=[prepare]"])
        self.run_stages(s, ["sft"], ["optim.lr_scheduler_type=constant", "optim.lr_warmup_steps=1",
                                     f"optim.lr={float(self.cfg.warmup.lr)}", "trainer.experiment_name=warmup"])
        if len(self.skipped) == before + 2:
            self.skipped[before:] = ["warmup"]
        ckpt = folder / "checkpoints" / "sft"
        step = (ckpt / "latest_checkpointed_iteration.txt").read_text().strip()
        self.base_model = str(ckpt / f"global_step_{step}" / "huggingface")
        logger.info("warmup: base model %s", self.base_model)
        return self.base_model

    # ------------------------------------------------------------------ rows

    def main_settings(self, base_model, train_file) -> Settings:
        """The main run's settings (SEED=0): everything under ``out``, trained from ``base_model`` on ``train_file``."""
        return self.settings(RUNS_DIR=self.out, DATA_DIR=self.out / "data", CKPT_DIR=self.out / "checkpoints",
                             MODEL_PATH=base_model, DATA_SOURCE=train_file, DATA_GENERATE_TRAIN=0,
                             EVAL_DATA_DIR=self.out / "bench", SEED=0)

    def rows(self, task_files: dict[str, Path]) -> dict[str, int]:
        """data, the rows and the report at the preset's sizes from the base model (SEED=0), then the trained rows
        again with SEED=1..seeds-1 into seeds/<s>/; returns {stage: seconds} of the main run."""
        s = self.main_settings(self.base_model, task_files["train"])
        rows = list(self.cfg.rows)
        seconds = self.run_stages(s, ["data", *rows, "report"])
        self.row_seconds.update(seconds)
        trained = [r for r in rows if r != "base"]
        for seed in range(1, int(self.cfg.seeds)):
            if not trained:
                break
            folder = self.seed_dir(seed)
            seeded = s.replace(RUNS_DIR=str(folder), CKPT_DIR=str(folder / "checkpoints"), SEED=str(seed),
                               TOKEN_PROBS="0")
            extra = self.run_stages(seeded, [*trained, "report"], tag=f" (seed {seed})")
            self.row_seconds.update({f"{row} (seed {seed})": t for row, t in extra.items()})
        return seconds

    def seed_dir(self, seed: int) -> Path:
        """RUNS_DIR of the rows trained with SEED=seed (0: the main run, ``out`` itself)."""
        return self.out if seed == 0 else self.out / "seeds" / str(seed)

    # ------------------------------------------------------------------ all

    def dry_run(self) -> int:
        """Print every step the rows would run and check its config against the installed verl; nothing runs or is
        written (the base model the warm-up would make is named by its path to be). Returns the failures."""
        from dft_verl.table3.__main__ import check_steps, print_steps

        base = self.out / "warmup" / "checkpoints" / "sft" / "global_step_LATEST" / "huggingface"
        s = self.main_settings(base, self.out / "task" / "train.jsonl")
        return check_steps(print_steps(s, ["data", *self.cfg.rows, "report"], []))

    def run(self) -> dict:
        """All stages; returns the summary dict also written to report/summary.json."""
        from dft_verl.demo import summary as demo_summary

        self.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(_plain(self.cfg), self.out / "config.json")
        t0 = time.perf_counter()
        self._stage("model", self.model)
        task_files = self._stage("task", self.task)
        self._stage("warmup", lambda: self.warmup(task_files))
        self._stage("rows", lambda: self.rows(task_files))
        self.timings["total"] = round(time.perf_counter() - t0, 1)
        seed_dirs = [self.seed_dir(s) for s in range(int(self.cfg.seeds))]
        summary = demo_summary.write_summary(self.out, self.cfg, self.timings, self.row_seconds, self.skipped,
                                             seed_dirs)
        return summary
