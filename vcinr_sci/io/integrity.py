"""Per-chunk SHA-256 digests of a Zarr store: integrity against tampering, on request.

The CRCs inside each vcinr chunk catch accidents (a flipped bit, a cut-off file), not a
forger, who recomputes them: a crafted chunk decodes to whatever it claims, and a forged
error-bound correction breaks the bound silently. Archives guard against that with
content hashes kept at write time; this module does so for Zarr stores.

:func:`record_digests` (called by ``ds.vcinr.to_zarr`` and ``vcinr compress`` when they
finish a store) writes the SHA-256 of every stored chunk (its bytes as stored, whatever
the codec) of every array of the root group into the group ``_vcinr_digests``: one uint8
array per array, shaped ``(*chunk grid, 32)`` (32 bytes a chunk, in Zarr like the data,
so a large array's record stays out of the metadata), all zero for a chunk not written.
:func:`verify_digests` (``vcinr verify STORE``) recomputes them and names each chunk
whose bytes differ.

The digest of the record itself (:attr:`DigestReport.root`, also stored as the group
attribute ``vcinr_digest_root``) is what to keep apart from the store (a catalogue entry,
a signed release note): a forger who rewrites chunks and the record alike changes it, so
``vcinr verify STORE --expect ROOT`` detects that too. Array metadata and attributes are
not covered (the model a chunk names is verified by its own content hash).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from vcinr_sci.errors import VCINRError
from vcinr_sci.zarr_compat import require_zarr3

DIGESTS_GROUP = "_vcinr_digests"
ROOT_ATTR = "vcinr_digest_root"
_EMPTY = bytes(32)  # the digest slot of a chunk that was never written
_BATCH = 256  # chunks read concurrently


@dataclass
class DigestReport:
    """What :func:`verify_digests` found. ``mismatched``: per array, the chunk grid
    positions whose stored bytes differ from the record (written, rewritten or removed);
    ``unrecorded``: arrays without a record; ``missing``: recorded arrays no longer there."""

    root: str
    checked: int = 0
    mismatched: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    unrecorded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    expected_root: str | None = None

    @property
    def ok(self) -> bool:
        root_ok = self.expected_root is None or self.expected_root == self.root
        return root_ok and not (self.mismatched or self.unrecorded or self.missing)


def chunk_digests(array: zarr.Array) -> np.ndarray:
    """SHA-256 of each stored chunk of ``array``, ``(*chunk grid, 32)`` uint8 (zero for
    a chunk not written)."""
    from zarr.core.buffer import default_buffer_prototype  # zarr 3 only
    from zarr.core.sync import sync

    grid = tuple(array.cdata_shape)
    out = np.zeros((*grid, 32), np.uint8)
    positions = list(np.ndindex(grid))

    async def one(pos: tuple[int, ...]) -> None:
        key = array.metadata.encode_chunk_key(pos)
        buf = await (array.store_path / key).get(default_buffer_prototype())
        if buf is not None:
            out[pos] = np.frombuffer(hashlib.sha256(buf.to_bytes()).digest(), np.uint8)

    async def every() -> None:
        for start in range(0, len(positions), _BATCH):
            await asyncio.gather(*(one(p) for p in positions[start : start + _BATCH]))

    sync(every())
    return out


def _root(record: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(record):
        h.update(json.dumps([name, list(record[name].shape)]).encode())
        h.update(np.ascontiguousarray(record[name]).tobytes())
    return h.hexdigest()


def _arrays(group: zarr.Group) -> dict[str, zarr.Array]:
    return {name: arr for name, arr in group.arrays()}


def record_digests(store: Any) -> str:
    """Record the digest of every chunk of every array of ``store``'s root group (see
    the module doc); returns the record's root digest."""
    require_zarr3("recording chunk digests")
    group = zarr.open_group(store, mode="r+")
    record = {name: chunk_digests(arr) for name, arr in _arrays(group).items()}
    digests = group.require_group(DIGESTS_GROUP)
    for name in [n for n, _ in digests.arrays() if n not in record]:
        del digests[name]
    for name, values in record.items():
        digests.create_array(name, shape=values.shape, dtype=np.uint8, overwrite=True)[...] = values
    root = _root(record)
    digests.attrs[ROOT_ATTR] = root
    return root


def verify_digests(store: Any, expected_root: str | None = None) -> DigestReport:
    """Compare every chunk of ``store`` with the recorded digests (and the record with
    ``expected_root``, the root digest kept apart from the store, when given)."""
    require_zarr3("vcinr verify")
    group = zarr.open_group(store, mode="r")
    arrays = _arrays(group)
    recorded = {n: a[...] for n, a in group[DIGESTS_GROUP].arrays()} if DIGESTS_GROUP in group else {}
    report = DigestReport(_root(recorded), expected_root=expected_root)
    report.unrecorded = sorted(set(arrays) - set(recorded))
    report.missing = sorted(set(recorded) - set(arrays))
    for name in sorted(set(arrays) & set(recorded)):
        now, then = chunk_digests(arrays[name]), recorded[name]
        report.checked += now[..., 0].size
        if now.shape != then.shape:  # resized: every chunk position counts as changed
            report.mismatched[name] = list(np.ndindex(now.shape[:-1]))
            continue
        bad = np.argwhere((now != then).any(axis=-1))
        if len(bad):
            report.mismatched[name] = [tuple(int(i) for i in pos) for pos in bad]
    return report


def main(argv: list[str] | None = None) -> int:
    """``vcinr verify STORE [--expect ROOT] [--json]``: exit status 0 when every chunk
    matches its recorded digest (and the record matches ROOT), else 1 (also when the
    store cannot be opened: one line on stderr)."""
    parser = argparse.ArgumentParser(
        prog="vcinr verify", description="check a store's chunks against the SHA-256 digests recorded when it was written"
    )
    parser.add_argument("store")
    parser.add_argument("--expect", metavar="ROOT", help="the root digest kept apart from the store, to check the record too")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = verify_digests(args.store, args.expect)
    except (VCINRError, FileNotFoundError, zarr.errors.BaseZarrError) as e:  # e.g. a bad codec config
        print(f"vcinr verify: {args.store}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**report.__dict__, "ok": report.ok}, default=list))
        return 0 if report.ok else 1
    print(f"{args.store}: {report.checked} chunks checked; record root digest {report.root}")
    if args.expect and args.expect != report.root:
        print(f"the record does not match the expected root digest {args.expect}: it was rewritten")
    for name, positions in report.mismatched.items():
        shown = ", ".join(str(p) for p in positions[:20]) + (" ..." if len(positions) > 20 else "")
        print(f"{name}: {len(positions)} chunk(s) differ from the record: {shown}")
    for label, names in (("no record (written after it?)", report.unrecorded), ("recorded but gone", report.missing)):
        if names:
            print(f"arrays with {label}: {names}")
    print("OK" if report.ok else "MISMATCH")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
