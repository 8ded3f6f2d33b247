"""The demo: the Table-3 comparison rehearsed on CPU, through the same recipes a cluster user launches.

Stages, in order (each resumes: a second run skips what is finished):

    model    SmolLM2-135M-Instruct as an HF folder (converted once into the cache), or model.path  -> path logged
    task     train/test (+ format) jsonl: generated arithmetic, or the user's files                -> task/
             and the held-out split in dft_verl.eval's local layout                                 -> bench/math500/
    warmup   the recipes' data step (prepare only) and SFT row on the format split, EVAL=0, so the  -> warmup/
             model ends its answers with \\boxed{} (the raw model almost never does): the base model
    rows     PRESET=<preset> bash recipes/table3/run_all.sh data <rows> with MODEL_PATH = the base model
             and DATA_SOURCE = task/train.jsonl: the offline pipeline, every row trained by its real   -> data/,
             trainer on the CPU platform, evaluated on bench/, token probabilities, the report         <row>/, report/
             (seeds > 1: the trained rows again with SEED=1.. on the same data)                          -> seeds/<s>/
    summary  report/summary.{md,json}: dft_verl.report's table, paired comparisons and ranks, plus
             wall time per stage and row and the data statistics

Changed settings in a finished `out` are refused unless overwrite=true, which clears only what the change
invalidates: a held-out set grown at its end keeps every row's samples (dft_verl.eval samples the new questions
only), another held-out set or EVAL_* variable clears the evaluations (the trained rows are evaluated again, not
retrained), anything else every recipe output.

No row's command line lives here: the recipes (recipes/table3/) are the one definition, and the demo needs
them from a source checkout. Their output goes to recipes.log; each row's own logs are under <row>/.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dft_verl.report import ROWS

logger = logging.getLogger("dft_verl.demo")

CONFIG_DIR = Path(__file__).resolve().parent
RECIPES_DIR = CONFIG_DIR.parents[1] / "recipes" / "table3"
DONE = "_demo_done.json"
RECIPES_MARKER = "_demo_recipes.json"
BENCH = "math500"  # the column the held-out questions fill (dft_verl.eval reads <out>/bench/math500/test.jsonl)
ALL_ROWS = tuple(row.key for row in ROWS)  # the Table-3 rows in table order (their one definition: dft_verl.report)
PRESETS = ("cpu-small", "cpu-tiny")
# Recipe variables the demo sets itself (the folders, the model and the task it made)
OWN_VARIABLES = ("PRESET", "RUNS_DIR", "DATA_DIR", "CKPT_DIR", "MODEL_PATH", "DATA_SOURCE", "DATA_GENERATE_TRAIN",
                 "EVAL_DATA_DIR", "SEED")
_START = re.compile(r"^==== \[run_all\] (\S+) start$")
_MARKER = re.compile(r"^==== \[run_all\] (\S+) done in (\d+) s$")


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
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", str(key)):
            raise ValueError(f"recipe_env.{key}: recipe variables are upper-case names (recipes/table3/common.sh)")
        if key in OWN_VARIABLES:
            raise ValueError(f"recipe_env.{key}: set by the demo itself (use out, model.path or task.* instead)")
    return cfg


def fingerprint(obj) -> str:
    """sha256 of the JSON of ``obj`` (sorted keys): what a stage's result depends on."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def write_json(obj, path: Path) -> Path:
    """JSON written atomically (tmp file + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


def recipes_dir() -> Path:
    """recipes/table3 of the source checkout this package runs from (the demo drives those scripts)."""
    if not (RECIPES_DIR / "run_all.sh").is_file():
        raise FileNotFoundError(
            f"dft-verl demo runs the Table-3 recipes, expected at {RECIPES_DIR}/run_all.sh, which this installation "
            "does not have: install from a clone (git clone ... && pip install -e .) and run it from there")
    return RECIPES_DIR


# ---------------------------------------------------------------------------------------------- stages


class Demo:
    """One demo run: ``Demo(cfg).run()``; ``self.out`` holds every file, ``self.timings`` the seconds per stage."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.out = Path(cfg.out).expanduser().resolve()
        self.recipes = recipes_dir()
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
        """The questions: task/{train,test,format}.jsonl and bench/math500/test.jsonl (problem, answer).

        A changed task config writes the new files into task.new/ first; they replace task/ and bench/ only once
        ``check_outputs`` accepts them against the rows already in ``out``."""
        from dft_verl.demo.offline_inputs import write_bench
        from dft_verl.demo.tasks import make_problems, read_task_file, split_rows, write_jsonl, write_task

        tc = self.cfg.task
        n_format = int(self.cfg.warmup.n_questions)
        folder = self.out / "task"
        names = {"train": "train.jsonl", "test": "test.jsonl", "bench": f"bench/{BENCH}/test.jsonl"}
        if n_format:
            names["format"] = "format.jsonl"
        files = {k: folder / v if k != "bench" else self.out / v for k, v in names.items()}
        inputs = {k: _file_id(tc[f"{k}_file"]) for k in ("train", "test") if tc[f"{k}_file"]}
        fp = fingerprint({"task": _plain(tc), "n_format": n_format, "seed": int(self.cfg.seed), "inputs": inputs})
        marker = folder / DONE
        if marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == fp \
                and all(p.is_file() for p in files.values()):
            self._skip("task", folder)
            return files
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
        try:
            self.check_outputs(new)  # raises here, before task/ and bench/ change, when the rows must not be touched
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        for key, path in files.items():  # a file whose bytes did not change keeps its date
            if not (path.is_file() and path.read_bytes() == new[key].read_bytes()):
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(new[key], path)
        shutil.rmtree(staging)
        write_json({"fingerprint": fp, "files": {k: str(v) for k, v in files.items()}}, marker)
        logger.info("task: %s", ", ".join(str(p) for p in files.values()))
        return files

    # ------------------------------------------------------------------ the recipes

    def recipe_env(self, **own: str) -> dict[str, str]:
        """The environment of a recipe: this process's, the interpreter's bin folder first on PATH (torchrun, ray),
        PYTHON = this interpreter, the preset, recipe_env, then the demo's own variables."""
        env = dict(os.environ)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env["PYTHON"] = sys.executable
        env["PRESET"] = str(self.cfg.preset)
        env.update({str(k): str(v) for k, v in self.cfg.recipe_env.items()})
        env.update({k: str(v) for k, v in own.items()})
        return env

    def run_recipe(self, script: str, args: list[str], env: dict[str, str], desc: str,
                   tag: str = "") -> dict[str, int]:
        """``bash recipes/table3/<script> args`` with its output appended to recipes.log; the lines naming a row's
        progress (start, logs, skips, wall time, failures) echoed to the demo log. Returns {row: seconds} from
        run_all's "done in" lines (a row that ran nothing is recorded as reused, ``tag`` appended); raises naming
        the failing log."""
        log_path = self.out / "recipes.log"
        cmd = ["bash", str(self.recipes / script), *args]
        logger.info("%s: %s (full output: %s)", desc, " ".join(cmd), log_path)
        seconds: dict[str, int] = {}
        tail: list[str] = []
        row, ran = None, False  # the row running now; whether it ran a command (run_logged prints "log: ...")
        with open(log_path, "a") as log:
            log.write(f"==== {time.strftime('%Y-%m-%dT%H:%M:%S')} {desc}: {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    bufsize=1)
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                text = line.rstrip("\n")
                tail = (tail + [text])[-40:]
                start = _START.match(text)
                if start:
                    row, ran = start.group(1), False
                ran = ran or text.startswith("log: ")
                m = _MARKER.match(text)
                if m:
                    seconds[m.group(1)] = int(m.group(2))
                    if not ran and m.group(1) == row:
                        self.skipped.append(f"row {row}{tag}")
                if text.startswith(("====", "log: ", "FAILED", "row '")) or "skipping" in text:
                    logger.info("  %s", text)
            rc = proc.wait()
        if rc != 0:
            failed = [t for t in tail if t.startswith(("FAILED", "row '"))] or tail[-15:]
            raise RuntimeError(f"{desc} failed (exit {rc}):\n" + "\n".join(failed) + f"\nall output: {log_path}")
        return seconds

    # ------------------------------------------------------------------ warm-up

    def warmup(self, task_files: dict[str, Path]) -> str:
        """One epoch of the recipes' SFT row on the format split (constant lr, no evaluation); returns the base
        model folder."""
        if int(self.cfg.warmup.n_questions) == 0:
            self.base_model = self.raw_model
            logger.info("warmup: disabled (warmup.n_questions=0); base model = %s", self.base_model)
            return self.base_model
        folder = self.out / "warmup"
        env = self.recipe_env(RUNS_DIR=folder, DATA_DIR=folder / "data", CKPT_DIR=folder / "checkpoints",
                              MODEL_PATH=self.raw_model, DATA_SOURCE=task_files["format"], DATA_GENERATE_TRAIN=0,
                              EVAL_DATA_DIR=self.out / "bench", EVAL=0, SFT_EPOCHS=1)
        ckpt = folder / "checkpoints" / "sft"
        if not (folder / "sft" / "train.done").is_file():
            self.run_recipe("run_data.sh", ["stages=[prepare]"], env, "warmup data")
            self.run_recipe("run_sft.sh", ["optim.lr_scheduler_type=constant", "optim.lr_warmup_steps=1",
                                           f"optim.lr={float(self.cfg.warmup.lr)}", "trainer.experiment_name=warmup"],
                            env, "warmup training")
        else:
            self._skip("warmup", ckpt)
        step = (ckpt / "latest_checkpointed_iteration.txt").read_text().strip()
        self.base_model = str(ckpt / f"global_step_{step}" / "huggingface")
        logger.info("warmup: base model %s", self.base_model)
        return self.base_model

    # ------------------------------------------------------------------ rows

    def _clear_recipe_outputs(self) -> None:
        for name in ("warmup", "data", "checkpoints", "report", "seeds", *ALL_ROWS):
            shutil.rmtree(self.out / name, ignore_errors=True)
        for name in ("timings.tsv", "report.log"):
            (self.out / name).unlink(missing_ok=True)

    def _clear_evaluations(self, keep_samples: bool) -> None:
        """Every row's evaluation (main run and seeds) and the report: the trained checkpoints stay. keep_samples:
        only the results.json files go, so the recipes evaluate again and dft_verl.eval keeps the saved samples."""
        for runs in (self.out, *sorted((self.out / "seeds").glob("*"))):
            for row in ALL_ROWS:
                if keep_samples:
                    for results in (runs / row / "eval").rglob("results.json"):
                        results.unlink()
                else:
                    shutil.rmtree(runs / row / "eval", ignore_errors=True)
                    (runs / row / "eval.log").unlink(missing_ok=True)
        shutil.rmtree(self.out / "report", ignore_errors=True)
        (self.out / "report.log").unlink(missing_ok=True)

    def check_outputs(self, task_files: dict[str, Path]) -> None:
        """Refuse (or with overwrite clear) recipe outputs made from other inputs. Two fingerprints: what the rows
        are trained from (model, training and format questions, warm-up, preset, recipe variables) and what they are
        evaluated on (the held-out questions, the EVAL_* and TOKEN_PROBS variables). When only the second changed,
        overwrite clears the evaluations alone: the trained rows are evaluated again, not retrained, and when the
        held-out file only grew at its end (same evaluation variables) their saved samples are kept. KEEP_TRAINING_STATE
        is in neither: it changes what stays on disk, not a result."""
        env = {str(k): v for k, v in _plain(self.cfg.recipe_env).items() if not _is_storage_variable(str(k))}
        evaluation = {k: v for k, v in env.items() if _is_eval_variable(k)}
        train_fp = fingerprint({"model": _model_id(self.raw_model), "warmup": _plain(self.cfg.warmup),
                                "preset": str(self.cfg.preset),
                                "recipe_env": {k: v for k, v in env.items() if k not in evaluation},
                                "questions": {k: _sha256(p) for k, p in task_files.items() if k in ("train", "format")}})
        eval_fp = fingerprint({"held_out": _sha256(task_files["test"]), "recipe_env": evaluation})
        eval_env_fp = fingerprint(evaluation)
        marker = self.out / RECIPES_MARKER
        done = json.loads(marker.read_text()) if marker.is_file() else {}
        if done and done.get("fingerprint") == train_fp:
            if done.get("eval_fingerprint") == eval_fp:
                return
            if not self.cfg.overwrite:
                raise RuntimeError(f"{self.out} holds rows evaluated on other held-out questions or evaluation "
                                   "settings (same training inputs); overwrite=true evaluates the trained rows again "
                                   "(nothing is retrained), or use another --out")
            old_bench = self.out / f"bench/{BENCH}/test.jsonl"
            grown = done.get("eval_env_fingerprint") == eval_env_fp and old_bench.is_file() \
                and task_files["bench"].read_bytes().startswith(old_bench.read_bytes())
            logger.info("held-out questions grown at the end: evaluating the new questions only" if grown else
                        "held-out questions or evaluation settings changed: clearing every row's evaluation")
            self._clear_evaluations(keep_samples=grown)
        elif done:
            if not self.cfg.overwrite:
                raise RuntimeError(f"{self.out} holds results of a different demo config (fingerprint "
                                   f"{done.get('fingerprint', '?')[:12]} != {train_fp[:12]}); use another --out or "
                                   "overwrite=true")
            self._clear_recipe_outputs()
        write_json({"fingerprint": train_fp, "eval_fingerprint": eval_fp, "eval_env_fingerprint": eval_env_fp},
                   marker)

    def rows(self, task_files: dict[str, Path]) -> dict[str, int]:
        """``run_all.sh data <rows>`` at the preset's sizes from the base model (SEED=0), then the trained rows again
        with SEED=1..seeds-1 into seeds/<s>/; returns {row: seconds} of the main run."""
        env = self.recipe_env(RUNS_DIR=self.out, DATA_DIR=self.out / "data", CKPT_DIR=self.out / "checkpoints",
                              MODEL_PATH=self.base_model, DATA_SOURCE=task_files["train"], DATA_GENERATE_TRAIN=0,
                              EVAL_DATA_DIR=self.out / "bench", SEED=0)
        rows = list(self.cfg.rows)
        seconds = self.run_recipe("run_all.sh", ["data", *rows], env, f"Table 3 ({len(rows)} rows)")
        self.row_seconds.update(seconds)
        trained = [r for r in rows if r != "base"]
        for seed in range(1, int(self.cfg.seeds)):
            if not trained:
                break
            folder = self.seed_dir(seed)
            env = {**env, "RUNS_DIR": str(folder), "CKPT_DIR": str(folder / "checkpoints"), "SEED": str(seed),
                   "TOKEN_PROBS": "0"}
            extra = self.run_recipe("run_all.sh", trained, env, f"seed {seed} ({len(trained)} rows)", f" (seed {seed})")
            self.row_seconds.update({f"{row} (seed {seed})": t for row, t in extra.items()})
        return seconds

    def seed_dir(self, seed: int) -> Path:
        """RUNS_DIR of the rows trained with SEED=seed (0: the main run, ``out`` itself)."""
        return self.out if seed == 0 else self.out / "seeds" / str(seed)

    # ------------------------------------------------------------------ all

    def run(self) -> dict:
        """All stages; returns the summary dict also written to report/summary.json."""
        from dft_verl.demo import summary as demo_summary

        self.out.mkdir(parents=True, exist_ok=True)
        write_json(_plain(self.cfg), self.out / "config.json")
        t0 = time.perf_counter()
        self._stage("model", self.model)
        task_files = self._stage("task", self.task)
        self.check_outputs(task_files)  # recipe_env may have changed with the task unchanged
        self._stage("warmup", lambda: self.warmup(task_files))
        self._stage("rows", lambda: self.rows(task_files))
        self.timings["total"] = round(time.perf_counter() - t0, 1)
        seed_dirs = [self.seed_dir(s) for s in range(int(self.cfg.seeds))]
        summary = demo_summary.write_summary(self.out, self.cfg, self.timings, self.row_seconds, self.skipped,
                                             seed_dirs)
        return summary


def _model_id(path: str) -> dict:
    """Identity of a model folder: its path and the size and mtime of each weights file (a retrained folder
    at the same path gets a new identity without hashing ~0.5 GB)."""
    folder = Path(path)
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in weights]
    return {"path": str(folder.resolve()), "weights": stats}


def _is_eval_variable(name: str) -> bool:
    """Recipe variables that change only how rows are evaluated, never how they are trained."""
    return name in ("EVAL", "TOKEN_PROBS") or name.startswith("EVAL_")


def _is_storage_variable(name: str) -> bool:
    """Recipe variables that change only what stays on disk once a row has trained, never a result."""
    return name == "KEEP_TRAINING_STATE"


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _file_id(path) -> dict:
    """Identity of an input file for fingerprints: resolved path and sha256 of its bytes."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    return {"path": str(p.resolve()), "sha256": _sha256(p)}
