#!/usr/bin/env bash
# Rebuild the committed base model of the code-world demo (models/toyworld-base), from scratch, offline.
# About 10-12 minutes on 2 CPU cores. Deterministic for a given machine and PyTorch build (same seed, same data).
set -euo pipefail
cd "$(dirname "$0")/.."
selfalign tiny-model --pretrain toyworld --output_dir models/toyworld-base \
    --hidden_size 128 --intermediate_size 512 --num_layers 4 --num_heads 4 --num_kv_heads 2 \
    --max_position_embeddings 2048 --pretrain_steps 6400 --pretrain_batch 2 --pretrain_long_code 0.75 \
    --pretrain_slip 0.75 --seed 0 "$@"
