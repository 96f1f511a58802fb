"""Peak RSS growth of one encode: run as a script (by tests/test_encode_memory.py) in a
fresh process, it encodes a chunk of FIELDS noisy fields with a golden model and prints
one JSON line. Growth is the process's peak RSS (``VmHWM``, reset just before the encode)
less its RSS just before it, so torch's and the C libraries' allocations (compressai's
rANS encoder's) count, not only Python's.

    python tests/_encode_rss.py FIELDS CASE
"""

from __future__ import annotations

import json
import sys

import numpy as np
from _decode_rss import GOLDEN, INR, LINEAR, _status, reset_peak

# case -> (model, quality, codec options)
CASES = {
    # q0: its target within the model's reach on these noisy fields (q1's is not: it
    # would carry a correction, and that memory is the bounded case's)
    "linear": (LINEAR, "q0", {}),
    "linear bounded": (LINEAR, "q0", {"max_abs_error": 0.05}),
    "inr": (INR, "u6", {}),
    "inr bounded": (INR, "u6", {"max_abs_error": 0.05}),
}


def main(fields: int, case: str) -> None:
    from vcinr_sci.codec.numcodecs import VCINRCodec

    model, quality, options = CASES[case]
    codec = VCINRCodec.for_model(GOLDEN / "models" / model, quality, **options)
    x0 = np.load(GOLDEN / "v3_linear.in.npy")  # the tiny data's fields, as every golden model's grid
    x = np.resize(x0, (fields, *x0.shape[1:])).astype(np.float32)
    x += np.random.default_rng(0).normal(0, 0.5, x.shape).astype(np.float32)  # no two fields alike
    codec.encode(x[:2])  # first calls: tables, torch's lazy set-up
    reset_peak()
    before = _status("VmRSS")
    codec.encode(x)
    print(json.dumps({"case": case, "chunk_bytes": x.nbytes, "growth": _status("VmHWM") - before}))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
