"""Every setting of the Table-3 runs, its paper default, and the presets: one definition, read by the orchestrator,
the recipes (as environment variables of the same names), the demo and the tests.

A value comes from, in order: the caller (environment variable, or the demo's ``recipe_env``), the preset
(``PRESET``: paper, cpu-small, cpu-tiny), the default below (the paper's value where the paper states one). An
empty value counts as unset. A preset sets sizes, device and backends only: rows, configs, entry points, prompt and
reward never change. Preset values may name settings declared before them (``{RUNS_DIR}/data``).

    python -m dft_verl.table3 settings [--preset cpu-small]    # every setting, its value and what it does
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from dft_verl.prompts import TEMPLATES


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    doc: str
    choices: tuple[str, ...] = ()


def _s(name: str, default: str, doc: str, choices: tuple[str, ...] = ()) -> Setting:
    return Setting(name, default, doc, choices)


SETTINGS: tuple[Setting, ...] = (
    # ---- where and how
    _s("PRESET", "paper", "sizes, device and backends: paper (Qwen2.5-Math-1.5B on GPUs), cpu-small (SmolLM2-135M, the "
       "demo's sizes), cpu-tiny (a tiny model built offline, 1-2 steps per row: CI)", ("paper", "cpu-small", "cpu-tiny")),
    _s("DEVICE", "gpu", "gpu (CUDA, vLLM) or cpu (verl's CPU platform from dft_verl; same rows, configs, prompt, reward)",
       ("gpu", "cpu")),
    _s("RUNS_DIR", "runs/table3", "every row's logs, evaluation and manifests (RUNS_DIR/<row>/), the report"),
    _s("DATA_DIR", "{RUNS_DIR}/data", "the pipeline's outputs (prepare/, filter/, ...) the rows train on"),
    _s("CKPT_DIR", "checkpoints/table3", "checkpoints, CKPT_DIR/<row>/global_step_<N>"),
    _s("MODEL_PATH", "Qwen/Qwen2.5-Math-1.5B", "the base model: HF folder or hub id"),
    _s("MODEL_BUILD", "", "build MODEL_PATH in the data step when it holds no model: tiny (fitted to the generated "
       "questions) or smollm2 (the packaged SmolLM2-135M-Instruct converted); none (or empty in the paper preset): "
       "MODEL_PATH exists or is a hub id", ("", "none", "tiny", "smollm2")),
    _s("NNODES", "1", "nodes of each training job"),
    _s("N_GPUS_PER_NODE", "8", "GPUs per node (DEVICE=cpu: trainer processes per node)"),
    _s("NODE_RANK", "0", "this node's rank when the rows run as torchrun on every node (no RAY_ADDRESS); node 0 alone "
       "prepares reference log-probs, evaluates and reports"),
    _s("MASTER_ADDR", "127.0.0.1", "torchrun rendezvous address (NNODES > 1 without RAY_ADDRESS)"),
    _s("MASTER_PORT", "29500", "torchrun rendezvous port"),
    _s("RAY_ADDRESS", "", "submit every step with `ray job submit` to this cluster (http://head:8265); DATA_DIR, "
       "CKPT_DIR, RUNS_DIR and MODEL_PATH must be on storage every node and this machine see"),
    _s("RAY_RANK_RESOURCE", "", "DEVICE=cpu with RAY_ADDRESS: the custom Ray resource that counts trainer ranks on a "
       "node, as GPUs do (each node: ray start --resources='{\"<name>\": N_GPUS_PER_NODE}'), so NNODES > 1 places "
       "ranks on every node; empty: ranks take Ray CPUs, which Ray may pack on one node"),
    _s("TRAIN_DTYPE", "float32", "DEVICE=cpu: compute dtype of every trainer and of the PPO/GRPO rollout: bfloat16 (FSDP2 "
       "mixed precision: bf16 parameters and compute, fp32 master weights, optimiser state and gradient reduction; the "
       "rollout samples in bf16), float32, or auto (bfloat16 where the CPU multiplies bf16 natively, avx512_bf16 or "
       "amx_bf16, else float32). GPUs always train in verl's bf16 mixed precision (bench/train_dtype.py, "
       "docs/cpu.md)", ("auto", "float32", "bfloat16")),
    _s("GEN_DTYPE", "float32", "DEVICE=cpu, hf backend: dtype of the pipeline's sampling and of every evaluation: "
       "float32 (the backend's default), bfloat16, or auto (bfloat16 where the CPU multiplies bf16 natively, else "
       "float32). Evaluating the same checkpoints in bf16 moved no score systematically (pooled -0.2 points [-2.5, "
       "+2.2] over 640 paired questions) and samples ~1.4x faster (docs/development.md)", ("auto", "float32", "bfloat16")),
    _s("LOGGER", "tensorboard", "tracking board of every trained row and its evaluation scores: tensorboard "
       "(RUNS_DIR/tensorboard/<row>), wandb (offline unless WANDB_API_KEY or WANDB_MODE is set), mlflow "
       "(file:RUNS_DIR/mlruns unless MLFLOW_TRACKING_URI is set), console", ("tensorboard", "wandb", "mlflow", "console")),
    _s("SEED", "", "training seed of every trained row (empty: each config's own; the paper preset: 0, the official "
       "trainer's data order, whose sampler is never seeded); data and evaluation keep theirs"),
    _s("SAVE_FREQ", "", "checkpoint every N optimiser steps, all trained rows (empty: each config's own)"),
    _s("KEEP_TRAINING_STATE", "1", "1: keep verl's whole checkpoints; 0: once a row has trained keep only the HF "
       "weights evaluation reads (python -m dft_verl.checkpoints)", ("0", "1")),
    _s("PROMPT_TEMPLATE", "paper", "dft_verl/prompts.py template of the data step and of evaluation: paper (one user "
       "turn: question + boxed instruction) or qwen-boxed (the same after the system turn of the Qwen2.5-Math "
       "toolkit)", tuple(TEMPLATES)),
    _s("EVAL", "1", "0: train only (no evaluation, no token probabilities)", ("0", "1")),
    _s("TOKEN_PROBS", "0", "1: each row's probability of every target token of the offline-RL SFT data (Fig. 2)",
       ("0", "1")),
    _s("OVERWRITE", "0", "1: rerun the named steps even when their manifests say they finished with the same inputs",
       ("0", "1")),
    _s("DRY_RUN", "0", "1: print every command and check its config against the installed verl; run nothing",
       ("0", "1")),
    # ---- data (python -m dft_verl.pipeline)
    _s("DATA_SOURCE", "AI-MO/NuminaMath-CoT", "HF dataset id or local .jsonl/.json/.parquet of problems with solutions"),
    _s("DATA_GENERATE_TRAIN", "0", "generated arithmetic questions instead of DATA_SOURCE (0: none)"),
    _s("DATA_GENERATE_TEST", "0", "generated held-out questions, written as EVAL_DATA_DIR/math500/test.jsonl"),
    _s("DATA_GENERATE_FAMILIES", "add", "problem families of the generated questions (dft_verl/demo/tasks.py)"),
    _s("DATA_MAX_ROWS", "100000", "questions kept from the source (seeded subsample)"),
    _s("SAMPLE_N", "4", "samples per question (paper: 4)"),
    _s("SAMPLE_TEMPERATURE", "1.0", "sampling temperature (paper: 1.0)"),
    _s("SAMPLE_MAX_NEW_TOKENS", "2048", "new tokens per sample"),
    _s("SAMPLE_BACKEND", "verl", "verl (Ray + vLLM replicas on NNODES x N_GPUS_PER_NODE), vllm (one process; on CPU vLLM's CPU "
       "build, scripts/install.sh --vllm), hf (CPU)",
       ("verl", "vllm", "hf")),
    _s("SAMPLE_BATCH_SIZE", "", "hf/vllm: sequences per generate call (empty: the pipeline's default)"),
    _s("SAMPLE_PROCESSES", "", "hf: processes the batches are spread over (the same samples as one)"),
    _s("VERIFY_USE_RAY", "true", "judge answers in Ray tasks (true) or a local process pool (false)", ("true", "false")),
    _s("VERIFY_NUM_WORKERS", "", "judge processes (empty: all CPUs)"),
    # ---- SFT family: sft, iw_sft_*, dft_*, rft (paper: AdamW lr 5e-5, batch 256, length 2048, cosine, warmup 0.1)
    _s("SFT_LR", "5e-5", "learning rate"),
    _s("SFT_BATCH_SIZE", "256", "sequences per optimiser step"),
    _s("SFT_MAX_LENGTH", "2048", "tokens per sequence (longer ones are cut on the right)"),
    _s("SFT_LR_SCHEDULER", "cosine", "verl optim.lr_scheduler_type"),
    _s("SFT_WARMUP_RATIO", "0.1", "warm-up fraction of the steps"),
    _s("SFT_EPOCHS", "1", "epochs"),
    _s("SFT_MICRO_BATCH_SIZE_PER_GPU", "4", "sequences per forward per GPU (not in the paper)"),
    _s("SFT_NORMALIZATION", "micro_batch", "loss.normalization: micro_batch (the official DFT trainer's update: the sum "
       "of each micro-batch's token mean, M micro-batches per rank, fixed micro-batches) or token (the global token "
       "mean); docs/losses.md", ("micro_batch", "token", "sequence")),
    _s("SFT_CLIP_GRAD", "1.0", "gradient-norm clip (the official trainer's 1.0; with micro_batch it clips M times the "
       "token-mean gradient)"),
    _s("SFT_BETAS", "[0.9,0.95]", "AdamW betas (the official trainer's; verl's default is [0.9,0.999])"),
    _s("SFT_FUSED_KERNELS", "True", "verl's fused linear-cross-entropy (needs tied embeddings; not in the paper)",
       ("True", "False")),
    _s("IW_SFT_REF_MODEL", "", "iw-SFT rows: reference policy of the importance weight (empty: MODEL_PATH)"),
    _s("IW_SFT_CLIP", "[0.5,2.0]", "iw-SFT rows: clip range of the importance weight"),
    # ---- PPO, GRPO (paper: lr 1e-6, batch 256, warmup 0.1, temperature 1.0, GRPO n=4)
    _s("RL_LR", "1e-6", "actor learning rate"),
    _s("RL_BATCH_SIZE", "256", "prompts per step"),
    _s("RL_WARMUP_RATIO", "0.1", "warm-up fraction of the steps"),
    _s("RL_TEMPERATURE", "1.0", "rollout temperature"),
    _s("RL_EPOCHS", "1", "epochs over the questions"),
    _s("RL_MAX_PROMPT_LENGTH", "", "prompt tokens (empty: dft_verl/config/online/math_rl.yaml's)"),
    _s("RL_MAX_RESPONSE_LENGTH", "", "response tokens (empty: the config's)"),
    _s("RL_MINI_BATCH_SIZE", "", "PPO mini-batch in prompts (empty: the config's)"),
    _s("RL_MICRO_BATCH_SIZE_PER_GPU", "", "micro-batch per trainer process: actor, log-probs, critic (empty: config's)"),
    _s("GRPO_N", "4", "GRPO group size (paper: 4)"),
    _s("GRPO_KL_COEF", "0.001", "GRPO KL-loss coefficient, verl's example value (0 disables the reference model)"),
    _s("PPO_CRITIC_LR", "1e-5", "PPO critic learning rate (verl's examples: 10x the actor's)"),
    # ---- DPO (paper: lr 1e-6, batch 128 pairs, warmup 0.05)
    _s("DPO_LR", "1e-6", "learning rate"),
    _s("DPO_BATCH_SIZE", "128", "pairs per optimiser step"),
    _s("DPO_WARMUP_RATIO", "0.05", "warm-up fraction of the steps"),
    _s("DPO_MAX_LENGTH", "2048", "tokens per sequence"),
    _s("DPO_EPOCHS", "1", "epochs"),
    _s("DPO_BETA", "0.1", "inverse temperature of the implicit reward (not in the paper: the usual 0.1)"),
    # ---- evaluation (python -m dft_verl.eval)
    _s("EVAL_DATA_DIR", "", "benchmark folder (<bench>/test.jsonl; empty: the hub copies)"),
    _s("EVAL_BACKEND", "", "hf, vllm or verl (empty: vllm on DEVICE=gpu, hf on cpu)", ("", "hf", "vllm", "verl")),
    _s("EVAL_ARGS", "", "extra flags of python -m dft_verl.eval, as one string (e.g. --k 16 --benchmarks math500)"),
    _s("EVAL_EVERY_CHECKPOINT", "0", "1: evaluate every saved checkpoint into <row>/eval/step_<N> too (Fig. 1)",
       ("0", "1")),
    _s("EVAL_NUM_GPUS", "1", "GPUs reserved for an evaluation submitted with RAY_ADDRESS (0 with EVAL_BACKEND=verl)"),
)
NAMES: tuple[str, ...] = tuple(s.name for s in SETTINGS)


def _smollm2_dir() -> str:
    from dft_verl.demo.smollm2 import default_model_dir

    return str(default_model_dir())


# Values a preset changes (the rest keep the defaults above). Strings may name earlier settings; a callable is asked.
PresetValue = str | Callable[[], str]
# SAMPLE_BACKEND / EVAL_BACKEND stay hf on CPU, measured against vLLM's CPU build (bench/generation_speed.py --vllm,
# docs/development.md): every stage and evaluation is its own process and a vLLM engine takes ~20 s to start, so for
# a stage hf wins on the tiny model (0.4 s vs 19 s) and ties on SmolLM2 (72 s vs 69 s for 128 x 64 tokens, within
# the load's noise), and hf needs no extra install. SAMPLE_BACKEND=vllm EVAL_BACKEND=vllm run them on vLLM instead.
_CPU_COMMON: dict[str, PresetValue] = {
    "DEVICE": "cpu", "N_GPUS_PER_NODE": "2", "DATA_DIR": "{RUNS_DIR}/data", "CKPT_DIR": "{RUNS_DIR}/checkpoints",
    "EVAL_DATA_DIR": "{DATA_DIR}/bench", "SAMPLE_BACKEND": "hf", "VERIFY_USE_RAY": "false", "VERIFY_NUM_WORKERS": "1",
    "SFT_MAX_LENGTH": "256", "SFT_FUSED_KERNELS": "False", "DPO_MAX_LENGTH": "256", "EVAL_BACKEND": "hf",
    "TOKEN_PROBS": "1",  # Fig. 2 for every row (cheap at these sizes)
    # the demo's measured figures: token-mean normalisation and verl's betas (micro_batch measured against it on the
    # demo's DFT rows: docs/losses.md)
    "SFT_NORMALIZATION": "token", "SFT_BETAS": "[0.9,0.999]",
    # a laptop keeps only the HF weights of each trained row's checkpoints (SmolLM2: 0.5 of 2.1 GB each)
    "KEEP_TRAINING_STATE": "0",
}
PRESETS: dict[str, dict[str, PresetValue]] = {
    # Qwen2.5-Math-1.5B on GPUs with the paper's values (the defaults above) and, where it is silent, the official DFT
    # trainer's (docs/losses.md): its update (SFT_NORMALIZATION=micro_batch), betas, clip, and its data order (SEED=0)
    "paper": {"SEED": "0"},
    # SmolLM2-135M-Instruct at the demo's sizes: 48 generated questions x 4 samples, 8 examples per step, 64 new tokens;
    # 64 held-out questions x 2 samples. The raw model rarely ends with \boxed{}: `dft-verl demo` passes its
    # format-warmed model as MODEL_PATH.
    "cpu-small": {
        **_CPU_COMMON, "RUNS_DIR": "runs/table3_cpu_small", "MODEL_BUILD": "smollm2", "MODEL_PATH": _smollm2_dir,
        "DATA_GENERATE_TRAIN": "48", "DATA_GENERATE_TEST": "64", "DATA_GENERATE_FAMILIES": "add,mul,word_add",
        "SAMPLE_MAX_NEW_TOKENS": "64",
        # 32 sequences per generate call in 2 processes of 1 thread (bench/generation_speed.py: 128 responses x 64
        # tokens, 77 s at batch 16 in one process, 49 s like this)
        "SAMPLE_BATCH_SIZE": "32", "SAMPLE_PROCESSES": "2",
        "SFT_BATCH_SIZE": "8", "SFT_MICRO_BATCH_SIZE_PER_GPU": "4", "DPO_BATCH_SIZE": "8",
        # 4-10 optimiser steps: the paper's 1e-6 moves nothing visibly; 1e-5 (GRPO reward 0.28 -> 0.50 in 12 steps)
        # keeps the SFT family's 5e-5 five times higher
        "RL_LR": "1e-5", "DPO_LR": "1e-5",
        "RL_BATCH_SIZE": "8", "RL_MINI_BATCH_SIZE": "8", "RL_MICRO_BATCH_SIZE_PER_GPU": "4",
        "RL_MAX_PROMPT_LENGTH": "192", "RL_MAX_RESPONSE_LENGTH": "64",
        # k=2: a paired CI is set by the number of responses more than by k, so 64 questions x 2 beat 32 x 4
        # 64 sequences per batch in 2 processes of 1 thread, bf16 where the CPU has it: one evaluation of 64 x 2
        # responses 25.6 s against 35.4 s in fp32 at batch 32 (docs/development.md, "Sampling and evaluating in bf16")
        "EVAL_ARGS": "--benchmarks math500 --k 2 --max-new-tokens 64 --batch-size 64 --processes 2 --num-workers 1",
        "GEN_DTYPE": "auto",
    },
    # Every row for real in minutes on 2 cores (CI): 8 generated addition questions, 8 held out, a tiny Llama fitted
    # to the training questions; 1-2 optimiser steps per row, a checkpoint per step, each evaluated (Fig. 1).
    "cpu-tiny": {
        **_CPU_COMMON, "RUNS_DIR": "runs/table3_cpu_tiny", "MODEL_BUILD": "tiny", "MODEL_PATH": "{DATA_DIR}/tiny_model",
        "DATA_GENERATE_TRAIN": "8", "DATA_GENERATE_TEST": "8", "SAMPLE_MAX_NEW_TOKENS": "48",
        "SFT_BATCH_SIZE": "4", "SFT_MICRO_BATCH_SIZE_PER_GPU": "2", "DPO_BATCH_SIZE": "4",
        "RL_BATCH_SIZE": "4", "RL_MINI_BATCH_SIZE": "4", "RL_MICRO_BATCH_SIZE_PER_GPU": "2",
        "RL_MAX_PROMPT_LENGTH": "128", "RL_MAX_RESPONSE_LENGTH": "48", "GRPO_N": "2",
        "EVAL_ARGS": "--benchmarks math500 --k 2 --max-new-tokens 48 --batch-size 16 --num-workers 1",
        "SAVE_FREQ": "1", "EVAL_EVERY_CHECKPOINT": "1",
    },
}
# Settings that are paths: made absolute from the caller's directory (a hub id in MODEL_PATH stays as it is)
PATHS = ("RUNS_DIR", "DATA_DIR", "CKPT_DIR", "EVAL_DATA_DIR")


class SettingsError(ValueError):
    """A setting has a value it does not accept; the message names the setting and the valid values."""


class Settings:
    """Resolved values of every setting, as strings (``s.SFT_LR``), plus typed helpers."""

    def __init__(self, values: Mapping[str, str]):
        self._values = dict(values)

    def __getattr__(self, name: str) -> str:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(f"no Table-3 setting {name!r}") from None

    def as_dict(self) -> dict[str, str]:
        return dict(self._values)

    def flag(self, name: str) -> bool:
        return self._values[name] in ("1", "true", "True")

    def int(self, name: str) -> int:
        return int(self._values[name])

    def path(self, name: str) -> Path:
        return Path(self._values[name])

    @property
    def cpu(self) -> bool:
        return self.DEVICE == "cpu"

    @property
    def node0(self) -> bool:
        return self.NODE_RANK == "0"

    def replace(self, **changes: str) -> "Settings":
        """These settings with some values changed (already resolved: nothing is derived again)."""
        unknown = sorted(set(changes) - set(NAMES))
        if unknown:
            raise SettingsError(f"unknown setting(s) {unknown}")
        return Settings({**self._values, **{k: str(v) for k, v in changes.items()}})


def resolve(env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None) -> Settings:
    """Settings from ``env`` (default: os.environ), its PRESET and the defaults; paths absolute from ``cwd``."""
    env = dict(os.environ if env is None else env)
    cwd = Path(cwd or os.getcwd())
    preset_name = env.get("PRESET") or "paper"
    if preset_name not in PRESETS:
        raise SettingsError(f"unknown PRESET={preset_name}; valid: {' '.join(sorted(PRESETS))}")
    preset = PRESETS[preset_name]
    values: dict[str, str] = {}
    for setting in SETTINGS:
        given = env.get(setting.name)
        if given:
            value = given
        else:
            raw = preset.get(setting.name, setting.default)
            value = raw() if callable(raw) else raw.format(**values)
        if setting.choices and value not in setting.choices:
            raise SettingsError(f"{setting.name}={value}: choose one of {', '.join(c or '(empty)' for c in setting.choices)}")
        if setting.name in PATHS and value:
            value = str((cwd / value).resolve()) if not os.path.isabs(value) else str(Path(value).resolve())
        values[setting.name] = value
    for name in ("NNODES", "N_GPUS_PER_NODE", "NODE_RANK", "MASTER_PORT", "DATA_GENERATE_TRAIN", "DATA_GENERATE_TEST",
                 "EVAL_NUM_GPUS"):
        if not values[name].isdigit():
            raise SettingsError(f"{name}={values[name]}: a whole number")
    for name in ("TRAIN_DTYPE", "GEN_DTYPE"):  # resolved here, so that manifests and commands name the dtype that runs
        if values[name] == "auto":
            from dft_verl.platform.cpu import native_bf16

            values[name] = "bfloat16" if values["DEVICE"] == "gpu" or native_bf16() else "float32"
    model = values["MODEL_PATH"]
    if values["MODEL_BUILD"] not in ("", "none") or (cwd / model).exists() or os.path.isabs(model):
        values["MODEL_PATH"] = str((cwd / model).resolve())
    return Settings(values)


def describe(settings: Settings) -> str:
    """Every setting with its value and what it does (``python -m dft_verl.table3 settings``)."""
    lines = [f"# PRESET={settings.PRESET}; set any of these as an environment variable (empty = unset)"]
    for s in SETTINGS:
        lines.append(f"{s.name}={settings.as_dict()[s.name]}")
        lines.append(f"    {s.doc}" + (f" [default {s.default!r}]" if s.default else ""))
    return "\n".join(lines)
