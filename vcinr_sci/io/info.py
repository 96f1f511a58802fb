"""``vcinr info STORE``: what a Zarr store holds and how its vcinr variables were coded.

Reads metadata and chunk sizes only (no model is loaded, nothing is decoded): per array
its shape, chunks, dtype, codec config (model hash, quality, inner steps, grid), the
point-wise error bound it guarantees (or that it guarantees none), raw and stored bytes,
bits per value, and the ``vcinr_*`` attributes written at compression (measured
PSNR/RMSE/max error); and the models stored inside the store.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import numpy as np
import zarr

from vcinr_sci import metrics
from vcinr_sci.codec.numcodecs import codec_of
from vcinr_sci.errors import VCINRError
from vcinr_sci.io.store import chunk_bytes_stored
from vcinr_sci.model.embedded import HASH_ATTR, MODELS_GROUP, stored_models
from vcinr_sci.zarr_compat import require_zarr3


def _grid_summary(grid: dict[str, Any]) -> dict[str, Any]:
    if grid.get("type") == "spherical":
        lat, lon = grid["lat"], grid["lon"]
        return {"type": "spherical", "shape": [len(lat), len(lon)], "lat": [lat[0], lat[-1]], "lon": [lon[0], lon[-1]]}
    if grid.get("type") == "regular":
        return {"type": "regular", "shape": [len(a) for a in grid["axes"]]}
    return {"type": grid.get("type")}


def store_info(store: Any) -> dict[str, Any]:
    """A JSON-able description of ``store``'s arrays (see the module doc). Needs zarr 3."""
    require_zarr3("vcinr info")
    group = zarr.open_group(store, mode="r")
    arrays = []
    for name, arr in sorted(group.arrays(), key=lambda kv: kv[0]):
        stored = chunk_bytes_stored(arr)
        raw = int(math.prod(arr.shape) * np.dtype(arr.dtype).itemsize) if arr.dtype != object else None
        entry: dict[str, Any] = {
            "name": name,
            "shape": list(arr.shape),
            "chunks": list(arr.chunks),
            "dtype": str(arr.dtype),
            "raw_bytes": raw,
            "stored_bytes": stored,
        }
        codec = codec_of(arr)
        if codec is not None:
            config = codec.get_config()
            entry["codec"] = {**{k: v for k, v in config.items() if k != "grid"}, "grid": _grid_summary(config["grid"])}
            bound = codec.bound
            entry["error_bound"] = None if bound is None else {
                "mode": bound.mode, "max_abs_error": bound.max_abs_error, "max_rel_error": bound.max_rel_error,
            }
            entry["bits_per_value"] = metrics.bits_per_value(stored, math.prod(arr.shape))
            entry["compression_ratio"] = raw / stored if stored and raw else None
            entry["vcinr_attrs"] = {k: v for k, v in arr.attrs.items() if k.startswith("vcinr_") and k != "vcinr_note"}
        arrays.append(entry)
    valid, invalid = stored_models(store)
    return {
        "zarr_format": group.metadata.zarr_format,
        "arrays": arrays,
        "embedded_models": [h for h, _ in valid],
        "invalid_models": invalid,  # subgroups whose hash attribute is not a model hash (never used)
    }


def format_info(info: dict[str, Any]) -> str:
    lines = [f"Zarr format {info['zarr_format']}"]
    for a in info["arrays"]:
        head = (
            f"{a['name']}: {a['dtype']} {tuple(a['shape'])}, chunks {tuple(a['chunks'])}, "
            f"{a['stored_bytes']:,} bytes stored"
        )
        if "codec" not in a:
            lines.append(head)
            continue
        c = a["codec"]
        ratio = f"{a['compression_ratio']:.1f}x" if a["compression_ratio"] else "-"
        lines.append(f"{head} ({a['bits_per_value']:.4f} bits/value, {ratio} of {a['raw_bytes']:,} raw)")
        lines.append(f"  codec vcinr: model {c['model_hash']}, quality {c['quality']}, inner steps {c['inner_steps']}")
        lines.append(f"    grid {c['grid']}, fill_value {c['fill_value']}, model_path {c['model_path']}")
        lines.append(f"  guaranteed: {_guarantee(a['error_bound'])}")
        attrs = a["vcinr_attrs"]
        if attrs:
            figures = ", ".join(
                f"{k[len('vcinr_'):]} {v:.6g}" if isinstance(v, float) else f"{k[len('vcinr_'):]} {v}"
                for k, v in attrs.items()
                if k in ("vcinr_psnr_db", "vcinr_rmse", "vcinr_lat_weighted_rmse", "vcinr_max_abs_error")
            )
            if figures:
                lines.append(f"  measured at compression: {figures}")
    models = info["embedded_models"]
    listed = ", ".join(models) if models else "none"
    lines.append(f"models stored in the store ({MODELS_GROUP}): {listed}")
    if info["invalid_models"]:
        names = ", ".join(info["invalid_models"])
        lines.append(f"  not used, their {HASH_ATTR} attribute is not a model hash: {names}")
    return "\n".join(lines)


def _guarantee(bound: dict[str, Any] | None) -> str:
    if bound is None:
        return "no point-wise error bound (NaN/fill points exact)"
    parts = []
    if bound["max_abs_error"] is not None:
        parts.append(f"{bound['max_abs_error']:.6g}")
    if bound["max_rel_error"] is not None:
        parts.append(f"{bound['max_rel_error']:.6g} x each chunk's value range")
    return f"|error| <= {' and <= '.join(parts)} at every valid point ({bound['mode']}); NaN/fill points exact"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="vcinr info", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("store", help="Zarr store (path or URL)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = p.parse_args(argv)
    try:
        info = store_info(args.store)
    except (VCINRError, FileNotFoundError, zarr.errors.BaseZarrError) as e:  # a store is untrusted input
        print(f"vcinr info: {args.store}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
