"""Fuzz the vcinr decoder with mutated chunks, each decoded in a child process, and print
what became of them.

    python examples/fuzz_decoder.py 10000            # the README run
    python examples/fuzz_decoder.py 300 --seed 1 --json out.json

**Seeds** are the golden chunks of tests/golden (formats 1, 2 and 3; INR and linear
models; uniform, learned-rANS and coefficient coders; NaN masks, a fill value beside NaN,
stored item means; bounded chunks with rANS- and SPERR-coded corrections), an all-masked
chunk, and the issue's two crafted chunks: a linear-model chunk claiming 256 fields whose
coefficient string is ``00`` + eight ``0xff`` bytes, and a bounded chunk whose rANS
correction has the histogram ``[1, 65535]`` and an 8-byte symbol string.

**Mutations** are accidents (bit flips, truncation, extension: the CRCs must refuse every
one) or structure-aware edits whose CRCs are recomputed, so they reach the decoders:
header fields and varints at their edges, shapes and field counts at and past the cap,
dtype codes, section lengths, mask/payload/residual bytes, the latent string replaced by
escape runs (runs of ``0xff`` bytes and ``0xffffffff`` words, its own CRC recomputed),
the correction's histogram (``[1, 65535]`` and other edge frequencies), its symbol
string and its header (counts, step, method, offset).

**Decoding** happens in a pool of worker processes (forked from a server that has
imported the codec once); a worker that dies is replaced, so a crash (a signal death) is
counted, not fatal, and a decode that takes longer than ``--timeout`` seconds is a hang
(its worker is killed). Each input is decoded twice by its worker: two different results
are a *nondeterministic* decode (reading memory it does not own). Each decode's peak RSS
growth (``VmHWM`` reset before it, less the RSS before it: torch and C allocations
count) is checked against ``4 x output + 64 MiB``.

Exit status 1 on any crash, hang, nondeterministic decode, error outside the project's
error classes, accident that decoded, or decode over the memory bound.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import struct
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vcinr_sci.model.artifact import MODEL_PATH_ENV

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
ACCIDENTS = ("bit flips", "truncation", "extension")
REFUSALS = ("ChunkFormatError", "CodecError", "ArtifactError", "BoundError")  # the project's error classes
MEMORY_FACTOR, MEMORY_CONSTANT = 4, 64 * 2**20
# header fields a "header field" mutation edits -> their width in bits (varints: 64)
_FIELDS = {"flags": 8, "dims": 8, "inner_steps": 64, "mask_len": 64, "payload_len": 64, "residual_len": 64}
_LEGACY_FIXED = struct.Struct("<5sBHI32sHBBBIQQQI")


@dataclass(frozen=True)
class Seed:
    name: str
    chunk: bytes
    config: dict  # numcodecs config (model_path included)
    out_shape: tuple[int, ...]
    out_dtype: str
    latents_at: int  # where the latent string starts in the payload (-1: no latents)
    latent_crc: bool  # the latent string starts with a CRC-32 of the rest (learned coder)


# ---------------------------------------------------------------------------- chunk surgery


def seal(buf: bytes | bytearray) -> bytes:
    """Recompute every CRC of a (possibly edited) chunk of any format."""
    from vcinr_sci.codec.container import LEGACY_MAGIC
    from vcinr_sci.codec.container import seal as seal3

    b = bytearray(buf)
    if not b.startswith(LEGACY_MAGIC):
        return seal3(b) if len(b) >= 7 else bytes(b)
    if len(b) < _LEGACY_FIXED.size:
        return bytes(b)
    fields = _LEGACY_FIXED.unpack_from(b)
    version, header_len, mask_len, payload_len = fields[1], fields[2], fields[11], fields[12]
    body_end = min(len(b), header_len + mask_len + payload_len)
    struct.pack_into("<I", b, 77, zlib.crc32(bytes(b[header_len:body_end])))
    if version == 2 and header_len <= len(b):
        struct.pack_into("<I", b, header_len - 4, zlib.crc32(bytes(b[body_end:])))
    if header_len <= len(b):
        struct.pack_into("<I", b, 8, zlib.crc32(bytes(b[12:header_len]), zlib.crc32(bytes(b[:8]))))
    return bytes(b)


def _edge(rng: np.random.Generator, old: int, bits: int) -> int:
    """A value at an edge: of the field's width, of varint groups, or next to ``old``."""
    top = 2**bits - 1
    choices = [0, 1, 127, 128, 2**14 - 1, 2**14, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, top, old + 1,
               max(0, old - 1), old * 2, int(rng.integers(0, top, dtype=np.uint64))]
    return int(choices[rng.integers(len(choices))]) & top


def _escape_run(rng: np.random.Generator, n: int) -> bytes:
    """``n`` bytes of 0xff runs and 0xffffffff words among random bytes (rANS escapes)."""
    out = bytearray(rng.bytes(n))
    for _ in range(int(rng.integers(1, 4))):
        start = int(rng.integers(0, max(1, n)))
        out[start : start + int(rng.integers(1, n + 1))] = b"\xff" * len(out[start : start + n])
    return bytes(out[:n]) if rng.random() < 0.5 else b"\xff" * n


def _sections(buf: bytes):
    """A format-3 chunk's raw header, header length, mask, payload and residual bytes."""
    from vcinr_sci.codec.container import read_raw_header

    raw, end = read_raw_header(buf)
    body = buf[end:]
    mask, payload = body[: raw.mask_len], body[raw.mask_len : raw.mask_len + raw.payload_len]
    return raw, mask, payload, body[raw.mask_len + raw.payload_len :]


def _pack(raw, mask: bytes, payload: bytes, residual: bytes):
    from vcinr_sci.codec.container import _FLAG_RESIDUAL

    flags = raw.flags | _FLAG_RESIDUAL if residual else raw.flags & ~_FLAG_RESIDUAL
    raw = replace(raw, flags=flags, mask_len=len(mask), payload_len=len(payload), residual_len=len(residual))
    return seal(raw.pack() + mask + payload + residual)


def _latent_string(rng: np.random.Generator, seed: Seed, payload: bytes) -> bytes:
    """The payload with its latent string replaced by escape runs (whole 32-bit words
    mostly, its CRC recomputed for the learned coder)."""
    head, string = payload[: seed.latents_at], payload[seed.latents_at :]
    keep = (1 if not seed.latent_crc else 0) if rng.random() < 0.8 else 0  # the linear coder's mode byte
    n = int(rng.choice([4, 8, 8, 12, 16, 64, max(4, len(string) - keep)]))
    n += int(rng.integers(0, 4)) if rng.random() < 0.1 else 0
    body = _escape_run(rng, n)
    if seed.latent_crc:
        return head + zlib.crc32(body).to_bytes(4, "little") + body
    return head + string[:keep] + body


def _residual(rng: np.random.Generator, residual: bytes) -> bytes:
    """The correction's histogram, symbol string or header edited (the section stays parseable)."""
    from numcodecs import Zstd

    from vcinr_sci.coding.residual_format import HEAD, LEN

    if len(residual) < HEAD.size:
        return residual
    head = list(HEAD.unpack_from(residual))
    parts, pos = [], HEAD.size
    for _ in range(4):
        (n,) = LEN.unpack_from(residual, pos)
        parts.append(residual[pos + LEN.size : pos + LEN.size + n])
        pos += LEN.size + n
    what = rng.choice(["histogram", "string", "head"])
    if what == "histogram":
        freqs = [[1, 65535], [65535, 1], [1] * 65536, [32768, 32768], [0, 65536], [65536 - 4095] + [1] * 4095]
        f = freqs[int(rng.integers(len(freqs)))]
        parts[0] = Zstd(level=1).encode(np.asarray(f, "<u4").astype("<u2"))  # 65536 wraps to 0
        parts[1] = _escape_run(rng, int(rng.choice([4, 8, 8, 16])))
        head[8] = 0 if head[8] == 2 else head[8]  # rANS, not SPERR
    elif what == "string":
        parts[1] = _escape_run(rng, int(rng.choice([4, 8, 17, 25, max(4, len(parts[1]))])))
    else:
        i = int(rng.choice([6, 7, 8, 9]))  # step, n, method, offset
        head[i] = [float(rng.choice([0.0, 1e-300, 1e300, -1.0, float("nan")])),
                   _edge(rng, head[7], 64), int(rng.integers(0, 256)),
                   int(rng.choice([-(2**31), 2**31 - 1, -1, 1, 2**24]))][[6, 7, 8, 9].index(i)]
    return HEAD.pack(*head) + b"".join(LEN.pack(len(p)) + p for p in parts)


def mutate(rng: np.random.Generator, seed: Seed) -> tuple[str, bytes]:
    """One random mutation of the seed's chunk: ``(kind, bytes)``."""
    from vcinr_sci.codec.container import LEGACY_MAGIC, max_chunk_values

    buf = seed.chunk
    legacy = buf.startswith(LEGACY_MAGIC)
    kinds = list(ACCIDENTS) + ["body bytes"]
    if not legacy:
        raw, mask, payload, residual = _sections(buf)
        kinds += ["header field", "shape lie", "dtype lie", "length shift", "hash bytes"]
        kinds += ["escape run", "escape run and fields"] if seed.latents_at >= 0 else []
        kinds += ["residual"] * 2 if residual else []
    kind = str(rng.choice(kinds))
    b = bytearray(buf)
    if kind == "bit flips":
        # distinct bits: a bit flipped twice is no damage (it "decoded" as an accident)
        for pos in rng.choice(len(b) * 8, size=min(len(b) * 8, int(rng.integers(1, 4))), replace=False):
            b[pos // 8] ^= 1 << (pos % 8)
        return kind, bytes(b)
    if kind == "truncation":
        return kind, bytes(b[: rng.integers(0, len(b))])
    if kind == "extension":
        return kind, bytes(b) + rng.bytes(int(rng.integers(1, 65)))
    if kind == "body bytes":  # any byte after the fixed header, CRCs recomputed
        start = _LEGACY_FIXED.size if legacy else 17
        for pos in rng.integers(start, len(b), rng.integers(1, 5)):
            b[pos] = int(rng.integers(256)) if rng.random() < 0.5 else b[pos] ^ (1 << int(rng.integers(8)))
        return kind, seal(b)
    if kind == "header field":
        name = str(rng.choice(list(_FIELDS)))
        return kind, seal(replace(raw, **{name: _edge(rng, getattr(raw, name), _FIELDS[name])}).pack() + buf[len(raw.pack()):])
    if kind in ("shape lie", "escape run and fields"):
        grid = int(np.prod(raw.shape[1:]))
        cap = max_chunk_values() // max(1, grid)
        fields = int(rng.choice([raw.shape[0] + 1, 64, 240, 256, 1000, cap, cap + 1, 2**32, 2**63]))
        if kind == "shape lie" and rng.random() < 0.3:
            dim = int(rng.integers(len(raw.shape)))
            raw = replace(raw, shape=raw.shape[:dim] + (_edge(rng, raw.shape[dim], 64),) + raw.shape[dim + 1 :])
        else:
            raw = replace(raw, shape=(fields, *raw.shape[1:]))
        if kind == "escape run and fields":
            payload = _latent_string(rng, seed, payload)
        return kind, _pack(raw, mask, payload, residual)
    if kind == "dtype lie":
        return kind, _pack(replace(raw, flags=raw.flags & 0x0F | int(rng.integers(16)) << 4), mask, payload, residual)
    if kind == "length shift":  # bytes move between sections: the lengths disagree with the content
        shift = int(rng.integers(-8, 9)) or 1
        field = str(rng.choice(["mask_len", "payload_len"] + (["residual_len"] if raw.residual_len else [])))
        other = "payload_len" if field != "payload_len" else "mask_len"
        raw = replace(raw, **{field: max(0, getattr(raw, field) + shift), other: max(0, getattr(raw, other) - shift)})
        return kind, seal(raw.pack() + mask + payload + residual)
    if kind == "hash bytes":
        prefix = bytearray(raw.hash_prefix)
        prefix[int(rng.integers(len(prefix)))] ^= 1 << int(rng.integers(8))
        return kind, _pack(replace(raw, hash_prefix=bytes(prefix)), mask, payload, residual)
    if kind == "escape run":
        return kind, _pack(raw, mask, _latent_string(rng, seed, payload), residual)
    return kind, _pack(raw, mask, payload, _residual(rng, residual))  # "residual"


# ---------------------------------------------------------------------------- seeds


def _codec_config(name: str) -> dict:
    case = json.loads((GOLDEN / "cases.json").read_text())[name]
    return case["config"] | {"model_path": str(GOLDEN / "models" / case["model"])}


def _latents_at(chunk: bytes, config: dict) -> tuple[int, bool]:
    """Where a chunk's latent string starts in its payload, and whether it has a CRC."""
    from vcinr_sci.codec.core import decode_latents

    lat = decode_latents(chunk, [config["model_path"]], model_hash=config["model_hash"])
    if not len(lat.active):
        return -1, False
    coder = lat.model.coder(lat.header.quality)
    kind = type(coder).__name__
    if kind == "UniformQuantiser":
        return -1, False
    from vcinr_sci.codec.container import decode_container

    payload = decode_container(chunk).payload
    pos = 2 if payload[0] & 2 else 1  # the flags byte, then a step exponent
    pos += 4 + struct.unpack_from("<I", payload, pos)[0] if payload[0] & 1 else 0
    pos += 2 * len(lat.active) if lat.model.subtracts_item_mean else 0
    return pos, kind == "LatentCoder"


def _seed(name: str, chunk: bytes, config: dict) -> Seed:
    import numcodecs

    out = numcodecs.get_codec(config).decode(chunk)
    at, crc = _latents_at(chunk, config)
    return Seed(name, chunk, config, out.shape, out.dtype.str, at, crc)


def crafted_linear(fields: int = 256) -> tuple[bytes, dict]:
    """The issue's first string: a CRC-valid linear-model chunk claiming ``fields``
    fields whose payload is ``00 00`` + eight ``0xff`` bytes (payload flags, the
    coefficient coder's mode byte, an 8-byte rANS string)."""
    config = _codec_config("v3_linear")
    raw, mask, _, _ = _sections((GOLDEN / "v3_linear.vcinr").read_bytes())
    raw = replace(raw, shape=(fields, *raw.shape[1:]))
    return _pack(raw, mask, b"\x00\x00" + b"\xff" * 8, b""), config


def crafted_histogram() -> tuple[bytes, dict]:
    """The issue's second string: a bounded chunk whose rANS correction has the histogram
    ``[1, 65535]`` and an 8-byte symbol string (no outliers)."""
    from numcodecs import Zstd

    from vcinr_sci.coding.residual_format import HEAD, LEN, PLAIN

    name = "v3_linear_abs_bound_mask"
    raw, mask, payload, residual = _sections((GOLDEN / f"{name}.vcinr").read_bytes())
    head = list(HEAD.unpack_from(residual))
    head[6], head[8], head[9] = head[6] or 0.1, PLAIN, 0  # a quantised, plainly coded correction
    parts = [Zstd(level=1).encode(np.asarray([1, 65535], "<u2")), b"\xff" * 8, b"", b""]
    section = HEAD.pack(*head) + b"".join(LEN.pack(len(p)) + p for p in parts)
    return _pack(raw, mask, payload, section), _codec_config(name)


def all_masked() -> tuple[bytes, dict]:
    """A format-3 chunk whose every point is NaN (a header and nothing else)."""
    config = _codec_config("v3_uniform")
    raw, _, _, _ = _sections((GOLDEN / "v3_uniform.vcinr").read_bytes())
    from vcinr_sci.codec.container import FLAG_ALL_MASKED

    return _pack(replace(raw, flags=raw.flags | FLAG_ALL_MASKED), b"", b"", b""), config


def make_seeds(crafted: bool = True) -> list[Seed]:
    """Every golden chunk, an all-masked chunk and (``crafted``) the issue's two strings.
    Their models are found where a user would put them, on ``$VCINR_MODEL_PATH`` (a
    store's model_path is not followed by default); the decoding workers inherit it."""
    os.environ[MODEL_PATH_ENV] = os.pathsep.join([str(GOLDEN / "models"), os.environ.get(MODEL_PATH_ENV, "")])
    seeds = [_seed(name, (GOLDEN / f"{name}.vcinr").read_bytes(), _codec_config(name))
             for name in sorted(json.loads((GOLDEN / "cases.json").read_text()))]
    seeds.append(_seed("all masked", *all_masked()))
    if crafted:  # they must not decode: seeds by their bytes alone, laid out as the golden ones
        named = {s.name: s for s in seeds}
        chunk, config = crafted_linear()
        ref = named["v3_linear"]
        seeds.append(replace(ref, name="crafted linear", chunk=chunk, out_shape=(256, *ref.out_shape[1:])))
        chunk, config = crafted_histogram()
        seeds.append(replace(named["v3_linear_abs_bound_mask"], name="crafted histogram", chunk=chunk))
    return seeds


# ---------------------------------------------------------------------------- workers


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _worker(conn) -> None:
    """Decode what arrives, twice, and answer ``(outcome, digests, out_bytes, growth)``."""
    import ctypes
    import gc

    import numcodecs
    import torch

    torch.set_num_threads(1)
    codecs: dict[str, object] = {}
    libc = ctypes.CDLL("libc.so.6")
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        config, chunk, out_shape, out_dtype = msg
        key = json.dumps(config, sort_keys=True)
        codec = codecs.get(key) or codecs.setdefault(key, numcodecs.get_codec(config))
        gc.collect()
        gc.freeze()  # what survives (imports, models) is skipped by later collections: 0.5 s each otherwise
        libc.malloc_trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        before = _status("VmRSS")
        digests, out_bytes, outcome, out = [], 0, "decoded", None
        for _ in range(2):
            try:
                out = codec.decode(chunk, out=np.empty(out_shape, out_dtype) if out_shape else None)
                out_bytes = max(out_bytes, out.nbytes)
                digests.append(hashlib.sha256(out.tobytes() + str((out.shape, out.dtype)).encode()).hexdigest())
            except Exception as e:  # noqa: BLE001 -- what the fuzzer looks for
                outcome = type(e).__name__
                digests.append(outcome)
            out = None
        conn.send((outcome, digests, out_bytes, max(0, _status("VmHWM") - before)))


class Pool:
    """Worker processes forked from a server that imported the codec once; one that
    dies or hangs is replaced."""

    def __init__(self, workers: int):
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(["numpy", "torch", "numcodecs", "vcinr_sci.codec.numcodecs"])
        self.slots = [self._start() for _ in range(workers)]

    def _start(self):
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker, args=(child,), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def run(self, i: int, msg, timeout: float):
        """Send ``msg`` to worker ``i``; its answer, or ``("crash", signal)`` / ``("hang",)``."""
        proc, conn = self.slots[i]
        try:
            conn.send(msg)
            if conn.poll(timeout):
                return conn.recv()
            proc.kill()
            proc.join()
            result = ("hang",)
        except (EOFError, BrokenPipeError, ConnectionResetError):
            proc.join()
            result = ("crash", -proc.exitcode if proc.exitcode else 0)
        conn.close()
        self.slots[i] = self._start()
        return result

    def close(self) -> None:
        for proc, conn in self.slots:
            conn.close()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()


# ---------------------------------------------------------------------------- the run


def run(seeds: list[Seed], inputs: int, seed: int = 0, timeout: float = 30.0, workers: int = 1,
        verbose: bool = False, save: Path | None = None) -> dict:
    """Decode ``inputs`` mutated chunks (every tenth a seed as it is); returns the counts.
    With ``save``, each failing input's bytes go there as ``<outcome>-<i>.vcinr``."""
    rng = np.random.default_rng(seed)
    pool = Pool(workers)
    counts: Counter = Counter()
    by_kind: dict[str, Counter] = {}
    examples: dict[str, list[str]] = {}
    peak, over_memory = 0, 0
    t0 = time.perf_counter()
    try:
        for i in range(inputs):
            s = seeds[i % len(seeds)]
            kind, buf = ("seed", s.chunk) if i < len(seeds) or rng.random() < 0.05 else mutate(rng, s)
            out_shape = s.out_shape if rng.random() < 0.5 else None  # numcodecs with and without a buffer
            answer = pool.run(i % workers, (s.config, buf, out_shape, s.out_dtype), timeout)
            if answer[0] in ("crash", "hang"):
                outcome = "crashed" if answer[0] == "crash" else "hung"
            else:
                error, digests, out_bytes, growth = answer
                peak = max(peak, growth)
                if growth > MEMORY_FACTOR * out_bytes + MEMORY_CONSTANT:
                    over_memory += 1
                    examples.setdefault("over memory", []).append(f"{s.name} / {kind}: {growth / 2**20:.0f} MiB")
                if digests[0] != digests[1]:
                    outcome = "nondeterministic"
                elif error == "decoded":
                    outcome = "decoded" if kind not in ACCIDENTS else "accident decoded"
                else:
                    outcome = f"error: {error}" if error in REFUSALS else f"unexpected: {error}"
            counts[outcome] += 1
            by_kind.setdefault(kind, Counter())[outcome] += 1
            if outcome not in ("decoded",) and not outcome.startswith("error: "):
                examples.setdefault(outcome, []).append(f"{s.name} / {kind}: {buf[:48].hex()}")
                if save is not None:
                    save.mkdir(parents=True, exist_ok=True)
                    (save / f"{outcome.replace(' ', '-')}-{i}.vcinr").write_bytes(buf)
            if verbose and (i + 1) % 500 == 0:
                print(f"{i + 1} inputs, {dict(counts)}", file=sys.stderr, flush=True)
    finally:
        pool.close()
    return {"inputs": inputs, "seconds": time.perf_counter() - t0, "counts": dict(counts),
            "by_kind": {k: dict(v) for k, v in by_kind.items()}, "peak_rss_growth": peak,
            "over_memory": over_memory, "examples": {k: v[:5] for k, v in examples.items()},
            "seeds": [s.name for s in seeds]}


def failures(result: dict) -> int:
    """Inputs that make the run fail (see the module doc)."""
    bad = ("crashed", "hung", "nondeterministic", "accident decoded")
    c = result["counts"]
    return sum(c.get(k, 0) for k in bad) + sum(v for k, v in c.items() if k.startswith("unexpected")) + \
        result["over_memory"]


def table(result: dict) -> str:
    c = result["counts"]
    errors = {k[len("error: "):]: v for k, v in c.items() if k.startswith("error: ")}
    unexpected = {k[len("unexpected: "):]: v for k, v in c.items() if k.startswith("unexpected: ")}
    rows = [
        "| | count |", "|---|---|",
        f"| inputs | {result['inputs']} |",
        f"| crashes (signal deaths) | {c.get('crashed', 0)} |",
        f"| hangs | {c.get('hung', 0)} |",
        *(f"| error: {k} | {v} |" for k, v in sorted(errors.items())),
        *(f"| unexpected error: {k} | {v} |" for k, v in sorted(unexpected.items())),
        f"| clean decodes | {c.get('decoded', 0)} |",
        f"| accidents that decoded | {c.get('accident decoded', 0)} |",
        f"| nondeterministic | {c.get('nondeterministic', 0)} |",
        f"| peak child RSS growth of one decode | {result['peak_rss_growth'] / 2**20:.1f} MiB |",
        f"| over {MEMORY_FACTOR} x output + {MEMORY_CONSTANT >> 20} MiB | {result['over_memory']} |",
        "", f"{len(result['seeds'])} seeds; {result['seconds']:.0f} s.",
    ]
    for what, cases in result["examples"].items():
        rows += ["", f"{what}:"] + [f"- {e}" for e in cases]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", type=int, nargs="?", default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a decode counts as hung")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("--save", type=Path, metavar="DIR", help="write each failing input's bytes here")
    parser.add_argument("--only", nargs="+", metavar="TEXT", help="only the seeds whose names hold one of these, e.g. hybrid")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    seeds = [s for s in make_seeds() if not args.only or any(t in s.name for t in args.only)]
    if not seeds:
        parser.error(f"no seed's name holds any of {args.only}")
    result = run(seeds, args.inputs, args.seed, args.timeout, args.workers, verbose=True, save=args.save)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 1 if failures(result) else 0


if __name__ == "__main__":
    sys.exit(main())
