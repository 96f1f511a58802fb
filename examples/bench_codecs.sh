#!/usr/bin/env bash
# The headline comparison of vcinr against today's codecs, from a fresh clone:
#   bash examples/bench_codecs.sh            (about 1 hour on 2 CPU cores, most of it training)
# Needs the real data folder (../shared/data or $VCINR_DATA_DIR). Trains the rd-ccsm model
# (4 CCSM runs; run 66 validation, run 67 held out) with its coders unless it is already
# in out/artifacts, then writes tables (.md), JSON and plots to out/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
CFG=configs/rd-ccsm.yaml
DATA=${VCINR_DATA_DIR:-$(cd .. && pwd)/shared/data}
MODEL=$($PY -c "
from pipelines.build_latents import resolve_model
from vcinr_sci.config import load_config
try:
    print(resolve_model(load_config('$CFG'), None, with_coders=True))
except Exception:
    print('')")
if [[ -z $MODEL ]]; then
  $PY -m pipelines.meta_train --config $CFG
  $PY -m pipelines.build_latents --config $CFG
  $PY -m pipelines.train_coder --config $CFG
  MODEL=$($PY -c "
from pipelines.build_latents import resolve_model
from vcinr_sci.config import load_config
print(resolve_model(load_config('$CFG'), None, with_coders=True))")
fi
OUT=out/bench; mkdir -p $OUT
bench() { local name=$1; shift; $PY -m vcinr_sci.cli bench codecs --model "$MODEL" --json $OUT/$name.json --plot $OUT/$name.png "$@" | tee $OUT/$name.md; }
# In distribution: the held-out CCSM run 67 (2 m temperature, annual means).
bench ccsm-run67 --fields 24
# Cross-dataset: the same model on CCSM monthly surface temperature (same grid) and on
# ERA5 temperature at 850/500 hPa (3-degree, interpolated onto the model's grid).
bench ccsm-ts-monthly --fields 24 --data "$DATA/ccsm_b003_ts_monthly_100.nc" --variable TS --grid-dims lat,lon
bench era5-t-on-model-grid --fields 24 --data "$DATA/era5_eda_t_z_2017-01_3deg.nc" --variable t \
  --grid-dims latitude,longitude --regrid model
# Guaranteed error bounds: ratio at equal max-abs-error bounds.
bench ccsm-run67-bounded --fields 24 --bounded --levels q0,q2,q4,q6,u4
# The papers' grids (classical codecs; vcinr needs a model trained on that grid).
bench ccsm-run67-46x90 --fields 24 --data "$DATA/ccsm_trefht_1890-1999_annual_run67.nc" --variable TREFHT \
  --grid-dims lat,lon --regrid 46x90
bench ccsm-run67-181x360 --fields 24 --data "$DATA/ccsm_trefht_1890-1999_annual_run67.nc" --variable TREFHT \
  --grid-dims lat,lon --regrid 181x360
