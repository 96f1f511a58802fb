"""A tiny trained model artifact with a uniform-quantiser coder, built once per test
process (shared by the codec, accessor and compress-pipeline tests), and its data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

QUALITY = "u6"
LEARNED = "q0"  # a LatentCoder level
_CACHE: dict[str, Path] = {}


def data_path() -> str:
    import iris_sample_data

    return os.path.join(iris_sample_data.path, "A1B_north_america.nc")


def tiny_artifact(patch_shape: list[int] | None = None, subtract_item_mean: bool = False,
                  subtract_mean_field: bool = False) -> Path:
    """Folder of a tiny artifact: the tiny config's INR after a few outer steps, with a
    6-bit uniform quantiser (level ``u6``) fitted on adapted latents. With
    ``patch_shape`` its items are patches of the fields; with ``subtract_item_mean``
    the INR codes each item less its mean (``data.subtract_item_mean``); with
    ``subtract_mean_field``, each field less the training mean field."""
    key = f"path{patch_shape}-mean{subtract_item_mean}-field{subtract_mean_field}"
    if key in _CACHE:
        return _CACHE[key]
    import torch

    from vcinr_sci.coding.coder import LatentCoder
    from vcinr_sci.config import load_config
    from vcinr_sci.model.artifact import save_artifact
    from vcinr_sci.model.training import add_uniform_coder, train_in_process

    repo = Path(__file__).resolve().parents[1]
    overrides = {"data.patch_shape": patch_shape, "data.subtract_item_mean": subtract_item_mean,
                 "data.subtract_mean_field": subtract_mean_field}
    artifact, items = train_in_process(load_config(repo / "configs" / "tiny.yaml", overrides), steps=12)
    phi = add_uniform_coder(artifact, items, bits=6)
    # and an (untrained) learned transform coder, for the entropy-coded path
    torch.manual_seed(0)
    coder = LatentCoder(artifact.model.latent_dim, dim_y=4, width=16, blocks=1)
    coder.set_stats(phi)
    coder.update()
    artifact.add_coder(LEARNED, coder.eval())
    _CACHE[key] = save_artifact(artifact, tempfile.mkdtemp(prefix="vcinr-tiny-artifact-"))
    return _CACHE[key]


def other_artifact() -> Path:
    """A second artifact, same INR, different coder (so a different hash)."""
    if "other" in _CACHE:
        return _CACHE["other"]
    from vcinr_sci.coding.quantiser import UniformQuantiser
    from vcinr_sci.model.artifact import load_artifact, save_artifact

    art = load_artifact(tiny_artifact())
    q = UniformQuantiser(art.model.latent_dim, bits=4)
    q.mean, q.std = art.coder(QUALITY).mean, art.coder(QUALITY).std
    art.add_coder("u4", q)
    _CACHE["other"] = save_artifact(art, tempfile.mkdtemp(prefix="vcinr-other-artifact-"))
    return _CACHE["other"]


def fields(n: int = 24):
    """The first ``n`` fields of the tiny data, as a loaded xarray Dataset."""
    import xarray as xr

    ds = xr.open_dataset(data_path())[["air_temperature"]].isel(time=slice(0, n)).load()
    return ds


def five_d_fields(n_fields: int = 8):
    """The first ``n_fields`` (a multiple of 4) as (realization, time, level, latitude,
    longitude) = (1, 4, n_fields / 4, 37, 49): the layout a peer benchmark hands over."""
    import xarray as xr

    da = fields(n_fields).air_temperature
    values = da.values.reshape(1, 4, n_fields // 4, *da.shape[1:])
    dims = ("realization", "time", "level", "latitude", "longitude")
    return xr.Dataset({"air_temperature": (dims, values)}, coords={"latitude": da.latitude, "longitude": da.longitude})


def linear_artifact(subtract_mean_field: bool = False) -> Path:
    """A linear model (``model.kind: linear``) of the tiny data: 16 EOFs, levels q0/q1
    for 30 and 40 dB, fitted by the real stage (seconds); with ``subtract_mean_field``,
    of what the training mean field leaves."""
    key = f"linear-field{subtract_mean_field}"
    if key in _CACHE:
        return _CACHE[key]
    from pipelines import fit_basis
    from vcinr_sci.config import load_config

    repo = Path(__file__).resolve().parents[1]
    overrides = {"model.kind": "linear", "basis.components": 16, "basis.target_psnr": [30, 40],
                 "data.subtract_mean_field": subtract_mean_field,
                 "train.artifact_dir": tempfile.mkdtemp(prefix="vcinr-linear-artifact-")}
    _CACHE[key] = fit_basis.fit(load_config(repo / "configs" / "tiny.yaml", overrides))
    return _CACHE[key]


def hybrid_artifact(residual_components: int = 16, subtract_mean_field: bool = False) -> Path:
    """A hybrid model of the tiny data: the linear model's 16 EOFs and levels q0/q1, an
    INR trained 12 steps on what the leading ``residual_components`` EOFs leave, a 6-bit
    uniform quantiser as its one latent coder; levels made and scored by the real stage
    (with ``subtract_mean_field``, all of it on what the training mean field leaves)."""
    key = f"hybrid{residual_components}-field{subtract_mean_field}"
    if key in _CACHE:
        return _CACHE[key]
    from pipelines import fit_hybrid
    from vcinr_sci.coding.quantiser import UniformQuantiser
    from vcinr_sci.config import load_config
    from vcinr_sci.model.artifact import load_artifact
    from vcinr_sci.model.training import train_in_process

    repo = Path(__file__).resolve().parents[1]
    linear = load_artifact(linear_artifact(subtract_mean_field))
    overrides = {"model.kind": "hybrid", "model.residual_components": residual_components, "basis.components": 16,
                 "basis.target_psnr": [30, 40], "data.subtract_mean_field": subtract_mean_field,
                 "train.artifact_dir": tempfile.mkdtemp(prefix="vcinr-hybrid-artifact-")}
    cfg = load_config(repo / "configs" / "tiny.yaml", overrides)
    inr, items = train_in_process(cfg, steps=12, linear=linear)
    coords, values, mask = items.batch(np.arange(48))
    quantiser = UniformQuantiser(inr.model.latent_dim, bits=6)
    quantiser.fit(inr.model.adapt(coords, values, mask, cfg.latents.inner_steps))
    inr.add_coder("q0", quantiser)
    _CACHE[key] = fit_hybrid.write_levels(cfg, linear, inr)
    return _CACHE[key]


def set_model_path(store: Path, value: str | None) -> None:
    """Rewrite the ``model_path`` of every vcinr codec config in the format-3 ``store``'s
    metadata (as a crafted store, or an older writer, would have it), consolidated anew."""
    import json

    from vcinr_sci.io.store import consolidate

    for meta in Path(store).glob("*/zarr.json"):
        doc = json.loads(meta.read_text())
        codecs = [c for c in doc.get("codecs", []) if c.get("name") == "vcinr"]
        for codec in codecs:
            codec["configuration"]["model_path"] = value
        if codecs:
            meta.write_text(json.dumps(doc))
    consolidate(store, zarr_format=3)
