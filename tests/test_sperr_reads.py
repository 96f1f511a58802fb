"""SPERR's decoder reads only inside the bytes :func:`vcinr_sci.coding.sperr.readable`
hands it, whatever the stream, and decodes every stream SPERR's encoder writes exactly as
it would unpadded.

SPERR 0.8.4 checks its bit budget only between passes, so a crafted stream with intact
framing made it read past its bit buffer (found by examples/fuzz_decoder.py, 2026-12-07;
valgrind: ``sperr::Bitstream::rbit``). The padding bound is checked here under valgrind
on streams built to read as far as they can: all-ones bits (every set splits, every pixel
is significant) and random bits, at 1 to 64 bit planes, with and without an outlier
section. Synthetic residuals: the equivalence test is about bytes, not rate-distortion."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from vcinr_sci.coding import sperr

imagecodecs = pytest.importorskip("imagecodecs")
HEAD = struct.Struct("<BQ")


def _residual(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth field plus noise plus a few spikes (spikes give SPERR outliers to code)."""
    grids = np.meshgrid(*(np.linspace(0, 3, n) for n in shape), indexing="ij")
    smooth = np.sin(sum(grids)) + 0.3 * np.cos(2 * grids[-1])
    x = smooth + 0.05 * rng.standard_normal(shape)
    spikes = rng.random(shape) < 0.01
    return np.where(spikes, x + rng.normal(0, 2, shape), x)


def _has_outliers(stream: bytes) -> bool:
    return 17 + sperr._framed_len(stream, 17, "SPECK") < len(stream)


def test_encoder_streams_decode_as_unpadded():
    """Every stream the encoder wrote, at 4 shapes and 5 tolerances (with and without
    outlier sections), decodes bit for bit as SPERR decodes it without the padding, and
    within its tolerance."""
    rng = np.random.default_rng(7)
    outliers = 0
    for shape in [(1, 7, 5), (3, 40, 60), (2, 33, 17), (4, 64, 128)]:
        r = _residual(rng, shape)
        for tol in (1e-4, 1e-3, 1e-2, 0.1, 1.0):
            stream = sperr.encode(r, tol)
            plain = imagecodecs.sperr_decode(stream, shape=sperr.grid_shape(shape), dtype=np.float64, header=False)
            ours = sperr.decode(stream, shape)
            assert len(sperr.readable(stream, r.size)) > len(stream)
            np.testing.assert_array_equal(ours, plain.reshape(shape))
            assert np.abs(ours - r).max() <= tol
            outliers += _has_outliers(stream)
    assert outliers >= 3  # the outlier coder's section was padded and decoded too


def _crafted(conditioner: bytes, values: int) -> list[bytes]:
    """Framed streams whose bits make SPERR read as much as they can."""
    rng = np.random.default_rng(0)

    def section(planes: int, nbits: int, fill: str) -> bytes:
        n = (nbits + 7) // 8
        body = b"\xff" * n if fill == "ones" else rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        return HEAD.pack(planes, nbits) + body

    out = []
    for planes in (1, 8, 9, 17, 33, 64):
        for nbits in (8, 4 * values):
            for fill in ("ones", "random"):
                speck = section(planes, nbits, fill)
                out += [conditioner + speck, conditioner + speck + section(min(planes, 20), nbits, fill)]
    return out


_DECODE_ALL = """
import sys, numpy as np, imagecodecs
data = open(sys.argv[1], "rb").read()
rows, cols = int(sys.argv[2]), int(sys.argv[3])
pos = 0
while pos < len(data):
    n = int.from_bytes(data[pos:pos + 8], "little")
    try:
        imagecodecs.sperr_decode(data[pos + 8:pos + 8 + n], shape=(rows, cols), dtype=np.float64, header=False)
    except Exception:
        pass
    pos += 8 + n
"""


def _sperr_invalid_accesses(streams: list[bytes], grid: tuple[int, int], tmp_path) -> int:
    """Invalid reads or writes inside libSPERR, by valgrind, while SPERR decodes
    ``streams`` in a child (no vcinr_sci import there: valgrind runs it 30x slower)."""
    path = tmp_path / "streams.bin"
    path.write_bytes(b"".join(len(s).to_bytes(8, "little") + s for s in streams))
    run = subprocess.run(
        ["valgrind", "--num-callers=4", sys.executable, "-c", _DECODE_ALL, str(path), *map(str, grid)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    # valgrind's reports are blocks of "==PID== " lines, separated by an empty one
    blocks = re.split(r"^==\d+== $", run.stderr, flags=re.M)
    return sum("Invalid " in b and "libSPERR" in b for b in blocks)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind (apt install valgrind)")
@pytest.mark.parametrize("shape", [(1, 74, 49), (1, 1, 700)])
def test_crafted_streams_read_inside_their_padding(shape, tmp_path):
    """Streams crafted to read as far as they can: SPERR reads past its buffer on them as
    given (so valgrind sees what is checked), and never on what ``readable`` hands it."""
    values = int(np.prod(shape))
    conditioner = sperr.encode(_residual(np.random.default_rng(1), shape), 1e-3)[:17]
    streams = _crafted(conditioner, values)
    for s in streams:
        sperr.check_stream(s, values)  # framing intact: only the bits are hostile
    grid = sperr.grid_shape(shape)
    assert _sperr_invalid_accesses(streams, grid, tmp_path) > 0
    assert _sperr_invalid_accesses([bytes(sperr.readable(s, values)) for s in streams], grid, tmp_path) == 0
