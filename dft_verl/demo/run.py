"""The demo orchestrator: the project's main job end to end on CPU, every file under one folder.

Stages, in order (each skipped when its output marker exists, so a second run resumes):

    model        SmolLM2-135M-Instruct as an HF folder (converted once into the cache)   -> path logged
    task         train/test (+ format) jsonl: generated arithmetic, or the user's files   -> task/
    warmup       a few SFT steps on gold solutions of the format split, so the model ends  -> train/warmup/
                 its answers with \\boxed{} (the raw model almost never does); the result is the "base" model
    pipeline     prepare -> sample n per question -> verify -> filter (dft_verl.pipeline)  -> data/
    train        SFT on gold solutions, RFT (sft loss) and DFT (dft loss) on the filtered   -> train/<method>/
                 self-samples of the base model: verl's trainer (dft_verl.trainer.sft) under torchrun, CPU platform
    eval         Average@k of base and each method on the held-out split (dft_verl.eval)   -> eval/<model>/
                 and target-token probabilities on the filtered samples (dft_verl.analysis) -> token_probs/<model>/
                 (models in parallel worker processes)
    report       mini table + plots (dft_verl.demo.summary)                                -> report/

Markers: the pipeline stages keep their own manifests (dft_verl.pipeline.artifacts); task and each training run
write ``_demo_done.json`` with a fingerprint of the config they depend on; eval writes results.json last;
token_probs writes meta.json last. A marker made with a different config is refused unless overwrite=true.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger("dft_verl.demo")

CONFIG_DIR = Path(__file__).resolve().parent
DONE = "_demo_done.json"
BASE = "base"
RESERVED = (BASE, "raw", "warmup")  # table rows / folders the demo itself uses


# ---------------------------------------------------------------------------------------------- config


def load_config(fast: bool = False, config_file: str | None = None, overrides: list[str] | tuple = ()) -> DictConfig:
    """demo.yaml, then demo_fast.yaml (--fast), then ``config_file``, then ``key=value`` overrides.

    Keys not present in demo.yaml are rejected (a typo must not silently change nothing)."""
    cfg = OmegaConf.load(CONFIG_DIR / "demo.yaml")
    OmegaConf.set_struct(cfg, True)
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
    if not cfg.task.name:
        from dft_verl.pipeline.prepare import derive_data_source

        cfg.task.name = derive_data_source(str(cfg.task.train_file)) if cfg.task.train_file else "arith"
    methods = cfg.train.methods
    for name, m in methods.items():
        if name in RESERVED:
            raise ValueError(f"train.methods: {name!r} is reserved; method names may not be one of {list(RESERVED)}")
        if m.data not in ("gold", "filtered"):
            raise ValueError(f"train.methods.{name}.data={m.data!r}; supported: gold, filtered")
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


def read_marker(folder: Path, fp: str, overwrite: bool) -> dict | None:
    """The stage's done marker when it matches ``fp``; None when absent. A mismatch is refused (or the folder
    cleared when ``overwrite``)."""
    marker = folder / DONE
    if not marker.is_file():
        return None
    done = json.loads(marker.read_text())
    if done.get("fingerprint") == fp:
        return done
    if not overwrite:
        raise RuntimeError(f"{folder} holds results of a different demo config (fingerprint "
                           f"{done.get('fingerprint', '?')[:12]} != {fp[:12]}); use another --out or overwrite=true")
    shutil.rmtree(folder)
    return None


# ---------------------------------------------------------------------------------------------- stages


class Demo:
    """One demo run: ``Demo(cfg).run()``; ``self.out`` holds every file, ``self.timings`` the seconds per stage."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.out = Path(cfg.out).expanduser().resolve()
        self.timings: dict[str, float] = {}
        self.skipped: list[str] = []
        self.raw_model: str | None = None  # the model as given (SmolLM2 converted from the package)
        self.base_model: str | None = None  # the raw model after the format warm-up: what every method starts from

    # ------------------------------------------------------------------ helpers

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
        from dft_verl.demo.tasks import make_problems, read_task_file, split_rows, write_jsonl, write_task

        tc = self.cfg.task
        n_format = int(self.cfg.warmup.n_questions) if int(self.cfg.warmup.steps) > 0 else 0
        folder = self.out / "task"
        files = {"train": folder / "train.jsonl", "test": folder / "test.jsonl"}
        if n_format:
            files["format"] = folder / "format.jsonl"
        inputs = {k: _file_id(tc[f"{k}_file"]) for k in ("train", "test") if tc[f"{k}_file"]}
        fp = fingerprint({"task": _plain(tc), "n_format": n_format, "seed": int(self.cfg.seed), "inputs": inputs})
        if read_marker(folder, fp, bool(self.cfg.overwrite)) and all(p.is_file() for p in files.values()):
            self._skip("task", folder)
            return files
        if tc.train_file:
            train = read_task_file(tc.train_file)
            if tc.test_file:
                test = read_task_file(tc.test_file)
            else:
                train, test = split_rows(train, int(tc.n_test), int(self.cfg.seed))
            write_jsonl(train, files["train"])
            write_jsonl(test, files["test"])
            if n_format:  # the warm-up teaches the answer format, on generated problems whatever the task
                write_jsonl(make_problems(n_format, int(self.cfg.seed) + 2, tuple(tc.families)), files["format"])
        else:
            write_task(folder, int(tc.n_train), int(tc.n_test), int(self.cfg.seed), tuple(tc.families), n_format)
        write_json({"fingerprint": fp, "files": {k: str(v) for k, v in files.items()}}, folder / DONE)
        logger.info("task: %s", ", ".join(str(p) for p in files.values()))
        return files

    # ------------------------------------------------------------------ warm-up

    def warmup(self, task_files: dict[str, Path]) -> str:
        """SFT of the raw model on the format split's gold solutions; returns the base model folder."""
        steps = int(self.cfg.warmup.steps)
        if steps == 0:
            self.base_model = self.raw_model
            logger.info("warmup: disabled (warmup.steps=0); base model = %s", self.base_model)
            return self.base_model
        data = self.prepare_split("format", task_files["format"])
        self.base_model = self.train_one("warmup", "sft", data, steps, self.raw_model)
        return self.base_model

    # ------------------------------------------------------------------ pipeline

    def _pipeline_overrides(self, out_dir: Path, source: Path, stages: list[str]) -> list[str]:
        sc = self.cfg.sample
        return [
            f"out_dir={out_dir}",
            f"stages=[{','.join(stages)}]",
            f"seed={int(self.cfg.seed)}",
            f"overwrite={str(bool(self.cfg.overwrite)).lower()}",
            f"prepare.source={source}",
            f"prepare.data_source={self.cfg.task.name}",
            f"prepare.split_name={source.stem}",
            f"sample.model_path={self.base_model}",
            "sample.backend=hf",
            f"sample.n={int(sc.n)}",
            f"sample.temperature={float(sc.temperature)}",
            f"sample.top_p={float(sc.top_p)}",
            f"sample.max_new_tokens={int(sc.max_new_tokens)}",
            f"sample.batch_size={int(sc.batch_size)}",
            f"sample.shard_size={int(sc.shard_size)}",
            "verify.use_ray=false",
            "verify.num_workers=1",
        ]

    def _run_pipeline(self, split: str, source: Path, stages: list[str]) -> dict:
        from dft_verl.pipeline import __main__ as driver
        from dft_verl.pipeline import artifacts

        out_dir = self.out / "data" / split

        def manifest_mtime(stage):
            path = out_dir / stage / artifacts.MANIFEST
            return path.stat().st_mtime_ns if path.is_file() else None

        before = {stage: manifest_mtime(stage) for stage in stages}
        results = driver.run(artifacts.load_config(self._pipeline_overrides(out_dir, source, stages)))
        for stage in stages:  # the pipeline skips an up-to-date stage without rewriting its manifest
            if before[stage] is not None and manifest_mtime(stage) == before[stage]:
                self.skipped.append(f"{split}/{stage}")
        return results

    def prepare_split(self, split: str, source: Path) -> Path:
        """The pipeline's prepare stage on one split; returns its gold SFT parquet."""
        self._run_pipeline(split, source, ["prepare"])
        return self.out / "data" / split / "prepare" / "sft.parquet"

    def pipeline(self, task_files: dict[str, Path]) -> dict:
        """prepare -> sample -> verify -> filter on train (with the base model), prepare on test."""
        from dft_verl.pipeline import STAGES

        results = {"train": self._run_pipeline("train", task_files["train"], list(STAGES)),
                   "test": self._run_pipeline("test", task_files["test"], ["prepare"])}
        verify = results["train"]["verify"]
        filt = results["train"]["filter"]
        logger.info("base model on the training questions: %.1f%% of %d samples correct (%s); RFT/DFT data: "
                    "%d distinct correct responses -> %s", 100 * verify["acceptance_rate"], verify["n_responses"],
                    verify["reasons"], filt["n_sft"], self.train_data("filtered"))
        if filt["n_sft"] == 0:
            raise RuntimeError(f"{self.train_data('filtered')} is empty: the base model solved no training question; "
                               "use easier task.families, more warmup.steps or a larger sample.n")
        return results

    # ------------------------------------------------------------------ train

    def train_data(self, kind: str) -> Path:
        folder = self.out / "data" / "train"
        return folder / ("prepare" if kind == "gold" else "filter") / "sft.parquet"

    def train(self) -> dict[str, str]:
        """Train every method in cfg.train.methods from the base model; returns {method: HF model folder}."""
        return {name: self.train_one(name, str(m.loss), self.train_data(str(m.data)), int(self.cfg.train.steps),
                                     self.base_model)
                for name, m in self.cfg.train.methods.items()}

    def train_one(self, name: str, loss: str, data: Path, steps: int, init_model: str) -> str:
        """One verl training run (torchrun subprocess) into train/<name>/; returns its HF model folder."""
        tc = self.cfg.train
        folder = self.out / "train" / name
        if not data.is_file():
            raise FileNotFoundError(f"training data for {name} not found: {data}")
        settings = {k: v for k, v in _plain(tc).items() if k not in ("methods", "steps")}
        fp = fingerprint({"train": settings, "steps": steps, "loss": loss, "model": _model_id(init_model),
                          "seed": int(self.cfg.seed), "data": _file_id(data)})
        hf_dir = folder / f"global_step_{steps}" / "huggingface"
        done = read_marker(folder, fp, bool(self.cfg.overwrite))
        if done and (hf_dir / "config.json").is_file():
            self._skip(f"train {name}", hf_dir)
            return str(hf_dir)
        if folder.exists():  # an interrupted run: start clean (the runs are short and save only at the end)
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        cmd = training_command(init_model, data, folder, name, loss, tc, int(self.cfg.seed), steps)
        log_path = folder / "train.log"
        logger.info("train %s: loss=%s on %s, %d steps from %s -> %s (trainer log: %s)", name, loss, data, steps,
                    init_model, folder, log_path)
        t0 = time.perf_counter()
        metrics = run_logged(cmd, training_env(tc), log_path, total_steps=steps, desc=f"train {name}")
        if not (hf_dir / "config.json").is_file():
            raise RuntimeError(f"train {name}: trainer exited without writing {hf_dir}; see {log_path}")
        seconds = round(time.perf_counter() - t0, 1)
        write_json({"fingerprint": fp, "model": str(hf_dir), "steps": steps, "seconds": seconds, "metrics": metrics,
                    "command": cmd}, folder / DONE)
        logger.info("train %s: %d steps in %.0f s -> %s", name, steps, seconds, hf_dir)
        return str(hf_dir)

    # ------------------------------------------------------------------ eval

    def test_questions(self) -> list[tuple[int, str, str]]:
        """Held-out (index, question, gold) from the prepared test RL parquet."""
        import pandas as pd

        df = pd.read_parquet(self.out / "data" / "test" / "prepare" / "rl.parquet")
        return [(int(r.extra_info["index"]), str(r.extra_info["question"]), str(r.reward_model["ground_truth"]))
                for r in df.itertuples(index=False)]

    def eval_jobs(self, models: dict[str, str]) -> tuple[list[dict], dict[str, dict]]:
        """(jobs still to run, {name: paths} of models already done) for evaluate_model."""
        ec = self.cfg.eval
        questions = self.test_questions()
        jobs, done = [], {}
        for name, model in models.items():
            job = {"name": name, "model": model, "bench": str(self.cfg.task.name), "questions": questions,
                   "k": int(ec.k), "temperature": float(ec.temperature), "max_new_tokens": int(ec.max_new_tokens),
                   "seed": int(self.cfg.seed), "batch_size": int(ec.batch_size),
                   "out": str(self.out / "eval" / name),
                   "token_probs": None}
            if self.cfg.analysis.token_probs:
                job["token_probs"] = {"data": str(self.train_data("filtered")),
                                      "out": str(self.out / "token_probs" / name),
                                      "max_length": int(self.cfg.train.max_length),
                                      "batch_size": int(self.cfg.analysis.token_probs_batch_size)}
            status = job_status(job)
            if status == "done":
                self._skip(f"eval {name}", job["out"])
                if job["token_probs"]:
                    self._skip(f"token_probs {name}", job["token_probs"]["out"])
                done[name] = job_paths(job)
                continue
            if status == "stale":
                if not self.cfg.overwrite:
                    raise RuntimeError(f"{job['out']}/results.json was made with other eval settings; "
                                       "use another --out or overwrite=true")
                shutil.rmtree(job["out"])
            jobs.append(job)
        return jobs, done

    def evaluate(self, models: dict[str, str]) -> dict[str, dict]:
        """Average@k (and target-token probabilities) of each model; returns {name: {"results", "token_probs"}}.

        With eval.workers > 1 the models are evaluated in that many processes of eval.threads_per_worker threads
        (measured on 2 cores: 0.60 s per sampled response with two 1-thread processes, 0.72-1.06 s with one
        2-thread process); each worker's progress bars go to eval/<model>/eval.log."""
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        jobs, paths = self.eval_jobs(models)
        workers = min(int(self.cfg.eval.workers), len(jobs))
        for job in jobs:
            logger.info("eval %s: %d questions x k=%d%s -> %s", job["name"], len(job["questions"]), job["k"],
                        " + token probabilities" if job["token_probs"] else "", job["out"])
        if workers <= 1:
            for job in jobs:
                paths[job["name"]] = self._log_eval(evaluate_model(job))
        else:
            import concurrent.futures as cf
            import multiprocessing as mp

            logger.info("eval: %d models in %d worker processes (%d thread(s) each); worker logs: "
                        "eval/<model>/eval.log", len(jobs), workers, int(self.cfg.eval.threads_per_worker))
            with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                        initargs=(int(self.cfg.eval.threads_per_worker),)) as pool, \
                    tqdm(total=len(jobs), desc="eval", unit="model") as bar, logging_redirect_tqdm():
                futures = [pool.submit(evaluate_model, {**job, "log_file": str(Path(job["out"]) / "eval.log")})
                           for job in jobs]
                for fut in cf.as_completed(futures):
                    result = fut.result()
                    paths[result["name"]] = self._log_eval(result)
                    bar.set_postfix_str(f"{result['name']} {result['avg_at_k']:.1f}%", refresh=False)
                    bar.update(1)
        return {name: paths[name] for name in models}

    def _log_eval(self, result: dict) -> dict:
        logger.info("eval %s: Average@%d = %.1f%% in %.0f s -> %s", result["name"], result["k"], result["avg_at_k"],
                    result["seconds"], result["results"])
        return {"results": result["results"], "token_probs": result["token_probs"]}

    # ------------------------------------------------------------------ all

    def run(self) -> dict:
        """All stages; returns the summary dict also written to report/summary.json."""
        from dft_verl.demo import summary as demo_summary

        self.out.mkdir(parents=True, exist_ok=True)
        write_json(_plain(self.cfg), self.out / "config.json")
        t0 = time.perf_counter()
        self._stage("model", self.model)
        task_files = self._stage("task", self.task)
        self._stage("warmup", lambda: self.warmup(task_files))
        data = self._stage("pipeline", lambda: self.pipeline(task_files))
        trained = self._stage("train", self.train)
        models = {BASE: self.base_model, **trained}
        if self.cfg.eval.include_raw and self.raw_model != self.base_model:
            models = {"raw": self.raw_model, **models}
        evaluated = self._stage("eval", lambda: self.evaluate(models))
        evals = {name: Path(p["results"]) for name, p in evaluated.items()}
        probs = {name: Path(p["token_probs"]) for name, p in evaluated.items() if p["token_probs"]}
        report = self._stage("report", lambda: demo_summary.write_report(
            self.out / "report", self.cfg, evals, probs, data, self.out))
        self.timings["total"] = round(time.perf_counter() - t0, 1)
        report["timings"] = dict(self.timings)
        report["skipped"] = list(self.skipped)
        write_json(report, self.out / "report" / "summary.json")
        return report


# ---------------------------------------------------------------------------------------------- evaluation


def job_paths(job: dict) -> dict:
    return {"results": str(Path(job["out"]) / "results.json"),
            "token_probs": job["token_probs"]["out"] if job["token_probs"] else None}


def job_status(job: dict) -> str:
    """"done" (results.json with these settings, and token probabilities if asked), "todo", or "stale"
    (results.json made with other settings)."""
    from dft_verl.analysis.token_probs import has_token_probs

    results = Path(job["out"]) / "results.json"
    if not results.is_file():
        return "todo"
    res = json.loads(results.read_text())
    if any(res.get(k) != job[k] for k in ("model", "k", "temperature", "max_new_tokens", "seed")):
        return "stale"
    if job["token_probs"] and not has_token_probs(job["token_probs"]["out"]):
        return "todo"
    return "done"


def _worker_init(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def evaluate_model(job: dict) -> dict:
    """Average@k of one model on the held-out questions (dft_verl.eval), then its target-token probabilities on
    the RFT/DFT data (dft_verl.analysis.token_probs). Each part skips itself when already done. Runs in-process
    or in a worker process; with job["log_file"], progress bars and logs go to that file."""
    import contextlib

    log_file = job.get("log_file")
    with contextlib.ExitStack() as stack:
        if log_file:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            stream = stack.enter_context(open(log_file, "a"))
            stack.enter_context(contextlib.redirect_stderr(stream))
            stack.enter_context(contextlib.redirect_stdout(stream))
            handler = logging.StreamHandler(stream)
            handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
            root = logging.getLogger()
            root.setLevel(logging.INFO)
            root.addHandler(handler)
            stack.callback(root.removeHandler, handler)
        return _evaluate_model(job)


def _evaluate_model(job: dict) -> dict:
    from dft_verl.benchmarks import Question
    from dft_verl.eval import EvalSettings, evaluate_benchmark, write_json as eval_write_json

    t0 = time.perf_counter()
    out = Path(job["out"])
    settings = EvalSettings(model=job["model"], k=job["k"], temperature=job["temperature"],
                            max_new_tokens=job["max_new_tokens"], seed=job["seed"])
    questions = [Question(benchmark=job["bench"], index=i, question=q, gold=g) for i, q, g in job["questions"]]
    summary = evaluate_benchmark(job["bench"], questions, settings, out, backend="hf", batch_size=job["batch_size"],
                                 num_workers=1)
    eval_write_json(out / "results.json", {
        "model": job["model"], "k": settings.k, "temperature": settings.temperature,
        "max_new_tokens": settings.max_new_tokens, "seed": settings.seed, "limit": None,
        "benchmarks": {job["bench"]: summary}, "average": summary["avg_at_k"], "average_ci95": summary["ci95"],
    })
    tp = job["token_probs"]
    if tp:
        from dft_verl.analysis.token_probs import compute

        compute(job["model"], tp["data"], tp["out"], max_length=tp["max_length"], batch_size=tp["batch_size"],
                device="cpu", dtype="float32")
    return {"name": job["name"], "k": settings.k, "avg_at_k": summary["avg_at_k"],
            "seconds": time.perf_counter() - t0, **job_paths(job)}


# ---------------------------------------------------------------------------------------------- training


def training_command(model: str, data: Path, folder: Path, name: str, loss: str, tc, seed: int,
                     steps: int | None = None) -> list[str]:
    """torchrun command line of dft_verl.trainer.sft for one demo run (CPU platform); steps default tc.steps."""
    from dft_verl.trainer import cpu_overrides

    steps = int(tc.steps if steps is None else steps)
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(tc.nproc)}",
        "-m", "dft_verl.trainer.sft",
        f"model.path={model}",
        f"data.train_files={data}",
        f"data.train_batch_size={int(tc.batch_size)}",
        f"data.micro_batch_size_per_gpu={int(tc.micro_batch_size)}",
        f"data.max_length={int(tc.max_length)}",
        "data.truncation=right",
        f"loss.type={loss}",
        f"optim.lr={float(tc.lr)}",
        f"optim.lr_warmup_steps={int(tc.warmup_steps)}",
        f"trainer.total_training_steps={steps}",
        # the epoch loop must not end before the last step (verl saves only at the last step or save_freq)
        f"trainer.total_epochs={steps}",
        "trainer.save_freq=-1",
        "trainer.test_freq=-1",
        f"trainer.seed={seed}",
        f"trainer.default_local_dir={folder}",
        "trainer.project_name=dft_verl_demo",
        f"trainer.experiment_name={name}",
        "trainer.logger=[console]",
        # an HF copy is all eval needs; sharded model/optimizer states would add ~1.6 GB per method
        "checkpoint.save_contents=[hf_model]",
        *cpu_overrides(str(tc.dtype)),
        *[str(o) for o in tc.extra_overrides],
    ]


def training_env(tc) -> dict[str, str]:
    from dft_verl.trainer.overrides import cpu_env

    env = cpu_env()
    env["OMP_NUM_THREADS"] = str(int(tc.threads_per_rank))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # the trainer imports dft_verl from the same place as this process (a source checkout or site-packages)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_logged(cmd: list[str], env: dict, log_path: Path, total_steps: int, desc: str) -> dict[int, dict]:
    """Run ``cmd`` with its output in ``log_path``, a progress bar over verl's ``step:N - k:v`` console lines.

    Returns {step: {metric: value}}; raises with the log's tail when the command fails."""
    from tqdm.auto import tqdm

    from dft_verl.trainer.metrics import parse_step_line

    metrics: dict[int, dict] = {}
    with open(log_path, "w") as log, tqdm(total=total_steps, desc=desc, unit="step") as bar:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            parsed = parse_step_line(line)
            if parsed:
                step, metrics[step] = parsed
                loss = metrics[step].get("train/loss")
                if loss is not None:
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                bar.update(max(0, step - bar.n))
        rc = proc.wait()
    if rc != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
        raise RuntimeError(f"{desc} failed (exit {rc}); full log: {log_path}\n{tail}")
    return metrics


def _model_id(path: str) -> dict:
    """Identity of a model folder: its path and the size and mtime of each weights file (a retrained folder
    at the same path gets a new identity without hashing ~0.5 GB)."""
    folder = Path(path)
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in weights]
    return {"path": str(folder.resolve()), "weights": stats}


def _file_id(path) -> dict:
    """Identity of an input file for fingerprints: resolved path and sha256 of its bytes."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    h = hashlib.sha256(p.read_bytes()).hexdigest()
    return {"path": str(p.resolve()), "sha256": h}
