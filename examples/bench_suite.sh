#!/usr/bin/env bash
# vcinr against per-field codecs and against the baselines that use the same training data
# (mean field, EOFs), on six datasets, from a fresh clone:
#   bash examples/bench_suite.sh                 (all datasets)
#   bash examples/bench_suite.sh ccsm hadcm3     (some of them)
#   KIND=inr bash examples/bench_suite.sh        (the meta-learned INR instead of the linear model)
#   KIND=hybrid bash examples/bench_suite.sh     (the linear model plus an INR on its residual)
#   KIND=inr SET="model.conditioning=shift" TAG=shift bash examples/bench_suite.sh ccsm
#                                                (config overrides for every stage; TAG names the output)
#   CONSECUTIVE=1 bash examples/bench_suite.sh   (the last 24 held-out fields, as a store chunks
#                                                 them along time, instead of 24 spread out)
# Per dataset (configs/suite-NAME.yaml) it fits a linear model (KIND=linear, the default:
# seconds) or trains a CPU-sized INR (KIND=inr: minutes) on that dataset's own training
# split unless one is already in out/suite/artifacts (found by its config), then
# runs `vcinr bench codecs` (RD and --bounded) on the held-out split. Writes NAME.md/.json/.png
# per dataset to out/suite/bench-KIND[-TAG]/, suite-KIND[-TAG].md/.json to out/suite/, and the seconds
# each stage took to out/suite/timings.tsv. Needs the real data folder (../shared/data or $VCINR_DATA_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then bash scripts/setup.sh; PY=.venv/bin/python; fi  # PY=...: an existing environment
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
KIND=${KIND:-linear}
RUN=$KIND${TAG:+-$TAG}${CONSECUTIVE:+-consecutive}  # names the outputs of this variant
OVERRIDES=(--set "model.kind=$KIND")
for kv in ${SET:-}; do OVERRIDES+=(--set "$kv"); done
DATASETS=("$@")
[ ${#DATASETS[@]} -gt 0 ] || DATASETS=(ccsm ccsm-46x90 hadcm3 era5-uk ccsm-ts ostia)
OUT=out/suite/bench-$RUN; mkdir -p "$OUT" out/suite/logs
FIELDS=24  # held-out fields evaluated per dataset, evenly spaced (CONSECUTIVE=1: the last 24)
# Chunks of up to 64 fields, the accessor's default (the 24 fields make one chunk), for
# vcinr and the baselines alike: a chunk's fixed bytes are paid once per chunk.
CHUNK=(--chunk-fields 64)
[ -n "${CONSECUTIVE:-}" ] && CHUNK+=(--consecutive)
# PSNR on each model's normalisation range: the fixed 202.66..320.93 K for CCSM TREFHT,
# the training min/max elsewhere (--psnr-range model)
# vcinr at its own encode steps only (more steps cost minutes a dataset on one core); a
# linear model also with its correction to five bounds, past where its EOFs stop
VCINR=(--more-steps "")
[ "$KIND" != inr ] && VCINR+=(--vcinr-bounds 1e-1,3e-2,1e-2,3e-3,1e-3)

timed() {  # timed NAME STAGE COMMAND...: run it, log its output, record its seconds
  local name=$1 stage=$2; shift 2
  local t0=$SECONDS
  "$@" > "out/suite/logs/$name-$RUN-$stage.log" 2>&1 || { echo "$name $stage failed: see out/suite/logs/$name-$RUN-$stage.log" >&2; return 1; }
  printf '%s\t%s\t%s\t%s\n' "$name" "$RUN" "$stage" $((SECONDS - t0)) >> out/suite/timings.tsv
}

bench() {  # bench OUTSTEM ARGS...: the table to OUTSTEM.md, JSON and plot beside it
  local stem=$1; shift
  $PY -m vcinr_sci.cli bench codecs --json "$stem.json" --plot "$stem.png" --psnr-range model "$@" > "$stem.md"
}

# The artifact with coders made from CFG and the overrides; empty when there is none yet
# (each pipeline stage skips what an earlier run finished).
find_model() {
  $PY -c "import sys
from vcinr_sci.model.selection import select_artifact
from vcinr_sci.config import load_config, parse_overrides
from vcinr_sci.errors import ArtifactError
try:
    print(select_artifact(load_config(sys.argv[1], parse_overrides(sys.argv[2:])), None, with_coders=True, require_coders=True))
except ArtifactError:
    pass" "$1" "model.kind=$KIND" ${SET:-}
}

for name in "${DATASETS[@]}"; do
  cfg=configs/suite-$name.yaml
  [ -f "$cfg" ] || { echo "no config $cfg" >&2; exit 2; }
  model=$(find_model "$cfg")
  if [ -z "$model" ] && [ "$KIND" = linear ]; then
    echo "== $name: fitting the linear model" >&2
    timed "$name" fit_basis $PY -m pipelines.fit_basis --config "$cfg" "${OVERRIDES[@]}"
    model=$(find_model "$cfg")
  elif [ -z "$model" ] && [ "$KIND" = hybrid ]; then
    echo "== $name: fitting the hybrid model (linear model, INR on its residual, levels)" >&2
    timed "$name" fit_hybrid $PY -m pipelines.fit_hybrid --config "$cfg" "${OVERRIDES[@]}"
    model=$(find_model "$cfg")
  elif [ -z "$model" ]; then
    echo "== $name: training (meta-train, latents, coders)" >&2
    timed "$name" meta_train $PY -m pipelines.meta_train --config "$cfg" "${OVERRIDES[@]}"
    timed "$name" build_latents $PY -m pipelines.build_latents --config "$cfg" "${OVERRIDES[@]}"
    timed "$name" train_coder $PY -m pipelines.train_coder --config "$cfg" "${OVERRIDES[@]}"
    model=$(find_model "$cfg")
  fi
  echo "== $name: bench codecs with model $model" >&2
  timed "$name" bench_rd bench "$OUT/$name" --model "$model" --fields $FIELDS "${CHUNK[@]}" "${VCINR[@]}"
  timed "$name" bench_bounded bench "$OUT/$name-bounded" --model "$model" --fields $FIELDS "${CHUNK[@]}" --bounded \
    --levels "$($PY -c "from vcinr_sci.model.artifact import load_artifact
print(','.join(q for q in load_artifact('$model').quality_levels if q.startswith('q')))")"
done
$PY -m vcinr_sci.cli bench suite "$OUT" --json "out/suite/suite-$RUN.json" | tee "out/suite/suite-$RUN.md"
