"""Peak RSS growth of one decode, per kind and mode: run as a script (by
tests/test_decode_memory.py) in a fresh process, it builds large chunks with the golden
models, decodes each once, and prints one JSON line per case. A number sets the field
count of the cases after it (no case after the last: every case).

    python tests/_decode_rss.py FIELDS [CASE ...] [FIELDS [CASE ...] ...]

Every chunk is one a real encoder could write, or a crafted one (the issue's
shapes): latents of zero, a correction of zeros (rANS), a constant SPERR field, a
mask on the first grid row. Growth is the process's peak RSS (``VmHWM``, reset through
``/proc/self/clear_refs`` just before the decode) less its RSS just before it, so
torch's and the C libraries' allocations count, not only Python's.
"""

from __future__ import annotations

import ctypes
import gc
import json
import sys
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent / "golden"
INR, MEANS, LINEAR = "383a2666a3f2daef", "cad4182059e516e3", "9ef20148fe0c3bef"
# case -> (model, quality, mask, correction); correction: None, "rans", "sperr"
CASES = {
    "all-masked": (INR, "u6", "all", None),
    "inr": (INR, "u6", None, None),
    "inr learned": (INR, "q0", None, None),
    "inr means masked": (MEANS, "u6", "row", None),
    "inr bounded rans masked": (INR, "u6", "row", "rans"),
    "inr bounded sperr": (INR, "u6", None, "sperr"),
    "linear": (LINEAR, "q1", None, None),
    "linear bounded rans masked": (LINEAR, "q0", "row", "rans"),
    "linear bounded sperr masked": (LINEAR, "q0", "row", "sperr"),
}


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak() -> None:
    """Hand freed memory back to the system, then start a new peak from the RSS now."""
    gc.collect()
    gc.freeze()  # what survives is skipped by later collections (0.5 s each with torch loaded)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")


def build(case: str, fields: int) -> tuple[bytes, object]:
    """A chunk of ``fields`` fields of ``case`` and a codec that decodes it."""
    import torch

    from vcinr_sci.codec.container import ChunkHeader, encode_container
    from vcinr_sci.coding.bound import ErrorBound, encode_residual
    from vcinr_sci.model.registry import get_model

    model_hash, quality, masked, correction = CASES[case]
    model = get_model(model_hash, [str(GOLDEN / "models" / model_hash)])
    shape = (fields, *model.grid.shape)
    header = ChunkHeader(model.hash, shape, "<f4", fields, quality, 3)
    mask = None
    if masked == "all":
        return encode_container(header, np.ones(shape, bool), b""), _codec(model, quality)
    if masked == "row":
        mask = np.zeros(shape, bool)
        mask[:, 0] = True
    active = fields * model.num_patches
    coder = model.coder(quality)
    phi = coder.quantise(torch.zeros(1, model.latent_dim)).expand(active, -1) if quality != "q0" or \
        model.artifact.basis is not None else torch.zeros(active, model.latent_dim)
    stored = np.full(active, 0.5, "<f2").tobytes() if model.subtracts_item_mean else b""
    payload = b"\x00" + stored + coder.compress(phi)
    residual = None
    if correction is not None:
        kept = np.ones(shape, bool) if mask is None else ~mask
        x = np.full(shape, 280.0, np.float32)  # one value: q is 0 everywhere, SPERR's field constant
        residual = encode_residual(x, kept, np.full(int(kept.sum()), 280.0), ErrorBound(max_abs_error=0.05),
                                   model.artifact.normaliser.hi - model.artifact.normaliser.lo, (correction,))
    return encode_container(header, mask, payload, residual), _codec(model, quality, correction)


def _codec(model, quality: str, correction: str | None = None):
    from vcinr_sci.codec.numcodecs import VCINRCodec

    bound = 0.05 if correction is not None else None
    return VCINRCodec.for_model(model, quality, model_path=str(GOLDEN / "models" / model.hash[:16]),
                                max_abs_error=bound)


def measure(case: str, fields: int) -> dict:
    chunk, codec = build(case, fields)
    small, _ = build(case, 2)
    codec.decode(small)  # warm: the model, its coders and every code path loaded
    del small
    reset_peak()
    before = _status("VmRSS")
    out = codec.decode(chunk)
    growth = _status("VmHWM") - before
    return {"case": case, "fields": fields, "chunk_bytes": len(chunk), "output_bytes": out.nbytes,
            "growth": growth, "ratio": round(growth / out.nbytes, 2)}


def main(argv: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    runs: list[tuple[int, list[str]]] = []
    for arg in argv:
        if arg.isdigit():
            runs.append((int(arg), []))
        else:
            runs[-1][1].append(arg)
    for fields, cases in runs:
        for case in cases or list(CASES):
            print(json.dumps(measure(case, fields)), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(sys.argv[1:])
