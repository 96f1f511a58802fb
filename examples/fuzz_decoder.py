"""Fuzz the vcinr decoder with mutated chunks and print what became of them.

    python examples/fuzz_decoder.py                 # 12,000 mutations, a few minutes on one core
    python examples/fuzz_decoder.py --mutations 300 --model PATH --json out.json

Seeds are real chunks of a tiny model (trained in-process from the tiny test config, or
``--model``): plain, with NaN, with NaN among fill values, all NaN, the learned (rANS)
coder, the error-bounded mode (a residual section: rANS-coded, and SPERR-coded at a loose
bound), stored item means. Each mutation is
one of: random bit flips, a truncation, an extension (accidents: the CRCs must refuse
every one), or a crafted edit whose CRCs are recomputed (header fields, the shape, the
dtype, section lengths, mask/payload/residual bytes: CRCs cannot refuse these, the
decoder's own checks must, or decode something). Each mutation is decoded as Zarr 2
does (numcodecs, into the chunk's buffer), as numcodecs does without a buffer (the
size cap) and as Zarr 3 does (the array's chunk shape).

Outcomes: refused (ChunkFormatError, CodecError, ArtifactError), decoded-same, decoded-
wrong (CRCs guard accidents, not tampering), crashed (any other exception), hung (over
``--timeout`` seconds). It also reports the largest memory a decode allocated (traced by
tracemalloc, numpy included) against that of the seed's own decode, and the growth of
the process's peak RSS. Exit status 1 if any mutation crashed, hung, or allocated more
than twice its seed's decode plus 1 MiB.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import time
import tracemalloc
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUTCOMES = ("refused", "decoded-wrong", "decoded-same", "crashed", "hung")
ACCIDENTS = ("bit flips", "truncation", "extension")
# header fields a "header field" mutation edits -> their width in bits (varints: 64)
_FIELDS = {"flags": 8, "dims": 8, "inner_steps": 64, "mask_len": 64, "payload_len": 64, "residual_len": 64}


class Hung(Exception):
    pass


@dataclass
class Seed:
    name: str
    codec: object  # VCINRCodec
    chunk: bytes
    decoded: np.ndarray
    peak: int  # bytes traced while decoding the seed itself


# ---------------------------------------------------------------------------- chunk surgery


def resign(buf: bytes | bytearray) -> bytes:
    """Recompute the CRC of a (possibly edited) chunk."""
    from vcinr_sci.codec.container import seal

    return seal(buf) if len(buf) >= 7 else bytes(buf)


def _interesting(rng: np.random.Generator, old: int, bits: int) -> int:
    top = 2**bits - 1
    choices = [0, 1, top, top // 2 + 1, old + 1, max(0, old - 1), old * 2, int(rng.integers(0, top, dtype=np.uint64))]
    return int(choices[rng.integers(len(choices))]) & top


def mutate(rng: np.random.Generator, buf: bytes) -> tuple[str, bytes]:
    """One random mutation of ``buf``: ``(kind, mutated bytes)``."""
    from vcinr_sci.codec.container import read_raw_header

    raw, header_len = read_raw_header(buf)
    kinds = ["bit flips", "truncation", "extension", "header field", "shape lie", "dtype lie", "length shift",
             "body bytes", "hash bytes"]
    kind = rng.choice(kinds + (["residual bytes"] if raw.residual_len else []))
    b = bytearray(buf)
    if kind == "bit flips":
        for pos in rng.integers(0, len(b) * 8, rng.integers(1, 4)):
            b[pos // 8] ^= 1 << (pos % 8)
        return kind, bytes(b)
    if kind == "truncation":
        return kind, bytes(b[: rng.integers(0, len(b))])
    if kind == "extension":
        return kind, bytes(b) + rng.bytes(int(rng.integers(1, 65)))
    body = b[header_len:]
    if kind == "header field":
        name = rng.choice(list(_FIELDS))
        raw = replace(raw, **{name: _interesting(rng, getattr(raw, name), _FIELDS[name])})
    elif kind == "shape lie":
        dim = int(rng.integers(len(raw.shape)))
        old = raw.shape[dim]
        new = int(rng.choice([old * 2, old + 1, max(0, old - 1), 0, 10**5, 10**6, 2**32, 2**63]))
        raw = replace(raw, shape=raw.shape[:dim] + (new,) + raw.shape[dim + 1 :])
        if rng.random() < 0.3:  # and the count of item dims
            raw = replace(raw, dims=raw.dims & 0x0F | int(rng.integers(16)) << 4)
    elif kind == "dtype lie":
        raw = replace(raw, flags=raw.flags & 0x0F | int(rng.integers(16)) << 4)
    elif kind == "length shift":
        # move bytes between sections: mask_len / payload_len / residual_len disagree with the content
        shift = int(rng.integers(-8, 9)) or 1
        field = rng.choice(["mask_len", "payload_len"] + (["residual_len"] if raw.residual_len else []))
        other = "payload_len" if field != "payload_len" else "mask_len"
        raw = replace(raw, **{field: max(0, getattr(raw, field) + shift), other: max(0, getattr(raw, other) - shift)})
    elif kind in ("body bytes", "residual bytes"):
        start = raw.mask_len + raw.payload_len if kind == "residual bytes" else 0
        end = len(body) if kind == "residual bytes" else raw.mask_len + raw.payload_len
        if end <= start:
            return kind, bytes(b)
        for pos in rng.integers(start, end, rng.integers(1, 5)):
            body[pos] = int(rng.integers(256)) if rng.random() < 0.5 else body[pos] ^ (1 << int(rng.integers(8)))
    elif kind == "hash bytes":
        prefix = bytearray(raw.hash_prefix)
        prefix[int(rng.integers(len(prefix)))] ^= 1 << int(rng.integers(8))
        raw = replace(raw, hash_prefix=bytes(prefix))
    return kind, resign(raw.pack() + body)


# ---------------------------------------------------------------------------- seeds


def tiny_models() -> tuple[Path, Path]:
    """The tiny test models (plain, and with stored item means), trained in-process."""
    sys.path.insert(0, str(REPO / "tests"))
    from _vcinr_tiny import tiny_artifact

    return tiny_artifact(), tiny_artifact(subtract_item_mean=True)


def make_seeds(model: Path, mean_model: Path | None) -> list[Seed]:
    from vcinr_sci.codec.numcodecs import VCINRCodec

    sys.path.insert(0, str(REPO / "tests"))
    from _vcinr_tiny import LEARNED, QUALITY, fields

    x = fields(2).air_temperature.values.astype(np.float32)  # (2, 37, 49)
    holes = x.copy()
    holes[0, :5, :7] = np.nan
    filled = holes.copy()
    filled[1, 10:14, :] = -999.0
    plain = VCINRCodec.for_model(model, QUALITY)
    cases = [
        ("plain", plain, x),
        ("NaN", plain, holes),
        ("NaN and fill", VCINRCodec.for_model(model, QUALITY, fill_value=-999.0), filled),
        ("all NaN", plain, np.full_like(x, np.nan)),
        ("learned coder", VCINRCodec.for_model(model, LEARNED), holes),
        ("bounded", VCINRCodec.for_model(model, QUALITY, max_abs_error=0.05), holes),
        ("bounded, SPERR", VCINRCodec.for_model(model, QUALITY, max_rel_error=0.05), holes),  # the pick: SPERR
    ]
    if mean_model is not None:
        cases.append(("item means", VCINRCodec.for_model(mean_model, QUALITY), holes))
    seeds = []
    for name, codec, data in cases:
        chunk = codec.encode(data)
        codec.decode(chunk)  # warm
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        decoded = codec.decode(chunk)
        seeds.append(Seed(name, codec, chunk, decoded, tracemalloc.get_traced_memory()[1] - base))
    return seeds


# ---------------------------------------------------------------------------- the run


def _decoders(seed: Seed) -> list[tuple[str, Callable[[bytes], np.ndarray]]]:
    """The three ways a chunk reaches the decoder: numcodecs into the chunk's buffer
    (Zarr 2), numcodecs without one, and a real Zarr-3 array reading its one chunk."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    from vcinr_sci.codec.zarr3 import VCINRZarrCodec

    codec, ref = seed.codec, seed.decoded
    fill = np.nan if codec.fill is None else codec.fill
    array = zarr.create_array(zarr.storage.MemoryStore(), shape=ref.shape, chunks=ref.shape, dtype=ref.dtype,
                              serializer=VCINRZarrCodec(codec=codec), compressors=None, fill_value=fill)
    key = array.metadata.encode_chunk_key((0,) * ref.ndim)

    def zarr3(chunk: bytes) -> np.ndarray:
        sync((array.store_path / key).set(default_buffer_prototype().buffer.from_bytes(chunk)))
        return array[...]

    assert np.array_equal(zarr3(seed.chunk), ref, equal_nan=True)
    return [
        ("numcodecs (out buffer)", lambda b: codec.decode(b, out=np.empty_like(ref))),
        ("numcodecs (no buffer)", lambda b: codec.decode(b)),
        ("zarr3 array", zarr3),
    ]


def run(seeds: list[Seed], mutations: int, seed: int = 0, timeout: float = 30.0) -> dict:
    """Decode ``mutations`` mutated chunks; returns counts and the worst cases."""
    from vcinr_sci.errors import ArtifactError, ChunkFormatError, CodecError

    refusals = (ChunkFormatError, CodecError, ArtifactError)
    rng = np.random.default_rng(seed)
    counts: dict[str, Counter] = defaultdict(Counter)
    crashes: list[str] = []
    worst = {"ratio": 0.0, "bytes": 0, "case": ""}
    over_limit, slowest = 0, 0.0
    faces = {s.name: _decoders(s) for s in seeds}

    def alarm(*_):
        raise Hung()

    previous = signal.signal(signal.SIGALRM, alarm)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try:
        for i in range(mutations):
            s = seeds[i % len(seeds)]
            kind, buf = mutate(rng, s.chunk)
            face, decode = faces[s.name][int(rng.integers(3))]
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                out = decode(buf)
                same = out.shape == s.decoded.shape and out.dtype == s.decoded.dtype and np.array_equal(
                    out, s.decoded, equal_nan=True
                )
                outcome = "decoded-same" if same else "decoded-wrong"
            except Hung:
                outcome = "hung"
            except refusals:
                outcome = "refused"
            except Exception as e:  # noqa: BLE001 -- what the fuzzer looks for
                outcome = "crashed"
                if len(crashes) < 10:
                    crashes.append(f"{s.name} / {kind} / {face}: {type(e).__name__}: {str(e)[:160]}")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            slowest = max(slowest, time.perf_counter() - start)
            peak = tracemalloc.get_traced_memory()[1] - base
            ratio = peak / max(1, s.peak)
            over_limit += peak > 2 * s.peak + 2**20
            if ratio > worst["ratio"]:
                worst = {"ratio": ratio, "bytes": peak, "case": f"{s.name} / {kind} / {face} ({outcome})"}
            counts[kind][outcome] += 1
    finally:
        signal.signal(signal.SIGALRM, previous)
    return {
        "mutations": mutations,
        "seconds": time.perf_counter() - t0,
        "counts": {k: dict(v) for k, v in counts.items()},
        "crashes": crashes,
        "worst_alloc": worst,
        "seed_alloc": {s.name: s.peak for s in seeds},
        "over_alloc_limit": over_limit,
        "slowest_decode_s": slowest,
        "rss_growth_bytes": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024,
    }


def table(result: dict) -> str:
    rows = ["| mutation | " + " | ".join(OUTCOMES) + " |", "|---|" + "---|" * len(OUTCOMES)]
    total: Counter = Counter()
    for kind in sorted(result["counts"], key=lambda k: (k not in ACCIDENTS, k)):
        c = result["counts"][kind]
        total.update(c)
        rows.append(f"| {kind}{' (accident)' if kind in ACCIDENTS else ''} | " + " | ".join(str(c.get(o, 0)) for o in OUTCOMES) + " |")
    rows.append("| **all** | " + " | ".join(f"**{total.get(o, 0)}**" for o in OUTCOMES) + " |")
    w = result["worst_alloc"]
    rows += [
        "",
        f"{result['mutations']} mutations in {result['seconds']:.0f} s; slowest decode {result['slowest_decode_s'] * 1e3:.0f} ms.",
        f"Largest allocation of one decode: {w['bytes'] / 2**20:.2f} MiB, {w['ratio']:.2f}x its seed's own decode "
        f"({w['case']}); seeds' decodes {min(result['seed_alloc'].values()) / 2**10:.0f}-"
        f"{max(result['seed_alloc'].values()) / 2**10:.0f} KiB; decodes above twice their seed's + 1 MiB: "
        f"{result['over_alloc_limit']}. Peak RSS growth over the run: {result['rss_growth_bytes'] / 2**20:.1f} MiB.",
    ]
    if result["crashes"]:
        rows += ["", "Crashes:"] + [f"- {c}" for c in result["crashes"]]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mutations", type=int, default=12_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a decode counts as hung")
    parser.add_argument("--model", help="an artifact folder (default: train the tiny test models in-process)")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    model, mean_model = (Path(args.model), None) if args.model else tiny_models()
    tracemalloc.start()
    seeds = make_seeds(model, mean_model)
    result = run(seeds, args.mutations, args.seed, args.timeout)
    tracemalloc.stop()
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    accidents = sum(result["counts"].get(k, {}).get(o, 0) for k in ACCIDENTS for o in OUTCOMES if o != "refused")
    bad = sum(c.get("crashed", 0) + c.get("hung", 0) for c in result["counts"].values())
    return 1 if bad or accidents or result["over_alloc_limit"] else 0


if __name__ == "__main__":
    sys.exit(main())
