#!/usr/bin/env bash
# The execution-filter ablation on the code world (issue: self-alignment that measurably learns on a CPU):
# the Quick start loop with the filter (arm "filtered") and without it (arm "unfiltered": every parsed response
# kept, one per instruction at random), same seeds, same compute, then one report with both arms.
#   bash bench/toyworld_ablation.sh SEED [extra self-align flags...]
# Writes runs/ablation-s<SEED>/{filtered,unfiltered}/ and runs/ablation-s<SEED>/report/report.html (ROOT=DIR in the
# environment writes under DIR instead, e.g. for a run with extra flags).
set -euo pipefail
cd "$(dirname "$0")/.."
seed="${1:-0}"; shift || true
root="${ROOT:-runs/ablation-s${seed}}"
[ -f toyworld/benchmark.jsonl ] || selfalign toyworld --output_dir toyworld
for arm in filtered unfiltered; do
  filter=true; [ "$arm" = unfiltered ] && filter=false
  /usr/bin/time -f "${arm}: %e s wall" selfalign self-align --config configs/self-align-toyworld-cpu.yaml \
    --workdir "${root}/${arm}" --execution_filter "${filter}" --generation.seed "${seed}" \
    --curation.seed "${seed}" --progress false "$@"
done
selfalign report --workdir "[${root}/filtered,${root}/unfiltered]" --labels '[filtered,unfiltered]' \
  --output_dir "${root}/report"
