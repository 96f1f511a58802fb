#!/usr/bin/env bash
# README command (1): install into .venv if needed, then run the main job end to end
# on the embedded default (local Ray, local stores, real data from a PyPI package).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the INR, the linear model and the hybrid, side by side in one table
exec .venv/bin/python -m pipelines.main_job --config configs/demo.yaml --kinds inr,linear,hybrid "$@"
