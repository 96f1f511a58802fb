#!/usr/bin/env bash
# Create/refresh .venv at the repo root. Idempotent: a stamp of the dependency files
# makes a second run return in a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAMP=.venv/.vcinr-installed
want=$(cat constraints.txt requirements.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [[ -f $STAMP && $(cat $STAMP) == "$want" ]]; then exit 0; fi
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
# PyPI's Linux torch is the CUDA build (GBs): TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# installs torch (and what it needs) from PyTorch's CPU wheel index instead.
"${pip[@]}" install -c constraints.txt ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
"${pip[@]}" install -c constraints.txt -r requirements.txt
# compressai 1.2.8's metadata demands numpy<2, torchvision and a CUDA torch; its needs
# are installed above, the package itself without its metadata's pins.
"${pip[@]}" install -c constraints.txt --no-deps compressai==1.2.8
"${pip[@]}" install -c constraints.txt --no-deps -e .
echo "$want" > $STAMP
