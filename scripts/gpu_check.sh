#!/usr/bin/env bash
# The GPU checks, as one prepared run on a single-GPU machine (results into $OUT, default gpu-check/):
#   1. bench/gpu_train.py: 1B MFU and peak memory, StarCoder2-15B config peak memory at 1280 and 4096 tokens;
#   2. bench/gpu_round_memory.py: a round's end on the 1B model, peak memory per phase (train, export, handoff to cpu
#      and disk, hf engine generating, state back, next step; ROUND_MEMORY_ARGS, --smoke by default on ACCELERATOR=cpu);
#   3. the CPU Quick start's job on the GPU through the same CLI: tiny-model, fit (bf16-true), validate, export
#      (ATTN=flex_attention to train with flex attention).
# Missing Python packages may travel as wheels in .whl/ (installed into /tmp/site, nothing else touched).
#
#     bash scripts/gpu_check.sh
#     SKIP_WHEELS=1 ACCELERATOR=cpu PRECISION=32-true GPU_TRAIN_ARGS=--smoke bash scripts/gpu_check.sh    # checks the script on CPU
set -uo pipefail
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -z "${SKIP_WHEELS:-}" ] && compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
accelerator=${ACCELERATOR:-gpu}
precision=${PRECISION:-bf16-true}
attn=${ATTN:-sdpa}  # the tiny fit's attention kernel (flex_attention: GPU only)
selfalign() { python3 -m lightning_selfalign "$@"; }
step() {  # step NAME COMMAND...: runs it, logs to $OUT/NAME.log, prints its status and seconds
    local name=$1 start=$SECONDS
    shift
    "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "step $name rc=$rc seconds=$((SECONDS - start))" | tee -a "$OUT/steps.txt"
    tail -n 25 "$OUT/$name.log"
}

(nvidia-smi -L || echo "no nvidia-smi") | tee "$OUT/steps.txt"
python3 -c 'import torch, transformers, lightning; print(torch.__version__, transformers.__version__, lightning.__version__)' \
    | tee -a "$OUT/steps.txt"

step gpu_train python3 bench/gpu_train.py ${GPU_TRAIN_ARGS:-}
round_memory_args=${ROUND_MEMORY_ARGS-$([ "$accelerator" = cpu ] && echo --smoke)}
step round_memory python3 bench/gpu_round_memory.py --output "$OUT/round_memory.jsonl" $round_memory_args
work=$(mktemp -d)
step tiny_model selfalign tiny-model --output_dir "$work/tiny"
step fit selfalign fit --config configs/tiny-cpu.yaml --model.model_name_or_path "$work/tiny" --model.attn_implementation "$attn" \
    --trainer.accelerator "$accelerator" --trainer.precision "$precision" --trainer.default_root_dir "$work/runs"
ckpt=$(ls "$work"/runs/lightning_logs/version_*/checkpoints/last.ckpt 2>/dev/null | head -n 1)
step validate selfalign validate --config configs/tiny-cpu.yaml --model.model_name_or_path "$work/tiny" --model.attn_implementation "$attn" \
    --trainer.accelerator "$accelerator" --trainer.precision "$precision" --trainer.default_root_dir "$work/runs" --ckpt_path "$ckpt"
step export selfalign export --ckpt_path "$ckpt" --output_dir "$work/exported"
ls -la "$work/exported" >>"$OUT/export.log" 2>&1
