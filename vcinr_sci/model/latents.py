"""Latent shards: the latent of every item, as Parquet files a later stage reads.

Layout under one *latents folder* (one per model and encode setting)::

    <output_dir>/<INR fingerprint prefix>-k<inner steps>/
        latents.json              what the shards hold (model hash, plan); written first
        train/shard-00000.parquet one shard per block of ``shard_fields`` fields of the part
        train/shard-00001.parquet
        val/...

A shard is written to a hidden temporary name and renamed into place (``os.replace``,
atomic on one filesystem): the rename is the completion marker. A reader sees only
final names, so a killed writer leaves at most a ``.tmp-*`` file that nothing reads and
the next build removes. One row per item: its key (dataset, variable, part, item index
in the dataset, field, patch, and the item's coordinates as JSON), ``phi`` and the PSNR
of the fit on the normalised scale.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vcinr_sci.atomic import atomic_path, atomic_write_bytes
from vcinr_sci.errors import LatentsError

MANIFEST = "latents.json"
FORMAT_VERSION = 1
TMP_PREFIX = ".tmp-"
_SHARD_RE = re.compile(r"^shard-(\d{5})\.parquet$")


def inr_key(artifact) -> str:
    """Fingerprint of what a latent depends on: the INR's weights, its data, model and
    meta config, and the normalisation. Unlike the artifact hash it does not change when
    coders are added to the artifact, so every artifact of one INR shares its latents."""
    h = hashlib.sha256()
    cfg = artifact.config.to_dict()
    body = {k: cfg[k] for k in ("data", "model", "meta")} | {"normaliser": artifact.normaliser.to_dict()}
    h.update(json.dumps(body, sort_keys=True).encode())
    for name, tensor in sorted(artifact.model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def latents_dir(output_dir: str | os.PathLike, artifact, inner_steps: int) -> Path:
    """The folder of the latents of ``artifact``'s INR at one encode setting."""
    return Path(output_dir) / f"{inr_key(artifact)[:16]}-k{inner_steps}"


def shard_path(root: str | os.PathLike, part: str, index: int) -> Path:
    return Path(root) / part / f"shard-{index:05d}.parquet"


def plan_shards(num_fields: int, shard_fields: int) -> list[tuple[int, int, int]]:
    """``(shard index, start, stop)`` over the positions ``0..num_fields`` of a part."""
    if shard_fields < 1:
        raise ValueError(f"shard_fields must be positive, got {shard_fields}")
    return [(i, s, min(s + shard_fields, num_fields)) for i, s in enumerate(range(0, num_fields, shard_fields))]


# ---------------------------------------------------------------- manifest


def write_manifest(root: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``latents.json`` (atomically), or check that the one there agrees and add
    any new split parts to it; returns the manifest now on disk.

    A folder holds the shards of exactly one plan: a rerun with another model, shard
    size or split would otherwise mix shards of different plans.
    """
    root = Path(root)
    manifest = json.loads(json.dumps({"format_version": FORMAT_VERSION, **manifest}))
    if (root / MANIFEST).exists():
        existing = read_manifest(root)
        same = {k for k in set(existing) | set(manifest) if k != "parts" and existing.get(k) == manifest.get(k)}
        diff = sorted((set(existing) | set(manifest)) - same - {"parts"})
        diff += [f"parts.{p}" for p, n in manifest["parts"].items() if existing["parts"].get(p, n) != n]
        if diff:
            raise LatentsError(
                f"{root} holds latents of another plan (differs in {diff}); use another latents.output_dir or delete it"
            )
        if set(manifest["parts"]) <= set(existing["parts"]):
            return existing
        manifest["parts"] = existing["parts"] | manifest["parts"]
    root.mkdir(parents=True, exist_ok=True)
    path = root / MANIFEST
    atomic_write_bytes(path, json.dumps(manifest, indent=1, sort_keys=True).encode(), temp=_temp(path), fsync=True)
    return manifest


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise LatentsError(f"no latent shards at {root} (no {MANIFEST}): run pipelines.build_latents first")
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise LatentsError(f"{path}: format {manifest.get('format_version')} is not supported")
    return manifest


# ---------------------------------------------------------------- writing


def _temp(path: Path) -> Path:
    """The temporary name a shard or manifest is written under (:func:`remove_temp_files`)."""
    return path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")


def shard_table(
    phi: np.ndarray,
    psnr: np.ndarray,
    *,
    dataset: str,
    variable: str,
    part: str,
    part_item: np.ndarray,
    field: np.ndarray,
    patch: np.ndarray,
    item: np.ndarray,
    keys: list[dict[str, Any]],
) -> pa.Table:
    """One shard's rows as an Arrow table; ``phi`` is (n, D) float32."""
    phi = np.ascontiguousarray(phi, dtype=np.float32)
    if phi.ndim != 2 or not (len(phi) == len(psnr) == len(part_item) == len(field) == len(patch) == len(item) == len(keys)):
        raise ValueError("shard columns must all have one entry per item and phi must be (n, D)")
    n, d = phi.shape
    return pa.table(
        {
            "dataset": pa.array([dataset] * n, pa.string()),
            "variable": pa.array([variable] * n, pa.string()),
            "part": pa.array([part] * n, pa.string()),
            "item": pa.array(np.asarray(item, np.int64)),  # index over all items of the dataset
            "part_item": pa.array(np.asarray(part_item, np.int64)),  # index within the part
            "field": pa.array(np.asarray(field, np.int64)),
            "patch": pa.array(np.asarray(patch, np.int32)),
            "key": pa.array([json.dumps(k, sort_keys=True) for k in keys], pa.string()),
            "phi": pa.FixedSizeListArray.from_arrays(pa.array(phi.reshape(-1)), d),
            "psnr": pa.array(np.asarray(psnr, np.float64)),
        }
    )


def write_shard(path: str | os.PathLike, table: pa.Table) -> Path:
    """Write ``table`` to ``path`` atomically: a temporary file, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, temp=_temp(path)) as tmp:
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    return path


def remove_temp_files(root: str | os.PathLike) -> int:
    """Delete the temporary files of killed writers; returns how many. Call only while
    no build writes to ``root``."""
    count = 0
    for tmp in Path(root).rglob(f"{TMP_PREFIX}*"):
        tmp.unlink(missing_ok=True)
        count += 1
    return count


# ---------------------------------------------------------------- reading


def complete_shards(root: str | os.PathLike, part: str) -> dict[int, Path]:
    """The shards of ``part`` that are complete: final names whose Parquet footer reads
    (a final name only ever appears by rename, but a file copied or truncated by other
    means is not trusted)."""
    folder = Path(root) / part
    out = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        m = _SHARD_RE.match(path.name)
        if not m:
            continue
        try:
            pq.read_metadata(path)
        except Exception:  # noqa: BLE001 - any unreadable file is simply not complete
            continue
        out[int(m.group(1))] = path
    return out


def missing_shards(root: str | os.PathLike, part: str, num_fields: int, shard_fields: int) -> list[tuple[int, int, int]]:
    """The planned shards of ``part`` not yet complete."""
    done = complete_shards(root, part)
    return [s for s in plan_shards(num_fields, shard_fields) if s[0] not in done]


@dataclass
class LatentTable:
    """All latents of one part, ordered by ``part_item`` (the part's item order)."""

    phi: np.ndarray  # (n, D) float32
    psnr: np.ndarray  # (n,)
    part_item: np.ndarray
    item: np.ndarray
    field: np.ndarray
    patch: np.ndarray
    keys: list[str]
    dataset: str
    variable: str

    def __len__(self) -> int:
        return len(self.phi)


def read_shards(root: str | os.PathLike, part: str, require_complete: bool = True) -> LatentTable:
    """Read the complete shards of ``part`` into arrays.

    With ``require_complete`` (the default) every planned shard of the manifest must be
    there and cover the part's items exactly once; a later stage must not train or
    measure on a silent subset.
    """
    root = Path(root)
    manifest = read_manifest(root)
    if part not in manifest["parts"]:
        raise LatentsError(f"{root} has no part {part!r}; it has {sorted(manifest['parts'])}")
    done = complete_shards(root, part)
    num_fields = manifest["parts"][part]
    plan = plan_shards(num_fields, manifest["shard_fields"])
    if require_complete:
        missing = [i for i, _, _ in plan if i not in done]
        if missing:
            raise LatentsError(f"{root}/{part}: shards {missing} of {len(plan)} are missing; rerun build_latents")
    if not done:
        raise LatentsError(f"{root}/{part}: no complete shard")
    table = pa.concat_tables([pq.read_table(done[i]) for i in sorted(done)])
    order = np.argsort(table.column("part_item").to_numpy(), kind="stable")
    col = {name: table.column(name) for name in table.column_names}
    part_item = col["part_item"].to_numpy()[order]
    if require_complete:
        expected = num_fields * manifest["num_patches"]
        if not np.array_equal(part_item, np.arange(expected)):
            raise LatentsError(f"{root}/{part}: shards hold {len(part_item)} items, expected items 0..{expected - 1}")
    dim = manifest["latent_dim"]
    keys = col["key"].to_pylist()
    phi = col["phi"].combine_chunks().flatten().to_numpy().reshape(-1, dim)[order]
    return LatentTable(
        phi=np.ascontiguousarray(phi, dtype=np.float32),
        psnr=col["psnr"].to_numpy()[order],
        part_item=part_item,
        item=col["item"].to_numpy()[order],
        field=col["field"].to_numpy()[order],
        patch=col["patch"].to_numpy()[order],
        keys=[keys[i] for i in order],
        dataset=manifest["dataset"],
        variable=manifest["variable"],
    )
