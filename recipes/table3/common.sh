# shellcheck shell=bash
# shellcheck disable=SC2034  # the arrays and paths defined here are used by the run_*.sh sourcing it
# Shared settings and launch helpers of the Table 3 recipes; sourced by every run_*.sh here.
#
# Every setting is an environment variable with a default (below). Paths may be relative to the
# directory you call from; they are made absolute before the recipes change to the repository root.
#
# Launch modes:
#   local (default)   SFT-family rows: torchrun on this node (NNODES > 1: run the recipe on every node
#                     with NODE_RANK/MASTER_ADDR set); PPO/GRPO: verl's main_ppo starts a local Ray.
#   RAY_ADDRESS=...   every command is submitted with `ray job submit` to that cluster (SFT-family rows
#                     use the Ray trainer dft_verl.trainer.sft_ray). DATA_DIR, CKPT_DIR, RUNS_DIR and
#                     MODEL_PATH must then be on storage every node sees.
#   DEVICE=cpu        the CPU platform instead of GPUs (laptops, CI): PPO/GRPO get `+platform=cpu`
#                     (dft_verl/config/online/platform/cpu.yaml: hf rollout, cpu_sync trainer, fp32, sdpa),
#                     the SFT family and DPO `python -m dft_verl.cli cpu-overrides` (dft_verl.trainer.cpu_overrides),
#                     evaluation the hf backend; N_GPUS_PER_NODE then counts trainer processes.
#   DRY_RUN=1         print every command and check that its config resolves against the installed verl
#                     (python -m dft_verl.recipe_check, once at exit for all of the script's commands);
#                     nothing runs. With RECIPE_CHECK_QUEUE=FILE the commands are only appended to FILE
#                     (run_all.sh collects every row's commands this way and checks them together).

# Size preset (presets/<name>.sh, loaded before every default below, so any variable set by the caller still
# wins): paper (Qwen2.5-Math-1.5B on GPUs, the paper's values), cpu-small (SmolLM2-135M on CPU, the demo's
# sizes), cpu-tiny (a tiny model and generated questions built offline, 1-2 steps per row: CI).
# A preset sets sizes, device and backends only; rows, configs, entry points, prompt and reward never change.
PRESET=${PRESET:-paper}
presets_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/presets
if [[ ! -f "$presets_dir/$PRESET.sh" ]]; then
    valid=$(cd "$presets_dir" && for f in *.sh; do printf ' %s' "${f%.sh}"; done)
    echo "unknown PRESET=$PRESET; valid:$valid" >&2
    exit 2
fi
# shellcheck source=/dev/null
source "$presets_dir/$PRESET.sh"

# ---- user-adjustable ----
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-Math-1.5B}
# Build MODEL_PATH in the data step when it is missing (run_data.sh): tiny (dft_verl.tiny fitted to the
# generated questions) or smollm2 (the packaged SmolLM2-135M-Instruct converted); empty: MODEL_PATH exists or
# is a hub id. When set, MODEL_PATH is a local folder (relative paths are taken from the caller's directory).
MODEL_BUILD=${MODEL_BUILD:-}
# gpu (CUDA, vLLM) or cpu (verl's CPU platform from dft_verl; same rows, configs, prompt and reward)
DEVICE=${DEVICE:-gpu}
# Pipeline output folder (python -m dft_verl.pipeline out_dir=...; run_data.sh): prepare/, filter/, ...
DATA_DIR=${DATA_DIR:-runs/table3/data}
RUNS_DIR=${RUNS_DIR:-runs/table3}
CKPT_DIR=${CKPT_DIR:-checkpoints/table3}
NNODES=${NNODES:-1}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
RAY_ADDRESS=${RAY_ADDRESS:-}
PYTHON=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}
RECIPE_CHECK_QUEUE=${RECIPE_CHECK_QUEUE:-}
# Paper, SFT family (sft, iw_sft_*, dft_*, rft): AdamW lr 5e-5, batch 256, max length 2048, cosine, warmup 0.1, 1 epoch
SFT_LR=${SFT_LR:-5e-5}
SFT_BATCH_SIZE=${SFT_BATCH_SIZE:-256}
SFT_MAX_LENGTH=${SFT_MAX_LENGTH:-2048}
SFT_LR_SCHEDULER=${SFT_LR_SCHEDULER:-cosine}
SFT_WARMUP_RATIO=${SFT_WARMUP_RATIO:-0.1}
SFT_EPOCHS=${SFT_EPOCHS:-1}
SFT_MICRO_BATCH_SIZE_PER_GPU=${SFT_MICRO_BATCH_SIZE_PER_GPU:-4}
# Not in the paper: verl's fused linear-cross-entropy (log-probs without [tokens x vocab] logits; same loss, less
# memory: README "Training with DFT"). Needs tied embeddings, as Qwen2.5-Math-1.5B has; the CPU presets turn it off
# (1.4-1.9x slower there). Applies to the SFT family (sft, dft_*, iw_sft_*, rft).
SFT_FUSED_KERNELS=${SFT_FUSED_KERNELS:-True}
# Checkpoint every N optimiser steps, all trained rows (empty: each config's own; the last step is always saved)
SAVE_FREQ=${SAVE_FREQ:-}
# 1: keep verl's whole checkpoints (training can resume or continue from any of them). 0: once a row has trained,
# delete the training state (model/optimiser shards, scheduler and dataloader state) from its checkpoints and keep
# only the HF weights evaluation reads (python -m dft_verl.checkpoints): SmolLM2-135M 0.5 of 2.1 GB per checkpoint.
KEEP_TRAINING_STATE=${KEEP_TRAINING_STATE:-1}
# Training seed of every trained row (empty: each trainer's own). Data and evaluation keep theirs: rerunning the
# rows with SEED=1, 2, ... into other RUNS_DIR/CKPT_DIR folders measures the spread that training alone causes.
SEED=${SEED:-}
# iw-SFT rows: reference policy of the importance weight (empty: MODEL_PATH) and the weight's clip range
IW_SFT_REF_MODEL=${IW_SFT_REF_MODEL:-}
IW_SFT_CLIP=${IW_SFT_CLIP:-[0.5,2.0]}
# Paper, PPO/GRPO: lr 1e-6, batch 256, warmup 0.1, temperature 1.0 (GRPO n: run_grpo.sh)
RL_LR=${RL_LR:-1e-6}
RL_BATCH_SIZE=${RL_BATCH_SIZE:-256}
RL_WARMUP_RATIO=${RL_WARMUP_RATIO:-0.1}
RL_TEMPERATURE=${RL_TEMPERATURE:-1.0}
RL_EPOCHS=${RL_EPOCHS:-1}
# PPO/GRPO sizes the paper does not state (empty: dft_verl/config/online/math_rl.yaml's values): prompt and
# response lengths in tokens, PPO mini-batch (prompts), micro-batch per trainer process (actor, log-probs, critic)
RL_MAX_PROMPT_LENGTH=${RL_MAX_PROMPT_LENGTH:-}
RL_MAX_RESPONSE_LENGTH=${RL_MAX_RESPONSE_LENGTH:-}
RL_MINI_BATCH_SIZE=${RL_MINI_BATCH_SIZE:-}
RL_MICRO_BATCH_SIZE_PER_GPU=${RL_MICRO_BATCH_SIZE_PER_GPU:-}
# Paper, DPO: lr 1e-6, batch 128 pairs, warmup 0.05 (length and epochs as the SFT family)
DPO_LR=${DPO_LR:-1e-6}
DPO_BATCH_SIZE=${DPO_BATCH_SIZE:-128}
DPO_WARMUP_RATIO=${DPO_WARMUP_RATIO:-0.05}
DPO_MAX_LENGTH=${DPO_MAX_LENGTH:-2048}
DPO_EPOCHS=${DPO_EPOCHS:-1}
# Evaluation (python -m dft_verl.eval): benchmark folder (<bench>/test.jsonl; empty: hub copies),
# backend (empty: vllm on a GPU), extra flags as one string, and whether to evaluate every saved
# checkpoint into <row>/eval/step_<N> (the report's accuracy-vs-step figure) besides the final one.
EVAL_DATA_DIR=${EVAL_DATA_DIR:-}
EVAL_BACKEND=${EVAL_BACKEND:-}
EVAL_ARGS=${EVAL_ARGS:-}
EVAL_EVERY_CHECKPOINT=${EVAL_EVERY_CHECKPOINT:-0}
# Prompt template (dft_verl/prompts.py) of the data step (prepare.prompt_template: every row trains on its prompts)
# and of evaluation (--prompt-template): paper (one user turn, question + boxed instruction) or qwen-boxed (the
# same after the system turn "You are a helpful assistant."). The paper trains with one user turn (its verl SFT
# script) and evaluates with the Qwen2.5-Math toolkit's qwen-boxed; here one setting sets both.
PROMPT_TEMPLATE=${PROMPT_TEMPLATE:-paper}
# 0: train only (no evaluation, no token probabilities); rerun with EVAL=1 to evaluate what was trained
EVAL=${EVAL:-1}
# 1: also each row's final model's probability of every target token of the offline-RL SFT data, the paper's
# Fig. 2 (python -m dft_verl.analysis.token_probs into RUNS_DIR/<row>/token_probs; the report plots it)
TOKEN_PROBS=${TOKEN_PROBS:-0}
# GPUs reserved for an evaluation submitted with RAY_ADDRESS (0 with EVAL_BACKEND=verl: its replicas ask Ray)
EVAL_NUM_GPUS=${EVAL_NUM_GPUS:-1}
# ---- end of user-adjustable ----

if [[ -n "$MODEL_BUILD" && "$MODEL_BUILD" != tiny && "$MODEL_BUILD" != smollm2 ]]; then
    echo "MODEL_BUILD=$MODEL_BUILD: choose tiny, smollm2 or leave it empty" >&2
    exit 2
fi
if [[ "$DEVICE" != gpu && "$DEVICE" != cpu ]]; then
    echo "DEVICE=$DEVICE: choose gpu or cpu" >&2
    exit 2
fi
if [[ "$KEEP_TRAINING_STATE" != 1 && "$KEEP_TRAINING_STATE" != 0 ]]; then
    echo "KEEP_TRAINING_STATE=$KEEP_TRAINING_STATE: choose 1 (whole checkpoints) or 0 (only their HF weights)" >&2
    exit 2
fi
recipes_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$recipes_dir/../.." && pwd)

abspath() { realpath -m -- "$1"; }
data_dir=$(abspath "$DATA_DIR")
runs_dir=$(abspath "$RUNS_DIR")
ckpt_root=$(abspath "$CKPT_DIR")
eval_data_dir=${EVAL_DATA_DIR:+$(abspath "$EVAL_DATA_DIR")}
# A local model folder (or one the data step builds) becomes absolute; a hub id (Qwen/...) is kept as it is.
if [[ -e "$MODEL_PATH" || -n "$MODEL_BUILD" ]]; then model_path=$(abspath "$MODEL_PATH"); else model_path=$MODEL_PATH; fi

# Pipeline outputs the rows train on (dft_verl/pipeline: prepare -> sample -> verify -> filter).
rl_data=$data_dir/prepare/rl.parquet       # questions, verl RL format (PPO, GRPO)
sft_data=$data_dir/prepare/sft.parquet     # gold solutions (sft, iw_sft_sft, dft_sft)
rft_data=$data_dir/filter/sft.parquet      # correct self-samples (rft, iw_sft_offline, dft_offline)
dpo_data=$data_dir/filter/dpo.parquet      # (chosen correct, rejected wrong) self-sample pairs (dpo)

# A dry run queues its commands; the script that made the queue checks them all when it exits
# (one process: composing verl's configs costs seconds), a caller's RECIPE_CHECK_QUEUE is only appended to.
if [[ "$DRY_RUN" == 1 ]]; then
    if [[ -n "$RECIPE_CHECK_QUEUE" ]]; then
        queue_file=$(abspath "$RECIPE_CHECK_QUEUE")
    else
        queue_file=$(mktemp "${TMPDIR:-/tmp}/recipe_check.XXXXXX")
        trap check_queue EXIT
    fi
fi

cd "$repo_root" || exit 1
if [[ "$DEVICE" == cpu ]]; then
    # OpenMP threads that sleep while they wait: spinning threads on busy cores ran 50x slower (measured)
    export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
fi
# Local runs import dft_verl from this checkout in every process (torchrun ranks, Ray workers).
export PYTHONPATH="$repo_root${PYTHONPATH:+:$PYTHONPATH}"

# Launcher prefixes. Each ends right before the module's arguments.
# A job gets this checkout as its working directory (the uploaded copy: no .git, .venv or outputs) and, on
# DEVICE=cpu, the CPU platform in every process it starts; it reserves GPUs only on DEVICE=gpu.
runtime_env='"excludes": [".git", ".venv", "runs", "checkpoints", "outputs"]'
if [[ "$DEVICE" == cpu ]]; then
    # The trainers' own ray.init(runtime_env=...) sets some of these variables again (same values): Ray refuses
    # such a job unless RAY_OVERRIDE_JOB_RUNTIME_ENV=1 lets it merge the two (the job's working_dir is kept).
    runtime_env+=', "env_vars": {"VERL_PLATFORM": "cpu", "TOKENIZERS_PARALLELISM": "false", "OMP_WAIT_POLICY": "PASSIVE",'
    runtime_env+=' "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}'
fi
ray_submit=(ray job submit "--address=$RAY_ADDRESS" "--working-dir=$repo_root" "--runtime-env-json={$runtime_env}")
if [[ "$NNODES" -gt 1 ]]; then
    rendezvous=("--nnodes=$NNODES" "--node_rank=$NODE_RANK" "--master_addr=$MASTER_ADDR" "--master_port=$MASTER_PORT")
else
    rendezvous=(--standalone --nnodes=1)
fi
torchrun_prefix=(torchrun "${rendezvous[@]}" "--nproc_per_node=$N_GPUS_PER_NODE")
if [[ -n "$RAY_ADDRESS" ]]; then
    gpus=()
    eval_gpus=()
    one_gpu=()
    if [[ "$DEVICE" == gpu ]]; then
        gpus=("--entrypoint-num-gpus=$N_GPUS_PER_NODE")
        eval_gpus=("--entrypoint-num-gpus=$EVAL_NUM_GPUS")
        one_gpu=(--entrypoint-num-gpus=1)
    fi
    sft_launcher=("${ray_submit[@]}" -- python -m dft_verl.trainer.sft_ray)
    # No Ray variant of the DPO trainer: one job running torchrun on one node (run_dpo.sh checks NNODES=1)
    dpo_launcher=("${ray_submit[@]}" "${gpus[@]}" -- "${torchrun_prefix[@]}" -m dft_verl.dpo.train)
    ppo_launcher=("${ray_submit[@]}" -- python -m verl.trainer.main_ppo)
    gpu_python=("${ray_submit[@]}" "${eval_gpus[@]}" -- python)
    gpu1_python=("${ray_submit[@]}" "${one_gpu[@]}" -- python)
    cpu_python=("${ray_submit[@]}" -- python)
else
    sft_launcher=("${torchrun_prefix[@]}" -m dft_verl.trainer.sft)
    dpo_launcher=("${torchrun_prefix[@]}" -m dft_verl.dpo.train)
    ppo_launcher=("$PYTHON" -m verl.trainer.main_ppo)
    gpu_python=("$PYTHON")
    gpu1_python=("$PYTHON")
    cpu_python=("$PYTHON")
fi

# The SFT-family and DPO trainers' CPU overrides, from their one definition (dft_verl.trainer.cpu_overrides)
engine_args=()
if [[ "$DEVICE" == cpu ]]; then
    mapfile -t engine_args < <("$PYTHON" -m dft_verl.cli cpu-overrides)
    if [[ ${#engine_args[@]} -eq 0 ]]; then
        echo "$PYTHON -m dft_verl.cli cpu-overrides printed nothing: is dft_verl importable by $PYTHON?" >&2
        exit 1
    fi
fi
# Checkpoint frequency of every trained row (empty: the config's own)
save_args=()
if [[ -n "$SAVE_FREQ" ]]; then save_args+=("trainer.save_freq=$SAVE_FREQ"); fi

# Seeds of every trained row (empty SEED: the configs' own): verl's SFT trainer (SFT family, DPO); PPO/GRPO's data
# order, mini-batch order (actor and critic) and rollout sampling
train_seed_args=()
rl_seed_args=()
if [[ -n "$SEED" ]]; then
    train_seed_args=("trainer.seed=$SEED")
    rl_seed_args=("data.seed=$SEED" "actor_rollout_ref.actor.data_loader_seed=$SEED"
        "critic.data_loader_seed=$SEED" "actor_rollout_ref.rollout.seed=$SEED")
fi

# Overrides every SFT-family row shares: the paper's optimiser and data limits, the cluster shape, and
# HF weights in every checkpoint (global_step_<N>/huggingface) for evaluation.
sft_common_args=(
    "model.path=$model_path"
    "data.train_batch_size=$SFT_BATCH_SIZE"
    "data.max_length=$SFT_MAX_LENGTH"
    "data.micro_batch_size_per_gpu=$SFT_MICRO_BATCH_SIZE_PER_GPU"
    "data.truncation=right"
    "optim.lr=$SFT_LR"
    "optim.lr_scheduler_type=$SFT_LR_SCHEDULER"
    "optim.lr_warmup_steps_ratio=$SFT_WARMUP_RATIO"
    "model.use_fused_kernels=$SFT_FUSED_KERNELS"
    "trainer.total_epochs=$SFT_EPOCHS"
    "trainer.nnodes=$NNODES"
    "trainer.n_gpus_per_node=$N_GPUS_PER_NODE"
    "trainer.project_name=dft_verl_table3"
    "checkpoint.save_contents=[model,optimizer,extra,hf_model]"
    "${save_args[@]}"
    "${train_seed_args[@]}"
    "${engine_args[@]}"
)

# Overrides PPO and GRPO share (their configs: dft_verl/config/online/{ppo,grpo}.yaml).
rl_common_args=(
    --config-path=pkg://dft_verl.config.online
    "actor_rollout_ref.model.path=$model_path"
    "data.train_files=$rl_data"
    "data.val_files=$rl_data"
    "data.train_batch_size=$RL_BATCH_SIZE"
    "actor_rollout_ref.actor.optim.lr=$RL_LR"
    "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=$RL_WARMUP_RATIO"
    "actor_rollout_ref.rollout.temperature=$RL_TEMPERATURE"
    "trainer.total_epochs=$RL_EPOCHS"
    "trainer.nnodes=$NNODES"
    "trainer.n_gpus_per_node=$N_GPUS_PER_NODE"
    "${save_args[@]}"
    "${rl_seed_args[@]}"
)
if [[ -n "$RL_MAX_PROMPT_LENGTH" ]]; then rl_common_args+=("data.max_prompt_length=$RL_MAX_PROMPT_LENGTH"); fi
if [[ -n "$RL_MAX_RESPONSE_LENGTH" ]]; then rl_common_args+=("data.max_response_length=$RL_MAX_RESPONSE_LENGTH"); fi
if [[ -n "$RL_MINI_BATCH_SIZE" ]]; then
    rl_common_args+=("actor_rollout_ref.actor.ppo_mini_batch_size=$RL_MINI_BATCH_SIZE")
fi
if [[ -n "$RL_MICRO_BATCH_SIZE_PER_GPU" ]]; then
    rl_common_args+=(
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=$RL_MICRO_BATCH_SIZE_PER_GPU"
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=$RL_MICRO_BATCH_SIZE_PER_GPU"
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=$RL_MICRO_BATCH_SIZE_PER_GPU"
    )
fi
if [[ "$DEVICE" == cpu ]]; then
    rl_common_args+=(+platform=cpu)
    if [[ -n "$RAY_ADDRESS" ]]; then
        # A running cluster has its own CPU count (ray start --num-cpus); ray.init may not set one
        rl_common_args+=(ray_kwargs.ray_init.num_cpus=null)
    fi
fi

# run_cmd CMD...: run CMD; with DRY_RUN=1 print it and queue it for the config check instead.
run_cmd() {
    if [[ "$DRY_RUN" != 1 ]]; then
        "$@"
        return
    fi
    { local xtrace=${-//[^x]/}; set +x; } 2>/dev/null
    printf 'DRY_RUN:'
    printf ' %q' "$@"
    printf '\n'
    { printf '%q ' "$@"; printf '\n'; } >>"$queue_file"
    if [[ -n "$xtrace" ]]; then set -x; fi
}

# run_logged LOG CMD...: run_cmd, with the command's output also written to LOG. A failure stops the recipe
# and names LOG (what ran before it stays finished: every step skips itself on the next run).
run_logged() {
    local log=$1
    shift
    if [[ "$DRY_RUN" == 1 ]]; then
        run_cmd "$@"
        return
    fi
    mkdir -p "$(dirname "$log")"
    echo "log: $log"
    local rc=0
    printf "==== %s:%s\n" "$(date -u +%FT%TZ)" "$(printf " %q" "$@")" >>"$log"
    "$@" 2>&1 | tee -a "$log" || rc=$?
    if [[ "$rc" != 0 ]]; then
        { set +x; } 2>/dev/null
        echo "FAILED (exit $rc): ${*:1:3} ...; full log: $log" >&2
        exit "$rc"
    fi
}

# check_queue: at exit of a dry run that owns its queue, check every queued command in one process.
check_queue() {
    local rc=$?
    { set +x; } 2>/dev/null
    if [[ "$rc" == 0 ]]; then
        "$PYTHON" -m dft_verl.recipe_check --queue "$queue_file" || rc=$?
    fi
    rm -f "$queue_file"
    exit "$rc"
}

# node0_writes FILE LOG CMD...: node 0 runs CMD (output in LOG), which writes FILE (on storage all nodes
# see); the other nodes of a multi-node torchrun wait for FILE before they start training.
node0_writes() {
    local file=$1 log=$2
    shift 2
    if [[ -f "$file" ]]; then
        echo "$file exists; skipping (delete it to recompute)"
    elif [[ "$NODE_RANK" == 0 ]]; then
        if [[ "$DRY_RUN" != 1 ]]; then mkdir -p "$(dirname "$file")"; fi
        run_logged "$log" "$@"
    elif [[ "$DRY_RUN" == 1 ]]; then
        echo "[node $NODE_RANK] would wait for $file (written by node 0)"
    else
        until [[ -f "$file" ]]; do
            echo "[node $NODE_RANK] waiting for $file (written by node 0)"
            sleep 30
        done
    fi
}

# latest_step CKPT: the step of the newest checkpoint verl recorded under CKPT ("LATEST" in a dry run).
latest_step() {
    local tracker=$1/latest_checkpointed_iteration.txt
    if [[ -f "$tracker" ]]; then
        cat "$tracker"
    elif [[ "$DRY_RUN" == 1 ]]; then
        echo LATEST
    else
        echo "no checkpoint under $1 ($tracker missing): did training finish?" >&2
        return 1
    fi
}

# train_once ROW CMD...: run the training command (log: RUNS_DIR/ROW/train.log) unless RUNS_DIR/ROW/train.done
# says it finished.
# verl resumes an interrupted run from its last checkpoint by itself (trainer.resume_mode=auto).
train_once() {
    local row=$1
    shift
    local done_file=$runs_dir/$row/train.done
    if [[ -f "$done_file" ]]; then
        echo "[$row] training already done ($done_file); skipping"
        return
    fi
    run_logged "$runs_dir/$row/train.log" "$@"
    if [[ "$DRY_RUN" != 1 && "$NODE_RANK" == 0 ]]; then
        mkdir -p "$runs_dir/$row"
        date -u +%FT%TZ >"$done_file.tmp"
        mv "$done_file.tmp" "$done_file"
    fi
}

# drop_training_state CKPT HF_SUBDIR: with KEEP_TRAINING_STATE=0, delete the training state from every checkpoint
# under CKPT, keeping HF_SUBDIR ("huggingface" or "actor/huggingface"). Call after train_once. Only node 0.
drop_training_state() {
    local ckpt=$1 sub=$2
    if [[ "$NODE_RANK" != 0 || "$KEEP_TRAINING_STATE" == 1 ]]; then
        return
    fi
    run_cmd "${cpu_python[@]}" -m dft_verl.checkpoints --keep "$sub" "$ckpt"
}

# evaluate ROW MODEL [OUT]: python -m dft_verl.eval on MODEL into OUT (default RUNS_DIR/ROW/eval; log: OUT.log),
# skipped when OUT/results.json exists. Only node 0 evaluates.
evaluate() {
    local row=$1 model=$2 out=${3:-$runs_dir/$1/eval}
    if [[ "$NODE_RANK" != 0 || "$EVAL" != 1 ]]; then
        return
    fi
    if [[ -f "$out/results.json" ]]; then
        echo "[$row] $out/results.json exists; skipping evaluation"
        return
    fi
    local eval_args=(--model "$model" --out "$out" --prompt-template "$PROMPT_TEMPLATE")
    if [[ -n "$eval_data_dir" ]]; then eval_args+=(--data-dir "$eval_data_dir"); fi
    if [[ -n "$EVAL_BACKEND" ]]; then
        eval_args+=(--backend "$EVAL_BACKEND")
    elif [[ "$DEVICE" == cpu ]]; then
        eval_args+=(--backend hf)
    fi
    local user_eval_args=()
    read -r -a user_eval_args <<<"$EVAL_ARGS"
    run_logged "$out.log" "${gpu_python[@]}" -m dft_verl.eval "${eval_args[@]}" "${user_eval_args[@]}"
}

# copy_result SRC DST: DST/results.json becomes a copy of SRC/results.json (written only when they differ, atomically).
# Only node 0, with EVAL=1; a dry run has no result to copy.
copy_result() {
    local src=$1/results.json dst=$2/results.json
    if [[ "$NODE_RANK" != 0 || "$EVAL" != 1 || "$DRY_RUN" == 1 ]] || cmp -s "$src" "$dst"; then
        return
    fi
    mkdir -p "$2"
    cp "$src" "$dst.tmp"
    mv "$dst.tmp" "$dst"
}

# token_probs ROW MODEL: with TOKEN_PROBS=1 (and EVAL=1), MODEL's probability of each target token of the
# offline-RL SFT data into RUNS_DIR/ROW/token_probs (log: that folder's name + .log); skipped when its meta.json
# exists. Only node 0.
token_probs() {
    local row=$1 model=$2 out=$runs_dir/$1/token_probs
    if [[ "$NODE_RANK" != 0 || "$EVAL" != 1 || "$TOKEN_PROBS" != 1 ]]; then
        return
    fi
    if [[ -f "$out/meta.json" ]]; then
        echo "[$row] $out exists; skipping token probabilities"
        return
    fi
    local args=(--model "$model" --data "$rft_data" --out "$out" --max-length "$SFT_MAX_LENGTH" --no-plot)
    if [[ "$DEVICE" == cpu ]]; then args+=(--device cpu --dtype float32); fi
    run_logged "$out.log" "${gpu1_python[@]}" -m dft_verl.analysis.token_probs "${args[@]}"
}

# evaluate_checkpoints ROW CKPT HF_SUBDIR: evaluate the newest checkpoint into ROW/eval (and its token
# probabilities, TOKEN_PROBS=1) and, with EVAL_EVERY_CHECKPOINT=1, every other global_step_<N> into ROW/eval/step_<N>;
# the newest one's step_<N>/results.json is a copy of ROW/eval/results.json (the same model, evaluated once).
# HF_SUBDIR: "huggingface" (SFT trainer) or "actor/huggingface" (main_ppo).
evaluate_checkpoints() {
    local row=$1 ckpt=$2 sub=$3 latest step dir
    latest=$(latest_step "$ckpt")
    if [[ "$EVAL_EVERY_CHECKPOINT" == 1 ]]; then
        for dir in "$ckpt"/global_step_*; do
            step=${dir##*/global_step_}
            if [[ -d "$dir" && "$step" != "$latest" ]]; then
                evaluate "$row" "$dir/$sub" "$runs_dir/$row/eval/step_$step"
            fi
        done
    fi
    evaluate "$row" "$ckpt/global_step_$latest/$sub"
    if [[ "$EVAL_EVERY_CHECKPOINT" == 1 ]]; then
        copy_result "$runs_dir/$row/eval" "$runs_dir/$row/eval/step_$latest"
    fi
    token_probs "$row" "$ckpt/global_step_$latest/$sub"
}
