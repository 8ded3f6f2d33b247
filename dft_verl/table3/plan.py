"""The steps of each Table-3 stage (data, a row, the report) as data: what runs, what it reads, what it writes.

``steps(s, stage, extra)`` yields a stage's steps in order. It is a generator on purpose: the steps after training
(evaluating each checkpoint) are only known once training has written its checkpoints, so the runner executes each
step before asking for the next. Without a checkpoint (``print``, ``check``) the newest step reads "LATEST".

A step names its module and arguments; ``dft_verl.table3.launch`` turns them into the argv of this machine or of a
Ray job. Every override a row's trainer gets is built here, in the order a verl user reads them: the row's own, the
paper's (or the preset's) sizes, the cluster shape, the seed, the CPU platform, the board, then ``extra`` last.
"""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from dft_verl.table3 import board
from dft_verl.table3.rows import DATA_FILES, ROW_KEYS, STAGES, Row, get_row
from dft_verl.table3.settings import Settings

PROJECT = board.PROJECT


@dataclass
class Step:
    """One process of a stage. ``reads``: files/folders whose fingerprints are inputs; ``outputs``: what must exist
    for a skip; ``clears``: deleted before a rerun whose inputs changed; ``after``: called once the step is done (run
    or skipped) with whether it ran."""

    stage: str
    name: str
    module: str
    args: list[str]
    kind: str = "python"  # "python" (one process) or "torchrun" (N_GPUS_PER_NODE per node)
    gpus: int = 0  # GPUs a Ray job's entrypoint reserves (DEVICE=gpu)
    reads: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    clears: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    all_nodes: bool = False  # run on every node of a multi-node torchrun (training); else node 0 alone
    local: bool = False  # on this machine even with RAY_ADDRESS (reads and writes RUNS_DIR only)
    overwrite_args: list[str] = field(default_factory=list)  # appended with OVERWRITE=1
    dtype: str | None = None  # a training step's compute dtype, recorded in its manifest for the report
    after: Callable[[bool], None] | None = None

    @property
    def id(self) -> str:
        return f"{self.stage}/{self.name}"


# ------------------------------------------------------------------------------------------------ paths


def runs(s: Settings, *parts: str) -> Path:
    return Path(s.RUNS_DIR, *parts)


def data_file(s: Settings, key: str) -> Path:
    return Path(s.DATA_DIR) / DATA_FILES[key]


def ckpt_dir(s: Settings, row: str) -> Path:
    return Path(s.CKPT_DIR) / row


def latest_step(ckpt: Path) -> str:
    """The step of the newest checkpoint verl recorded under ``ckpt``; "LATEST" when there is none yet."""
    tracker = ckpt / "latest_checkpointed_iteration.txt"
    return tracker.read_text().strip() if tracker.is_file() else "LATEST"


def cost_records(s: Settings, stage: str, name: str, trainer: bool = False) -> tuple[dict[str, str], list[str]]:
    """(env, files) of a step's cost records (dft_verl.cost): the file its process writes its counts to and, for a
    trainer, the file verl's file logger writes its metrics to (the runner keeps earlier attempts' metrics). The files
    are cleared with the step's other outputs when its inputs change."""
    from dft_verl import cost

    counts = cost.cost_file(runs(s, stage), name)
    env = {cost.ENV: str(counts)}
    files = [str(counts)]
    if trainer:
        metrics = cost.metrics_file(runs(s, stage), name)
        env["VERL_FILE_LOGGER_PATH"] = str(metrics)
        files += [str(p) for p in cost.metrics_files(runs(s, stage), name)] or [str(metrics)]
    return env, files


def eval_args(s: Settings) -> list[str]:
    """EVAL_ARGS split as a shell would."""
    return shlex.split(s.EVAL_ARGS)


def generation_dtype(s: Settings, backend: str) -> str | None:
    """GEN_DTYPE where it applies (DEVICE=cpu, the hf backend) and is not that backend's default (float32,
    ``dft_verl.eval.default_dtype``); else None, so that a float32 run's sampling and evaluation commands stay those
    of earlier versions (finished steps stand)."""
    from dft_verl.eval import default_dtype

    return s.GEN_DTYPE if s.cpu and backend == "hf" and s.GEN_DTYPE != default_dtype(backend) else None


def eval_benchmarks(s: Settings) -> list[str]:
    """The benchmarks an evaluation asks for (EVAL_ARGS's --benchmarks, parsed by dft_verl.eval's own parser)."""
    from dft_verl.eval import build_parser

    args = build_parser().parse_args(["--model", "m", "--out", "o", *eval_args(s)])
    return [b.strip() for b in args.benchmarks.split(",") if b.strip()]


# ------------------------------------------------------------------------------------------------ overrides


def optional(s: Settings, overrides: dict[str, str]) -> list[str]:
    """``key=value`` for each {key: SETTING} whose setting is set (empty: the config's own value stays)."""
    return [f"{key}={getattr(s, name)}" for key, name in overrides.items() if getattr(s, name)]


def seed_overrides(s: Settings, trainer: str) -> list[str]:
    """SEED for every trained row: verl's SFT trainer (SFT family, DPO); PPO/GRPO's data order, mini-batch order
    (actor and critic) and rollout sampling."""
    if not s.SEED:
        return []
    if trainer == "ppo":
        return [f"data.seed={s.SEED}", f"actor_rollout_ref.actor.data_loader_seed={s.SEED}",
                f"critic.data_loader_seed={s.SEED}", f"actor_rollout_ref.rollout.seed={s.SEED}"]
    return [f"trainer.seed={s.SEED}"]


def engine_overrides(s: Settings) -> list[str]:
    """The SFT-family and DPO trainers' CPU overrides (their one definition: dft_verl.trainer.cpu_overrides)."""
    if not s.cpu:
        return []
    from dft_verl.trainer.overrides import cpu_overrides

    return cpu_overrides(s.TRAIN_DTYPE)


def checkpoint_overrides(s: Settings, row: str) -> list[str]:
    return [f"trainer.project_name={PROJECT}", f"trainer.experiment_name={row}",
            f"trainer.default_local_dir={ckpt_dir(s, row)}", *optional(s, {"trainer.save_freq": "SAVE_FREQ"})]


def sft_overrides(s: Settings, row: Row, train_data: Path) -> list[str]:
    """The SFT family (dft_verl.trainer.sft, config dft_sft): the paper's optimiser and data limits, HF weights in
    every checkpoint (global_step_<N>/huggingface) for evaluation."""
    out = [*row.overrides, f"data.train_files={train_data}", f"model.path={s.MODEL_PATH}",
           f"data.train_batch_size={s.SFT_BATCH_SIZE}", f"data.max_length={s.SFT_MAX_LENGTH}",
           f"data.micro_batch_size_per_gpu={s.SFT_MICRO_BATCH_SIZE_PER_GPU}", "data.truncation=right",
           f"optim.lr={s.SFT_LR}", f"optim.lr_scheduler_type={s.SFT_LR_SCHEDULER}",
           f"optim.lr_warmup_steps_ratio={s.SFT_WARMUP_RATIO}", f"optim.clip_grad={s.SFT_CLIP_GRAD}",
           f"optim.betas={s.SFT_BETAS}", f"loss.normalization={s.SFT_NORMALIZATION}",
           f"model.use_fused_kernels={s.SFT_FUSED_KERNELS}", f"trainer.total_epochs={s.SFT_EPOCHS}"]
    if s.SFT_NORMALIZATION == "micro_batch":  # M fixed micro-batches of SFT_MICRO_BATCH_SIZE_PER_GPU sequences
        out.append("data.use_dynamic_bsz=False")
    if row.ref_logprobs == "iw_sft":
        out.append(f"loss.iw_clip={s.IW_SFT_CLIP}")
    return [*out, f"trainer.nnodes={s.NNODES}", f"trainer.n_gpus_per_node={s.N_GPUS_PER_NODE}",
            *checkpoint_overrides(s, row.key), "checkpoint.save_contents=[model,optimizer,extra,hf_model]",
            *seed_overrides(s, "sft"), *engine_overrides(s), board.logger_override(s)]


def dpo_overrides(s: Settings, row: Row, train_data: Path) -> list[str]:
    """DPO (dft_verl.dpo.train, config dpo: verl's engine SFT trainer + the DPO loss)."""
    return [f"model.path={s.MODEL_PATH}", f"data.train_files={train_data}", f"data.max_length={s.DPO_MAX_LENGTH}",
            "data.truncation=right", f"data.train_batch_size={s.DPO_BATCH_SIZE}", f"optim.lr={s.DPO_LR}",
            f"optim.lr_warmup_steps_ratio={s.DPO_WARMUP_RATIO}", f"dpo.beta={s.DPO_BETA}",
            f"trainer.total_epochs={s.DPO_EPOCHS}", f"trainer.nnodes={s.NNODES}",
            f"trainer.n_gpus_per_node={s.N_GPUS_PER_NODE}", *checkpoint_overrides(s, row.key),
            "checkpoint.save_contents=[model,optimizer,extra,hf_model]", *seed_overrides(s, "dpo"),
            *engine_overrides(s), board.logger_override(s)]


def ppo_overrides(s: Settings, row: Row) -> list[str]:
    """PPO and GRPO (verl.trainer.main_ppo with dft_verl/config/online/{ppo,grpo}.yaml)."""
    rl = data_file(s, "rl")
    out = ["--config-path=pkg://dft_verl.config.online", f"--config-name={row.config}",
           f"actor_rollout_ref.model.path={s.MODEL_PATH}", f"data.train_files={rl}", f"data.val_files={rl}",
           f"data.train_batch_size={s.RL_BATCH_SIZE}", f"actor_rollout_ref.actor.optim.lr={s.RL_LR}",
           f"actor_rollout_ref.actor.optim.lr_warmup_steps_ratio={s.RL_WARMUP_RATIO}",
           f"actor_rollout_ref.rollout.temperature={s.RL_TEMPERATURE}", f"trainer.total_epochs={s.RL_EPOCHS}",
           f"trainer.nnodes={s.NNODES}", f"trainer.n_gpus_per_node={s.N_GPUS_PER_NODE}"]
    out += optional(s, {"data.max_prompt_length": "RL_MAX_PROMPT_LENGTH",
                        "data.max_response_length": "RL_MAX_RESPONSE_LENGTH",
                        "actor_rollout_ref.actor.ppo_mini_batch_size": "RL_MINI_BATCH_SIZE"})
    if s.RL_MICRO_BATCH_SIZE_PER_GPU:
        micro = s.RL_MICRO_BATCH_SIZE_PER_GPU
        out += [f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
                f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro}",
                f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={micro}"]
        if row.key == "ppo":
            out.append(f"critic.ppo_micro_batch_size_per_gpu={micro}")
    if row.key == "grpo":
        out += [f"actor_rollout_ref.rollout.n={s.GRPO_N}", f"actor_rollout_ref.actor.kl_loss_coef={s.GRPO_KL_COEF}"]
        if float(s.GRPO_KL_COEF) == 0:
            out.append("actor_rollout_ref.actor.use_kl_loss=false")
    if row.key == "ppo":
        out += [f"critic.optim.lr={s.PPO_CRITIC_LR}", f"critic.optim.lr_warmup_steps_ratio={s.RL_WARMUP_RATIO}"]
    out += [*checkpoint_overrides(s, row.key), *seed_overrides(s, "ppo")]
    if s.cpu:
        out.append("+platform=cpu" if s.TRAIN_DTYPE == "float32" else "+platform=cpu_bf16")
        if s.RAY_ADDRESS:  # a running cluster has its own CPU count (ray start --num-cpus); ray.init may not set one
            out.append("ray_kwargs.ray_init.num_cpus=null")
    return [*out, board.logger_override(s)]


# ------------------------------------------------------------------------------------------------ stages


def steps(s: Settings, stage: str, extra: list[str] | tuple = ()) -> Iterator[Step]:
    """The steps of ``stage`` (data, a row key, report); ``extra`` overrides go last on its main command (the report
    has none: they are ignored there, so one list can serve a row and the report after it)."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
    if stage == "data":
        yield from data_steps(s, list(extra))
    elif stage == "report":
        yield report_step(s)
    elif stage == "base":
        if extra:
            raise ValueError(f"the base row only evaluates MODEL_PATH; it takes no overrides, got {list(extra)}")
        yield from evaluation_steps(s, get_row("base"), s.MODEL_PATH, step=0)
    else:
        yield from row_steps(s, get_row(stage), list(extra))


def data_steps(s: Settings, extra: list[str]) -> Iterator[Step]:
    """Generated inputs (questions, held-out set, a tiny model) or the packaged SmolLM2, then the offline pipeline."""
    data, source = Path(s.DATA_DIR), s.DATA_SOURCE
    n_train = s.int("DATA_GENERATE_TRAIN")
    questions = ["--task-dir", str(data / "task"), "--n-train", s.DATA_GENERATE_TRAIN, "--n-test",
                 s.DATA_GENERATE_TEST, "--families", s.DATA_GENERATE_FAMILIES]
    if n_train:
        if not s.EVAL_DATA_DIR:
            raise ValueError("DATA_GENERATE_TRAIN needs EVAL_DATA_DIR (where the held-out questions go)")
        source = str(data / "task" / "train.jsonl")
        yield Step("data", "inputs", "dft_verl.demo.offline_inputs", [*questions, "--bench-dir", s.EVAL_DATA_DIR],
                   outputs=[source, str(Path(s.EVAL_DATA_DIR) / "math500" / "test.jsonl")])
    # MODEL_BUILD builds MODEL_PATH only when it holds no model yet (a model passed in is used as it is)
    model = Path(s.MODEL_PATH)
    if s.MODEL_BUILD not in ("", "none") and not (model / "config.json").is_file():
        if s.MODEL_BUILD == "tiny":
            if not n_train:
                raise ValueError("MODEL_BUILD=tiny fits the model to generated questions: set DATA_GENERATE_TRAIN")
            yield Step("data", "model", "dft_verl.demo.offline_inputs", [*questions, "--tiny-model", str(model)],
                       outputs=[str(model / "config.json")])
        else:
            yield Step("data", "model", "dft_verl.demo.smollm2", ["--cache-dir", str(model)],
                       outputs=[str(model / "config.json")])
    args = [f"out_dir={data}", f"prepare.source={source}", f"prepare.max_rows={s.DATA_MAX_ROWS}",
            f"prepare.prompt_template={s.PROMPT_TEMPLATE}", f"sample.model_path={s.MODEL_PATH}",
            f"sample.backend={s.SAMPLE_BACKEND}", f"sample.n={s.SAMPLE_N}", f"sample.temperature={s.SAMPLE_TEMPERATURE}",
            f"sample.max_new_tokens={s.SAMPLE_MAX_NEW_TOKENS}", f"verify.use_ray={s.VERIFY_USE_RAY}"]
    args += optional(s, {"sample.batch_size": "SAMPLE_BATCH_SIZE", "sample.processes": "SAMPLE_PROCESSES",
                         "verify.num_workers": "VERIFY_NUM_WORKERS"})
    if dtype := generation_dtype(s, s.SAMPLE_BACKEND):
        args.append(f"+sample.backend_kwargs.dtype={dtype}")
    if s.SAMPLE_BACKEND == "verl":  # one shard is one Ray job: make it large
        args += [f"+sample.backend_kwargs.n_gpus_per_node={s.N_GPUS_PER_NODE}",
                 f"+sample.backend_kwargs.nnodes={s.NNODES}", "sample.shard_size=8192"]
    args += extra
    stages = next((a.split("=", 1)[1].strip("[]").split(",") for a in reversed(args) if a.startswith("stages=")),
                  ["prepare", "sample", "verify", "filter"])
    outputs = {"prepare": ["rl", "sft"], "filter": ["rft", "dpo"]}
    reads = [source] if Path(source).exists() else []
    env, records = cost_records(s, "data", "pipeline")
    yield Step("data", "pipeline", "dft_verl.pipeline", args, reads=reads + [s.MODEL_PATH] * ("sample" in stages),
               outputs=[str(data_file(s, k)) for st in stages for k in outputs.get(st, [])], env=env, clears=records,
               # changed inputs: the pipeline reruns the stages they change by its own fingerprints (the same rule)
               overwrite_args=["overwrite=true"])


def ref_data(s: Settings, row: Row) -> Path:
    """The row's data with the reference log-probs added (what its training reads)."""
    return Path(s.DATA_DIR) / "ref_logprobs" / f"{row.data}.parquet"


def ref_logprobs_step(s: Settings, row: Row) -> Step:
    """A reference policy's per-token log-probs added to the row's data, tokenised as training tokenises it."""
    out = ref_data(s, row)
    if row.ref_logprobs == "dpo":
        model, source = s.MODEL_PATH, data_file(s, "dpo")
        args = ["--model", model, "--data", str(source), "--out", str(out), "--max-length", s.DPO_MAX_LENGTH,
                "--truncation", "right"]
        module = "dft_verl.dpo.ref_logprobs"
    else:
        model, source = s.IW_SFT_REF_MODEL or s.MODEL_PATH, data_file(s, row.data)
        args = ["--model", model, "--data", str(source), "--out", str(out), "--max-length", s.SFT_MAX_LENGTH]
        module = "dft_verl.trainer.ref_logprobs"
    env, records = cost_records(s, row.key, "ref_logprobs")
    return Step(row.key, "ref_logprobs", module, args, gpus=1, reads=[str(source), model], outputs=[str(out)],
                clears=[str(out), *records], env=env)


def train_dtype(s: Settings) -> str:
    """The dtype a row's trainer computes in: TRAIN_DTYPE on CPU (resolved, never "auto"); on GPUs verl's default
    FSDP mixed precision, bf16 parameters and compute with fp32 master weights."""
    return s.TRAIN_DTYPE if s.cpu else "bfloat16"


def train_step(s: Settings, row: Row, extra: list[str]) -> Step:
    ckpt = ckpt_dir(s, row.key)
    data = ref_data(s, row) if row.ref_logprobs else data_file(s, row.data)
    env, records = cost_records(s, row.key, "train", trainer=True)
    common = dict(reads=[str(data), s.MODEL_PATH], outputs=[str(ckpt / "latest_checkpointed_iteration.txt")],
                  clears=[str(ckpt), *records], env={**board.logger_env(s, row.key), **env}, all_nodes=True,
                  dtype=train_dtype(s))
    if row.trainer == "sft":
        if s.RAY_ADDRESS:  # verl's Ray SFT trainer: one job, ranks placed by Ray on every node
            return Step(row.key, "train", "dft_verl.trainer.sft_ray", [*sft_overrides(s, row, data), *extra], **common)
        return Step(row.key, "train", "dft_verl.trainer.sft", [*sft_overrides(s, row, data), *extra], kind="torchrun",
                    **common)
    if row.trainer == "dpo":
        if s.RAY_ADDRESS:  # verl's Ray SFT trainer with the DPO loss: one job, ranks placed by Ray on every node
            return Step(row.key, "train", "dft_verl.dpo.train_ray", [*dpo_overrides(s, row, data), *extra], **common)
        return Step(row.key, "train", "dft_verl.dpo.train", [*dpo_overrides(s, row, data), *extra], kind="torchrun",
                    **common)
    return Step(row.key, "train", "verl.trainer.main_ppo", [*ppo_overrides(s, row), *extra],
                **{**common, "reads": [str(data_file(s, "rl")), s.MODEL_PATH]})


def row_steps(s: Settings, row: Row, extra: list[str]) -> Iterator[Step]:
    """Reference log-probs (iw-SFT, DPO), training, pruning the training state (KEEP_TRAINING_STATE=0), then the
    evaluation of the newest checkpoint (and, EVAL_EVERY_CHECKPOINT=1, of every other one) and its token
    probabilities."""
    if row.ref_logprobs:
        yield ref_logprobs_step(s, row)
    train = train_step(s, row, extra)
    yield train
    ckpt = ckpt_dir(s, row.key)
    if s.KEEP_TRAINING_STATE == "0":
        # reads training's record: a retrained row is pruned again, a pruned one is not touched
        yield Step(row.key, "prune", "dft_verl.checkpoints", ["--keep", row.hf_subdir, str(ckpt)],
                   reads=[str(runs(s, row.key, "steps", "train.json"))])
    latest = latest_step(ckpt)
    if s.EVAL_EVERY_CHECKPOINT == "1":
        steps_saved = sorted((int(p.name.rsplit("_", 1)[1]) for p in ckpt.glob("global_step_*") if p.is_dir()))
        for n in steps_saved:
            if str(n) != latest:
                yield from evaluation_steps(s, row, str(ckpt / f"global_step_{n}" / row.hf_subdir), step=n,
                                            out=runs(s, row.key, "eval", f"step_{n}"), token_probs=False)
    yield from evaluation_steps(s, row, str(ckpt / f"global_step_{latest}" / row.hf_subdir),
                                step=int(latest) if latest.isdigit() else None)


def evaluation_steps(s: Settings, row: Row, model: str, step: int | None, out: Path | None = None,
                     token_probs: bool = True) -> Iterator[Step]:
    """python -m dft_verl.eval of ``model`` into ``out`` (default RUNS_DIR/<row>/eval), its scores logged to the row's
    board at ``step``; then its token probabilities (TOKEN_PROBS=1). Node 0 only; nothing with EVAL=0."""
    if s.EVAL != "1":
        return
    final = out is None
    out = out or runs(s, row.key, "eval")
    args = ["--model", model, "--out", str(out), "--prompt-template", s.PROMPT_TEMPLATE]
    reads = [model]
    if s.EVAL_DATA_DIR:
        args += ["--data-dir", s.EVAL_DATA_DIR]
        reads += [str(Path(s.EVAL_DATA_DIR) / b / "test.jsonl") for b in eval_benchmarks(s)]
    backend = s.EVAL_BACKEND or ("hf" if s.cpu else "")
    if backend:
        args += ["--backend", backend]
    if dtype := generation_dtype(s, backend):
        args += ["--dtype", dtype]
    args += eval_args(s)  # after: a --dtype in EVAL_ARGS wins
    results = out / "results.json"

    def after(ran: bool) -> None:
        if not results.is_file():
            return
        if ran and step is not None:
            board.log_eval(s, row.key, json.loads(results.read_text()), step)
        if final and s.EVAL_EVERY_CHECKPOINT == "1" and step:  # the newest checkpoint is evaluated once: its
            from dft_verl.atomic import atomic_write  # step_<N> point is a copy of the row's result

            copy = out / f"step_{step}" / "results.json"
            if not copy.is_file() or copy.read_bytes() != results.read_bytes():
                atomic_write(copy, lambda tmp: Path(tmp).write_bytes(results.read_bytes()))

    # a rerun keeps eval's subfolders (step_<N>) and, when only the held-out files grew, the saved samples
    name = "eval" if final else f"eval/step_{step}"
    env, records = cost_records(s, row.key, name)
    clears = [str(results), str(out / "samples")] if final else [str(out)]
    yield Step(row.key, name, "dft_verl.eval", args, gpus=s.int("EVAL_NUM_GPUS"), reads=reads, outputs=[str(results)],
               clears=clears + records, env=env, after=after)
    if token_probs and s.TOKEN_PROBS == "1":
        tp = runs(s, row.key, "token_probs")
        args = ["--model", model, "--data", str(data_file(s, "rft")), "--out", str(tp), "--max-length",
                s.SFT_MAX_LENGTH, "--no-plot"]
        if s.cpu:
            args += ["--device", "cpu", "--dtype", "float32"]
        yield Step(row.key, "token_probs", "dft_verl.analysis.token_probs", args, gpus=1,
                   reads=[model, str(data_file(s, "rft"))], outputs=[str(tp / "meta.json")], clears=[str(tp)])


def report_step(s: Settings) -> Step:
    """python -m dft_verl.report on RUNS_DIR, here (it reads RUNS_DIR only): Table 3, paired comparisons, figures."""
    root = runs(s)
    reads = sorted(str(p) for row in ROW_KEYS for p in (root / row).glob("eval/**/results.json"))
    reads += sorted(str(p) for row in ROW_KEYS for p in (root / row).glob("token_probs/*.npy"))
    # what each row cost (dft_verl.cost): the steps' records, their counts and their trainers' metrics
    reads += sorted(str(p) for stage in ("data", *ROW_KEYS) for pattern in ("steps/*.json", "cost/*.json",
                                                                              "metrics/*.jsonl")
                    for p in (root / stage).glob(pattern) if not p.name.endswith(".started.json"))
    return Step("report", "report", "dft_verl.report", [str(root)], reads=reads,
                outputs=[str(root / "report" / "table3.md")], local=True)


def parse_stages(names: list[str]) -> list[str]:
    """Stage names in table order ("all": data, every row, report); unknown names refused with the valid ones."""
    unknown = [n for n in names if n not in STAGES and n != "all"]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown row {unknown[0]!r}; valid: all {' '.join(STAGES)}")
    wanted = set(STAGES) if "all" in names else set(names)
    return [st for st in STAGES if st in wanted]
