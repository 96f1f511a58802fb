#!/usr/bin/env bash
# README command (2): install into .venv if needed, lint (ruff) and type-check (mypy)
# the whole tree (seconds; a finding stops the run), then run the whole test suite, and
# (with no arguments) the Zarr 2 compatibility tests in their own environment
# (scripts/test_zarr2.sh). Exits non-zero if any fails. Arguments go to the main
# pytest run only (e.g. -m "not slow" for the quick tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
main=0
.venv/bin/python -m pytest -q "$@" || main=$?
(( $# )) && exit $main
compat=0
bash scripts/test_zarr2.sh || compat=$?
exit $(( main ? main : compat ))
