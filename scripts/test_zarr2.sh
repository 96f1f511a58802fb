#!/usr/bin/env bash
# The numcodecs codec under zarr 2.18 / numcodecs 0.15, as benchmark harnesses and many
# archives pin them: runs tests/compat in a second environment that is .venv with
# those two (and their small pure-Python needs, tests/compat/requirements-zarr2.txt)
# installed into .venv/zarr2, first on PYTHONPATH, so they shadow .venv's zarr 3 and
# numcodecs 0.16; torch, compressai, xarray etc. come from .venv. Idempotent: a stamp
# of the pins makes a second run skip the install. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DIR=.venv/zarr2
REQ=tests/compat/requirements-zarr2.txt
want=$({ cat "$REQ" scripts/test_zarr2.sh; .venv/bin/python --version; } | sha256sum | cut -d' ' -f1)
if [[ ! -f $DIR/.vcinr-installed || $(cat "$DIR/.vcinr-installed") != "$want" ]]; then
  rm -rf "$DIR"
  .venv/bin/python -m pip --disable-pip-version-check -q install --no-deps --target "$DIR" -r "$REQ"
  echo "$want" > "$DIR/.vcinr-installed"
fi
# -p no:zarr: .venv's zarr 3 metadata still announces its pytest plugin, which zarr 2 lacks.
PYTHONPATH="$PWD/$DIR${PYTHONPATH:+:$PYTHONPATH}" exec .venv/bin/python -m pytest -q -p no:zarr tests/compat "$@"
