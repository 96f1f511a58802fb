#!/usr/bin/env bash
# README command (2): install into .venv if needed, then run the whole test suite, and
# (with no arguments) the Zarr 2 compatibility tests in their own environment
# (scripts/test_zarr2.sh). Exits non-zero if either fails. Arguments go to the main
# pytest run only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
main=0
.venv/bin/python -m pytest -q "$@" || main=$?
(( $# )) && exit $main
compat=0
bash scripts/test_zarr2.sh || compat=$?
exit $(( main ? main : compat ))
