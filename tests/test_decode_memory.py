"""Peak RSS growth of one decode is at most 4 x its output + 64 MiB, for every kind
(INR, linear) and mode (plain, masked, item means, bounded with rANS and SPERR
corrections, all masked), measured in a fresh process by tests/_decode_rss.py (RSS, so
torch's and C allocations count)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "_decode_rss.py"
FACTOR, CONSTANT = 4, 64 * 2**20


# fields -> cases, all measured by one child process (one start, one model load)
CASES = {
    # large enough that a whole-chunk float64 copy would show (the output is 14.5 MB)
    2000: ["all-masked", "inr", "inr means masked", "linear", "linear bounded rans masked"],
    # a SPERR correction covers at most 2**20 values (bound.SPERR_MAX_VALUES)
    500: ["inr bounded sperr", "linear bounded sperr masked", "inr bounded rans masked"],
}


def test_decode_memory_in_proportion_to_output(tmp_path):
    env = {**os.environ, "VCINR_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "VCINR_CACHE_DIR": str(tmp_path),
           "MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONPATH": str(SCRIPT.parents[1])}  # freed arrays leave RSS
    args = [str(a) for fields, cases in CASES.items() for a in (fields, *cases)]
    run = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(r["fields"], r["case"]) for r in results] == [(f, c) for f, cases in CASES.items() for c in cases]
    for r in results:
        assert r["growth"] <= FACTOR * r["output_bytes"] + CONSTANT, r
