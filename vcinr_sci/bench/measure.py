"""Measuring one codec candidate on the fields: the bytes it writes, its encode and decode
time, its errors, and (for vcinr) the FLOPs per value against the machine's matmul rate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numcodecs.compat import ensure_ndarray_like

from vcinr_sci import metrics
from vcinr_sci.bench.candidates import Candidate
from vcinr_sci.bench.fields import Fields
from vcinr_sci.bench.output import device_name
from vcinr_sci.bench.throughput import count_flops, encode_flops, matmul_rate
from vcinr_sci.codec.container import decode_container
from vcinr_sci.model.registry import resolve_model

ARCHIVE_VALUES = 1e9  # "model per 1e9 values": the model file spread over an archive this size


def run_candidate(c: Candidate, x: np.ndarray) -> tuple[np.ndarray, int, int, float, float]:
    """Encode ``x`` chunk by chunk through the pipeline, decode it back; returns the
    decoded fields, bytes written, the bytes of vcinr's coded latents and correction alone
    (without the chunk header and mask: what the papers count; 0 for other codecs), and
    encode / decode seconds."""
    decoded = np.empty_like(x)
    nbytes, payload, t_enc, t_dec = 0, 0, 0.0, 0.0
    for start in range(0, len(x), c.chunk_fields):
        chunk = np.ascontiguousarray(x[start : start + c.chunk_fields])
        if c.chunk_fields == 1:
            chunk = chunk[0]
        t0 = time.perf_counter()
        buf: Any = chunk
        for codec in c.pipeline:
            buf = codec.encode(buf)
        t1 = time.perf_counter()
        nbytes += len(bytes(buf)) if not isinstance(buf, np.ndarray) else buf.nbytes
        if c.kind == "vcinr":
            container = decode_container(buf)
            payload += len(container.payload) + len(container.residual or b"")
        for codec in reversed(c.pipeline):
            buf = codec.decode(buf)
        t2 = time.perf_counter()
        t_enc, t_dec = t_enc + t1 - t0, t_dec + t2 - t1
        arr = ensure_ndarray_like(buf)
        if arr.dtype != x.dtype:  # a bytes compressor last in the pipeline hands back raw bytes
            arr = arr.view(x.dtype)
        decoded[start : start + c.chunk_fields] = arr.reshape(-1, *x.shape[1:])
    return decoded, nbytes, payload, t_enc, t_dec


def score(fields: Fields, decoded: np.ndarray, psnr_range: tuple[float, float]) -> dict[str, float | None]:
    """The errors of ``decoded``: PSNR on ``psnr_range`` and on the data's range, RMSE,
    latitude-weighted RMSE (None off a lat/lon grid) and max abs error."""
    x = fields.values
    fixed = psnr_range[1] - psnr_range[0]
    span = float(np.nanmax(x) - np.nanmin(x))
    with np.errstate(divide="ignore"):
        per_field = metrics.psnr_per_item(x, decoded, fixed)
    out: dict[str, float | None] = {
        "psnr": float(np.mean(np.minimum(per_field, 200.0))),  # a lossless field counts as 200 dB
        "psnr_data_range": metrics.psnr(x, decoded, span),
        "rmse": metrics.rmse(x, decoded),
        "max_abs_error": metrics.max_abs_error(x, decoded),
    }
    w = fields.weights
    out["rmse_lat_weighted"] = metrics.weighted_rmse(x, decoded, w) if w is not None else None
    return out


def measure(c: Candidate, fields: Fields, psnr_range: tuple[float, float], vcinr_model_bytes: int) -> dict[str, Any]:
    """One result row: ``c`` run over the fields, its bytes as bits per value and ratio,
    throughput, errors, and for vcinr and the baselines the model's bytes spread over the
    fields and over an archive; in the bounded mode, whether it kept its bound."""
    x = fields.values
    decoded, nbytes, payload, t_enc, t_dec = run_candidate(c, x)
    mb = x.size * 4 / 1e6
    row = {"family": c.family, "knob": c.knob, "kind": c.kind, "bytes": nbytes,
           "bpv": 8 * nbytes / x.size, "ratio_vs_float32": 32 * x.size / (8 * nbytes),
           "encode_mb_s": mb / t_enc, "decode_mb_s": mb / t_dec, **c.extra, **score(fields, decoded, psnr_range)}
    if c.kind == "vcinr":
        row["model_bytes"] = vcinr_model_bytes
        row["bpv_latents"] = 8 * payload / x.size
        row["latent_bits_per_field"] = 8 * payload / len(x)
        if c.extra.get("latent_numbers"):
            row["latent_bits_per_dim"] = row["latent_bits_per_field"] / c.extra["latent_numbers"]
    if c.kind != "classical":  # the model file: over these fields, and over an archive
        row["bpv_with_model"] = 8 * (nbytes + row["model_bytes"]) / x.size
        row["bpv_model_1e9"] = row["bpv"] + 8 * row["model_bytes"] / ARCHIVE_VALUES
    row["nan_exact"] = bool(np.array_equal(np.isnan(x), np.isnan(decoded)))
    if "bound" in row:
        row["bound_met"] = bool(row["max_abs_error"] <= row["bound"])
    return row


def vcinr_costs(model_path: Path, fields: Fields, steps: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """FLOPs per value of the vcinr decode and encode, and the fraction of the machine's
    matmul rate achieved by the fastest measured codec throughput."""
    loaded = resolve_model(model_path)
    model, device = loaded.artifact.model, loaded.device
    # a basis: one (B, P) x (P, K) projection to encode, its transpose to decode; a
    # network (alone, or a hybrid's, counted as if every chunk used it): its own
    basis = loaded.artifact.basis
    dec = enc = 2.0 * basis.num_components if basis is not None else 0.0
    if model is not None:
        inr_dec, inr_enc = _inr_flops(loaded, model, fields, steps)
        dec, enc = dec + inr_dec, enc + inr_enc
    peak = matmul_rate(device)
    vc = [r for r in rows if r["kind"] == "vcinr" and r["inner_steps"] == steps]
    best_dec = max((r["decode_mb_s"] for r in vc), default=0.0) * 1e6 / 4
    best_enc = max((r["encode_mb_s"] for r in vc), default=0.0) * 1e6 / 4
    return {
        "device": str(device),
        "device_name": device_name(device),
        "matmul_flop_s_float32": peak,
        "decode_flops_per_value": dec,
        "encode_flops_per_value": enc,
        "encode_inner_steps": steps,
        "decode_fraction_of_matmul": dec * best_dec / peak,
        "encode_fraction_of_matmul": enc * best_enc / peak,
    }


def _inr_flops(loaded, model, fields: Fields, steps: int) -> tuple[float, float]:
    """Counted FLOPs per value of an INR's decode and of its ``steps``-step encode, on a few fields."""
    device = loaded.device
    n = min(4, len(fields.values))
    items = loaded.to_items(loaded.artifact.normaliser.normalise(fields.values[:n]).astype(np.float32))
    idx = np.arange(len(items))
    valid = np.isfinite(items)
    items = np.where(valid, items, 0.0).astype(np.float32)
    coords = loaded.item_coords[torch.as_tensor(idx % loaded.num_patches, device=device)]
    target = torch.as_tensor(items, device=device).unsqueeze(-1)
    mask = torch.as_tensor(valid, device=device).unsqueeze(-1)
    phi = model.adapt(coords, target, mask, steps)
    model.eval()
    values = items.size
    return count_flops(lambda: model.decode(coords, phi)) / values, encode_flops(model, coords, target, mask, steps) / values
