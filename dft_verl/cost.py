"""What each Table-3 row cost: wall seconds, device-seconds, tokens generated / trained / scored, estimated FLOPs.

    FLOPs ~= 6 * N * trained + 2 * N * (generated + scored)

N = the model's parameters (counted from its config, embeddings included, tied ones once); trained = tokens through a
forward and a backward pass (prompt and response: every token of every training sequence, per epoch, per model
updated: PPO's critic is a second model the size of the actor); generated = tokens sampled (the prompt's prefill is not
counted); scored = tokens through a forward pass only (reference log-probs of iw-SFT and DPO, PPO/GRPO's old-policy,
reference and value passes). Attention's FLOPs (quadratic in length) and the prompt prefill are left out: the formula
is the usual 6N/2N per token estimate, a lower bound that is tight for short sequences.

Every figure comes from records the row's own steps leave under RUNS_DIR (the runner writes nothing it did not
measure):

    RUNS_DIR/<stage>/steps/<step>.json      the runner's manifest: wall ``seconds``; ``cpu_seconds``, the CPU time
                                            of the step's local process tree (children the step waited for); ``gpus``
                                            held and ``device``; ``launch`` (local, or ray: then CPU time is the
                                            cluster's and not measured here)
    RUNS_DIR/<stage>/cost/<step>.json       counts the step's process recorded itself (``record``; the runner names
                                            the file in DFT_VERL_COST_FILE): sampling and evaluation (generated tokens,
                                            by the model's tokenizer over the decoded responses: the end-of-sequence
                                            token is not counted), reference log-probs (scored tokens)
    RUNS_DIR/<stage>/metrics/<step>*.jsonl  verl's file logger (``trainer.logger`` includes ``file``), one file per
                                            attempt: SFT/DPO ``train/global_tokens`` per step (all tokens of the global
                                            batch); PPO/GRPO ``perf/total_num_tokens``, ``response_length/mean``,
                                            ``prompt_length/mean`` and the ``timing_s/*`` of the passes that ran

Device-seconds: GPU-seconds (wall x GPUs held) on GPUs, CPU core-seconds (measured) on CPU.
Rows that train on the sampled offline data (rft, dpo, iw_sft_offline, dft_offline) share the data stage's sampling:
it is shown on its own line and added to each of them in ``total_flops`` (what that row alone would cost), run once.
Evaluation is kept apart (``eval_*``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from dft_verl.atomic import write_json_atomic
from dft_verl.table3.manifest import file_stem
from dft_verl.table3.rows import DATA_FILES

ENV = "DFT_VERL_COST_FILE"
EVAL_STEPS = ("eval", "token_probs")  # step names (and eval/step_<N>) counted as evaluation, not training
# row.data keys made from the data stage's sampling (the filter stage's outputs)
SHARED_DATA = tuple(key for key, path in DATA_FILES.items() if path.startswith("filter/"))


# ------------------------------------------------------------------------------------------------ recording


def record(section: str, **values) -> None:
    """Merge ``{section: values}`` into the cost file the runner named in DFT_VERL_COST_FILE (nothing without it)."""
    path = os.environ.get(ENV)
    if not path:
        return
    path = Path(path)
    try:
        current = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        current = {}
    current[section] = values
    write_json_atomic(current, path)


def count_params(model_path: str | os.PathLike) -> int:
    """Parameters of the causal LM at ``model_path``, counted on the meta device from its config (no weights read;
    tied embeddings counted once)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_path))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def count_tokens(model_path: str | os.PathLike, texts: list[str], batch: int = 1024) -> int:
    """Tokens of ``texts`` by the model's tokenizer, without special tokens."""
    from dft_verl.generation import load_hf_tokenizer

    tokenizer = load_hf_tokenizer(str(model_path))
    total = 0
    for i in range(0, len(texts), batch):
        total += sum(len(ids) for ids in tokenizer(list(texts[i:i + batch]), add_special_tokens=False)["input_ids"])
    return total


def record_generation(section: str, model_path: str | os.PathLike, samples: list[str | os.PathLike]) -> None:
    """A generation's counts (sampling, evaluation) from its saved samples (parquet files with a ``response``
    column): sequences, generated tokens, the model's parameters. Nothing is read outside the Table-3 runner."""
    if not os.environ.get(ENV):
        return
    import pandas as pd

    responses = [r for path in samples for r in pd.read_parquet(path, columns=["response"])["response"].tolist()]
    record(section, sequences=len(responses), generated_tokens=count_tokens(model_path, responses),
           params=count_params(model_path))


def record_scoring(section: str, model, lengths: list[int]) -> None:
    """A forward-only pass's counts (reference log-probs): sequences, their tokens, the model's parameters."""
    record(section, sequences=len(lengths), scored_tokens=int(sum(lengths)),
           params=sum(p.numel() for p in model.parameters()))


# ------------------------------------------------------------------------------------------------ reading


@dataclass
class Cost:
    """Compute of one step or a sum of steps. device_s None: not measured (a Ray job on CPU); params 0: unknown."""

    wall_s: float = 0.0
    device_s: float | None = 0.0
    generated_tokens: int = 0
    trained_tokens: int = 0
    scored_tokens: int = 0
    params: int = 0
    steps: int = 0
    device: str = ""  # "cpu" (device_s: CPU core-seconds), "gpu" (GPU-seconds), "mixed", "" (no step)

    def __add__(self, other: "Cost") -> "Cost":
        device_s = None if self.device_s is None or other.device_s is None else self.device_s + other.device_s
        kinds = {d for d in (self.device, other.device) if d}
        return Cost(self.wall_s + other.wall_s, device_s, self.generated_tokens + other.generated_tokens,
                    self.trained_tokens + other.trained_tokens, self.scored_tokens + other.scored_tokens,
                    self.params or other.params, self.steps + other.steps,
                    kinds.pop() if len(kinds) == 1 else "mixed" if kinds else "")

    def flops(self, params: int | None = None) -> float | None:
        """6 N trained + 2 N (generated + scored); None without a parameter count."""
        n = params or self.params
        if not n:
            return None
        return 6.0 * n * self.trained_tokens + 2.0 * n * (self.generated_tokens + self.scored_tokens)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable cost record: {e}") from None


def metrics_by_step(files: list[Path]) -> dict[int, dict]:
    """verl file-logger lines ({"step": N, "data": {...}}) of every attempt (``files`` oldest first), merged: a step
    logged again by a resumed attempt keeps its last record."""
    steps: dict[int, dict] = {}
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                steps[int(rec["step"])] = {**steps.get(int(rec["step"]), {}), **rec["data"]}
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}: line {n}: not a verl file-logger record ({e})") from None
    return steps


def trainer_tokens(steps: dict[int, dict]) -> Cost:
    """Tokens of a trainer's steps from verl's metrics.

    SFT family and DPO (verl's engine SFT trainer): trained = sum of ``train/global_tokens``.
    PPO/GRPO (verl's main_ppo), per step with T = ``perf/total_num_tokens`` (prompt + response tokens of the batch),
    R, P the mean response and prompt lengths: sequences = T / (P + R), generated = R * sequences; trained = T per
    model updated (actor; critic when ``timing_s/update_critic`` is there); scored = T per forward-only pass that ran
    (``timing_s/old_log_prob``, ``timing_s/ref``, ``timing_s/values``)."""
    cost = Cost()
    for data in steps.values():
        if "train/global_tokens" in data:
            cost.trained_tokens += int(data["train/global_tokens"])
        elif "perf/total_num_tokens" in data:
            total = float(data["perf/total_num_tokens"])
            resp, prompt = float(data["response_length/mean"]), float(data["prompt_length/mean"])
            sequences = total / (prompt + resp) if prompt + resp > 0 else 0.0
            cost.generated_tokens += round(resp * sequences)
            updates = 1 + ("timing_s/update_critic" in data)
            cost.trained_tokens += round(total) * updates
            passes = sum(f"timing_s/{p}" in data for p in ("old_log_prob", "ref", "values"))
            cost.scored_tokens += round(total) * passes
    return cost


def cost_file(stage_dir: str | os.PathLike, step: str) -> Path:
    """Where a step's process records its counts (DFT_VERL_COST_FILE)."""
    return Path(stage_dir) / "cost" / f"{file_stem(step)}.json"


def metrics_file(stage_dir: str | os.PathLike, step: str) -> Path:
    """Where verl's file logger writes a trainer step's metrics (VERL_FILE_LOGGER_PATH). verl opens it for writing
    afresh, so the runner moves an earlier attempt's file aside first (``keep_metrics``)."""
    return Path(stage_dir) / "metrics" / f"{file_stem(step)}.jsonl"


def metrics_files(stage_dir: str | os.PathLike, step: str) -> list[Path]:
    """Every attempt's metrics of a step: <stem>.<n>.jsonl (earlier attempts, in order) then <stem>.jsonl."""
    folder, stem = Path(stage_dir) / "metrics", file_stem(step)
    earlier = sorted(folder.glob(f"{stem}.*.jsonl"), key=lambda p: int(p.name.split(".")[-2]))
    return earlier + [p for p in [folder / f"{stem}.jsonl"] if p.is_file()]


def keep_metrics(path: str | os.PathLike) -> None:
    """Before a trainer step runs again (resuming): move its metrics file to <stem>.<n>.jsonl so verl does not
    overwrite the steps it logged."""
    path = Path(path)
    if path.is_file():
        n = len(list(path.parent.glob(f"{path.stem}.*.jsonl")))
        path.rename(path.with_name(f"{path.stem}.{n}.jsonl"))


def step_cost(stage_dir: Path, step: str) -> Cost | None:
    """One step's cost from its manifest, its own counts and its trainer metrics; None when it never finished."""
    name = file_stem(step)
    manifest = stage_dir / "steps" / f"{name}.json"
    if not manifest.is_file():
        return None
    m = _read_json(manifest)
    wall = float(m.get("seconds", 0.0))
    if m.get("device") == "gpu":
        device = wall * int(m.get("gpus") or 1)
    elif m.get("launch", "local") == "local" and "cpu_seconds" in m:
        device = float(m["cpu_seconds"])
    else:
        device = None
    cost = Cost(wall_s=wall, device_s=device, steps=1, device=str(m.get("device", "")))
    counts_path = cost_file(stage_dir, step)
    for section in _read_json(counts_path).values() if counts_path.is_file() else ():
        cost = cost + Cost(generated_tokens=int(section.get("generated_tokens", 0)),
                           trained_tokens=int(section.get("trained_tokens", 0)),
                           scored_tokens=int(section.get("scored_tokens", 0)), params=int(section.get("params", 0)))
    metrics = metrics_files(stage_dir, step)
    return cost + trainer_tokens(metrics_by_step(metrics)) if metrics else cost


def finished_steps(stage_dir: Path) -> list[str]:
    """The names of the steps with a finished manifest under ``stage_dir/steps``."""
    folder = stage_dir / "steps"
    if not folder.is_dir():
        return []
    return sorted(_read_json(p).get("step", p.stem) for p in folder.glob("*.json")
                  if not p.name.endswith(".started.json"))


def is_eval_step(step: str) -> bool:
    return step.split("/")[0] in EVAL_STEPS


@dataclass
class RowCost:
    """A row's compute: ``train`` (its reference log-probs and training), ``data`` (the shared offline sampling, when
    the row trains on it), ``eval`` (evaluation and token probabilities, kept apart)."""

    row: str
    train: Cost = field(default_factory=Cost)
    data: Cost | None = None
    eval: Cost = field(default_factory=Cost)
    params: int = 0

    @property
    def recorded(self) -> bool:
        return self.train.steps + self.eval.steps > 0

    @property
    def total(self) -> Cost:
        return self.train + self.data if self.data is not None else self.train

    @property
    def device(self) -> str | None:
        """"cpu", "gpu" or "mixed" over the row's steps; None without any."""
        return self.total.device or self.eval.device or None

    @property
    def total_flops(self) -> float | None:
        """FLOPs the row alone needs: its training plus, for the offline-RL rows, the sampling it trains on."""
        return self.total.flops(self.params)

    def as_record(self) -> dict:
        """The report's cost columns (None where nothing was recorded): the row's training plus its share of the
        sampling, then its evaluation."""
        if not self.recorded:
            return {key: None for key in RECORD_KEYS}
        total, flops = self.total, self.total_flops
        return {"params": self.params or None, "wall_s": round(total.wall_s, 1),
                "device_s": None if total.device_s is None else round(total.device_s, 1),
                "device": self.device,
                "generated_tokens": total.generated_tokens, "trained_tokens": total.trained_tokens,
                "scored_tokens": total.scored_tokens, "flops": None if flops is None else int(flops),
                "includes_sampling": self.data is not None, "eval_wall_s": round(self.eval.wall_s, 1),
                "eval_generated_tokens": self.eval.generated_tokens}


RECORD_KEYS = ("params", "wall_s", "device_s", "device", "generated_tokens", "trained_tokens", "scored_tokens", "flops",
               "includes_sampling", "eval_wall_s", "eval_generated_tokens")


def data_cost(runs_dir: Path) -> Cost | None:
    """The data stage's pipeline step (prepare, sample, verify, filter): the offline sampling."""
    return step_cost(runs_dir / "data", "pipeline")


def row_cost(runs_dir: str | os.PathLike, row) -> RowCost:
    """``row`` (a dft_verl.table3.rows.Row) from its records under ``runs_dir``."""
    runs_dir = Path(runs_dir)
    out = RowCost(row.key)
    stage = runs_dir / row.key
    for step in finished_steps(stage):
        cost = step_cost(stage, step)
        if cost is None:
            continue
        if is_eval_step(step):
            out.eval = out.eval + cost
        else:
            out.train = out.train + cost
    data = data_cost(runs_dir) if row.data in SHARED_DATA else None
    out.data = data
    out.params = out.train.params or out.eval.params or (data.params if data else 0)
    return out


def table_costs(runs_dir: str | os.PathLike, rows) -> list[RowCost]:
    return [row_cost(runs_dir, row) for row in rows]
