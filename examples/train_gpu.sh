#!/usr/bin/env bash
# A paper-size gated INR (width 256, depth 6; KIND=hybrid: the INR of a hybrid model),
# meta-trained on a lent H200 for 210 s on ERA5 UK hourly, then 210 s on CCSM TREFHT
# (the suite's data and splits), made into artifacts and benchmarked here, on the CPU.
# Four stages, run from the repository root:
#
# 1. here (CPU, a minute; needs the real data, ../shared/data or $VCINR_DATA_DIR):
#      bash examples/train_gpu.sh prepare          (KIND=hybrid ...: the hybrid's INR;
#                                                  SET="k=v ...": more config overrides)
#    writes one data bundle per dataset to gpu_data/ (git-ignored, about 27 MB) and its
#    order to gpu_data/bundles.txt (python -m pipelines.gpu_bundle).
#
# 2. on the GPU, with the session's device tool (it copies the working tree there):
#      run(command="PYTHONUNBUFFERED=1 bash examples/train_gpu.sh device",
#          carry=["gpu_data"], timeout_s=570)
#    about 7.5 minutes: each bundle gets BUDGET_S=210 s of training (examples/train_gpu.py),
#    plus start-up and the final evaluations. Writes NAME.safetensors, NAME.json (the
#    config as trained, the curve, the machine) and train.log to $OUT, which comes back
#    under the reply's files_at folder. The JSON is rewritten at every curve point, so
#    a run cut short still brings its curve back. Give the machine back afterwards.
#
# 3. here: make artifacts of what came back (scored on the test items on the CPU):
#      bash examples/train_gpu.sh import FILES_AT
#    artifacts -> out/gpu/artifacts/<hash>/; the config as trained -> out/gpu/NAME.yaml;
#    the run file (curve) -> out/gpu/NAME.run.json; the curve is also in the artifact's
#    metrics.training (python -m pipelines.import_gpu_run).
#
# 4. here: latents and latent coders (a hybrid: and its levels), then the suite's
#    `vcinr bench codecs` on 24 held-out fields in chunks of 64 fields:
#      bash examples/train_gpu.sh bench            (about an hour on 2 cores: the INR is
#                                                  16x the suite's in FLOPs)
#    tables, JSON and plots -> out/gpu/bench/NAME.{md,json,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
KIND=${KIND:-inr}
DATASETS=(era5-uk ccsm)  # trained in this order
BUDGET_S=${BUDGET_S:-210}  # wall seconds of training per dataset on the GPU

# The GPU recipe over each suite config: the size of section 9 of docs/method.md's H200
# calibration run (width 256, depth 6, latent 64, batch 32, outer lr 1e-4), half of CCSM's
# 8,192 points a step (all of ERA5 UK's 1,617); meta.steps is only a cap (the wall budget
# stops the run; the artifact's config records the steps run). An INR codes the anomaly
# from the training mean field (data.subtract_mean_field), so its zero latent already
# scores the mean field's PSNR; a hybrid's linear model holds the mean instead.
RECIPE=(model.kind="$KIND" model.conditioning=gated model.width=256 model.depth=6 model.latent_dim=64
        model.mod_width=256 model.mod_blocks=2
        meta.batch_size=32 meta.outer_lr=1e-4 meta.inner_steps=3 meta.points_per_step=4096 meta.steps=100000
        meta.eval_items=64 meta.eval_inner_steps=10
        train.storage_path=out/gpu/runs train.artifact_dir=out/gpu/artifacts latents.output_dir=out/gpu/latents)
[ "$KIND" = inr ] && RECIPE+=(data.subtract_mean_field=true)

py() { "${PY:-.venv/bin/python}" "$@"; }

case "${1:-}" in
prepare)
  [ -n "${PY:-}" ] || bash scripts/setup.sh
  mkdir -p gpu_data && rm -f gpu_data/*.npz gpu_data/bundles.txt
  for name in "${DATASETS[@]}"; do
    sets=(--set "name=gpu-$KIND-$name")
    for kv in "${RECIPE[@]}" ${SET:-}; do sets+=(--set "$kv"); done
    py -m pipelines.gpu_bundle --config "configs/suite-$name.yaml" "${sets[@]}" --out gpu_data
    echo "gpu_data/gpu-$KIND-$name.npz" >> gpu_data/bundles.txt
  done
  du -sh gpu_data
  ;;
device)
  : "${OUT:?the device stage writes to \$OUT: run it through the device tool}"
  nvidia-smi -L || true
  python3 examples/train_gpu.py $(cat gpu_data/bundles.txt) --budget-s "$BUDGET_S" --out "$OUT" 2>&1 | tee "$OUT/train.log"
  ;;
import)
  [ -n "${2:-}" ] || { echo "usage: bash examples/train_gpu.sh import FILES_AT (the device run's files)" >&2; exit 2; }
  py -m pipelines.import_gpu_run "$2" --out out/gpu
  ;;
bench)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  mkdir -p out/gpu/bench
  for cfg in out/gpu/*.yaml; do
    name=$(basename "$cfg" .yaml)
    if grep -q "kind: hybrid" "$cfg"; then
      py -m pipelines.fit_hybrid --config "$cfg"  # the linear model fitted before, the GPU's INR (its done file), latents, coders, levels
    else
      py -m pipelines.build_latents --config "$cfg"
      py -m pipelines.train_coder --config "$cfg"
    fi
    model=$(py -c "import sys
from vcinr_sci.config import load_config
from vcinr_sci.model.selection import select_artifact
print(select_artifact(load_config(sys.argv[1]), with_coders=True, require_coders=True))" "$cfg")
    py -m vcinr_sci.cli bench codecs --model "$model" --fields 24 --chunk-fields 64 --more-steps "" --psnr-range model \
      --json "out/gpu/bench/$name.json" --plot "out/gpu/bench/$name.png" | tee "out/gpu/bench/$name.md"
  done
  ;;
*)
  echo "usage: bash examples/train_gpu.sh prepare | device | import FILES_AT | bench   (see the comments at the top)" >&2
  exit 2
  ;;
esac
