"""The data a lent GPU machine meta-trains on, as one file per config: a data bundle.

    python -m pipelines.gpu_bundle --config configs/suite-era5-uk.yaml [--set KEY=VALUE ...] [--out gpu_data]

A machine lent for training (``examples/train_gpu.sh``) has torch, numpy, PyYAML and
xarray, but none of the data's readers (netCDF4, dask) and no compressai, Zarr or Ray.
:func:`write_bundle` runs here and reads the data through the library as
``pipelines.meta_train`` does: the same split, tuning split and normaliser (with its mean
field), and for ``model.kind: hybrid`` the linear model ``pipelines.fit_hybrid`` takes
(fitted before from the same config, or now), whose leading ``model.residual_components``
EOFs the bundle carries. It writes ``OUT/NAME.npz``: every
field in data units, the part indices, and a JSON manifest with the config. There,
:func:`read_bundle` rebuilds the library's own :class:`~vcinr_sci.data.items.ItemSet` of
each part from it (an in-memory source in place of the files), so the GPU trains on the
items the CPU stages would have.

Only numpy, xarray and the data and model modules that need nothing more are imported at
module level: ``read_bundle`` runs on that machine.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pipelines.cli_args import config_parser, load
from vcinr_sci.config import Config
from vcinr_sci.data.grids import Grid, grid_from_dict
from vcinr_sci.data.items import Dataset, ItemSet
from vcinr_sci.data.normalise import Normaliser
from vcinr_sci.data.sources import DataSplit, FieldSource
from vcinr_sci.errors import ConfigError
from vcinr_sci.model.basis import LinearBasis

MANIFEST_KEY = "manifest"
BASIS_PREFIX = "basis."
FIELD_DIM = "field"  # the one item dim of a bundle's in-memory source


@dataclass
class Bundle:
    """A bundle read back: its config, grid, items per part, and manifest."""

    config: Config
    grid: Grid
    train: ItemSet  # the tuning split's training fields (all of the training part when there is a val part)
    tune: ItemSet  # the fields meta-training scores its checkpoints on
    test: ItemSet
    manifest: dict[str, Any]
    sha256: str  # of the bundle file: a run names the data it trained on


def write_bundle(cfg: Config, out_dir: str | Path) -> Path:
    """Write the bundle of ``cfg`` (``model.kind`` inr or hybrid) to ``out_dir/NAME.npz``."""
    # The writer's imports need the data's readers and, for a hybrid, the coders: never
    # imported where the bundle is read.
    from pipelines.fit_hybrid import linear_model
    from vcinr_sci.data.holdout import tuning_split
    from vcinr_sci.model.artifact import load_artifact
    from vcinr_sci.model.training import training_data

    if cfg.model.kind == "linear":
        raise ConfigError("model.kind linear has no INR to meta-train on a GPU: use pipelines.fit_basis")
    linear = None
    arrays: dict[str, np.ndarray] = {}
    if cfg.model.kind == "hybrid":
        linear = linear_model(cfg)
        basis = load_artifact(linear).basis
        assert basis is not None  # a linear artifact always holds one
        arrays |= {BASIS_PREFIX + k: v for k, v in basis.leading(cfg.model.residual_components).state().items()}
    data = training_data(cfg, load_artifact(linear) if linear else None)
    part = tuning_split(data.split, data.source)
    print(part.note, flush=True)
    arrays["fields"] = data.source.load(np.arange(len(data.source)))
    arrays |= {"train": part.train, "tune": part.tune, "split.train": data.split.train, "split.val": data.split.val,
               "split.test": data.split.test}
    if data.normaliser.mean_field is not None:
        arrays["mean_field"] = np.asarray(data.normaliser.mean_field, np.float32)
    manifest = {
        "config": cfg.to_dict(),
        "grid": data.grid.to_dict(),
        "normaliser": data.normaliser.to_dict(),
        "split": data.split.to_dict(),
        "tuning": part.to_dict(),
        "linear_artifact": str(Path(linear).resolve()) if linear else None,
        "linear_hash": load_artifact(linear).hash if linear else None,
    }
    arrays[MANIFEST_KEY] = np.array(json.dumps(manifest))
    out = Path(out_dir) / f"{cfg.name}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    print(f"{cfg.name}: {len(arrays['fields'])} fields of {data.grid.shape}, {len(part.train)} train / "
          f"{len(part.tune)} tune / {len(data.split.test)} test -> {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return out


def read_bundle(path: str | Path) -> Bundle:
    """The items of the bundle at ``path``, as the library builds them from the data."""
    path = Path(path)
    raw = path.read_bytes()
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    manifest = json.loads(str(arrays.pop(MANIFEST_KEY)))
    cfg = Config.from_dict(manifest["config"])
    grid = grid_from_dict(manifest["grid"])
    normaliser = Normaliser.from_dict(manifest["normaliser"], arrays.get("mean_field"))
    basis = {k[len(BASIS_PREFIX):]: v for k, v in arrays.items() if k.startswith(BASIS_PREFIX)}
    linear_part = LinearBasis.from_state(basis).project if basis else None
    source = FieldSource(xr.DataArray(arrays["fields"], dims=(FIELD_DIM, *cfg.data.grid_dims)), cfg.data.grid_dims)
    recorded = manifest["split"]
    split = DataSplit(arrays["split.train"], arrays["split.val"], arrays["split.test"], recorded["dim"],
                      recorded["positions"], recorded.get("coords", {}))
    data = Dataset(source, grid, split, normaliser, cfg.data, linear_part)
    return Bundle(cfg, grid, data.items("train", arrays["train"]), data.items("val", arrays["tune"]),
                  data.items("test"), manifest, hashlib.sha256(raw).hexdigest())


def main(argv: list[str] | None = None) -> int:
    p = config_parser("python -m pipelines.gpu_bundle", __doc__, "YAML run config (model.kind inr or hybrid)",
                      "model.width=256")
    p.add_argument("--out", default="gpu_data", help="folder of the bundles (default: gpu_data, git-ignored)")
    args = p.parse_args(argv)
    write_bundle(load(args), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
