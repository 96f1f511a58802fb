#!/usr/bin/env bash
# vcinr's rd-ccsm model against today's codecs and against the baselines fitted on its
# training data (mean field, EOFs; the README headline uses examples/bench_suite.sh):
#   bash examples/bench_codecs.sh       (about 1.5 hours on 2 CPU cores, most of it training)
# Needs the real data folder (../shared/data or $VCINR_DATA_DIR). Trains two rd-ccsm models
# with their coders unless they are already in out/artifacts: one on CCSM's own 64 x 128
# grid, one on the CCSM fields regridded to the paper's 46 x 90 ERA5 grid (4 runs train,
# run 66 validation, run 67 held out). Writes tables (.md), JSON and plots to out/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
CFG=configs/rd-ccsm.yaml
DATA=${VCINR_DATA_DIR:-$(cd .. && pwd)/shared/data}
GRID46=(--set "data.regrid=[46,90]" --set coder.kind=learned --set "coder.lambdas=[10,100,1000,10000]" --set coder.steps=2000)

# The artifact (with coders) trained from CFG and the given overrides; trained if absent.
model() {
  local find="from vcinr_sci.model.selection import select_artifact
from vcinr_sci.config import load_config, parse_overrides
import sys
a = sys.argv[1:]
print(select_artifact(load_config('$CFG', parse_overrides([a[i + 1] for i in range(0, len(a), 2)])), with_coders=True))"
  if ! $PY -c "$find" "$@" >/dev/null 2>&1; then
    $PY -m pipelines.meta_train --config $CFG "$@" >&2
    $PY -m pipelines.build_latents --config $CFG "$@" >&2
    $PY -m pipelines.train_coder --config $CFG "$@" >&2
  fi
  $PY -c "$find" "$@"
}
MODEL=$(model)
MODEL46=$(model "${GRID46[@]}")
OUT=out/bench; mkdir -p $OUT
bench() { local name=$1; shift; $PY -m vcinr_sci.cli bench codecs --json $OUT/$name.json --plot $OUT/$name.png "$@" | tee $OUT/$name.md; }
# In distribution: the held-out CCSM run 67 (2 m temperature, annual means).
bench ccsm-run67 --model "$MODEL" --fields 24
# The paper's 46 x 90 grid: a model trained on it; and 181 x 360 (classical codecs only).
bench ccsm-run67-46x90 --model "$MODEL46" --fields 24
bench ccsm-run67-181x360 --fields 24 --data "$DATA/ccsm_trefht_1890-1999_annual_run67.nc" --variable TREFHT \
  --grid-dims lat,lon --regrid 181x360
# Cross-dataset: the same model on CCSM monthly surface temperature (same grid) and on
# ERA5 temperature at 850/500 hPa (3-degree, interpolated onto the model's grid).
bench ccsm-ts-monthly --model "$MODEL" --fields 24 --data "$DATA/ccsm_b003_ts_monthly_100.nc" --variable TS \
  --grid-dims lat,lon
bench era5-t-on-model-grid --model "$MODEL" --fields 24 --data "$DATA/era5_eda_t_z_2017-01_3deg.nc" \
  --variable t --grid-dims latitude,longitude --regrid model
# Guaranteed error bounds: ratio at equal max-abs-error bounds.
bench ccsm-run67-bounded --model "$MODEL" --fields 24 --bounded --levels q0,q2,q4,q6,u4
