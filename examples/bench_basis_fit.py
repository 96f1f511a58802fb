"""Peak memory of the streamed basis fit at two numbers of fields, beside the exact SVD's.

    python examples/bench_basis_fit.py                       # 500 and 2,000 fields of 181 x 360
    python examples/bench_basis_fit.py --fields 200 800 --lat 91 --lon 180 --components 32 --no-exact

SYNTHETIC fields, for memory and time only, never for rate-distortion claims: a mean
field, 96 smooth modes with decaying amplitudes, and noise, written as a netCDF file
(``--workdir``). Per number of fields ``N`` a fresh process runs the streamed fit
(:func:`pipelines.streamed_basis.fit_streamed`, ``basis.fit: streamed``, on an embedded Ray
with ``--workers`` workers, every training field fitted: ``max_fit_items = N``; 5 % of
the fields are the validation part) and reports the
largest peak RSS of a worker that summed a block (which counts the pages of Ray's object
store it touched, shared on the node), the largest private RSS of a worker at the end of a
block, its own (the driver's) peak and the seconds; with ``--exact`` (the default) another fresh process fits the same items by
:meth:`~vcinr_sci.model.basis.LinearBasis.fit` and reports its peak RSS. Memory per worker
should not grow with ``N`` (:mod:`vcinr_sci.model.basis_fit` gives the formula). Quote the
load average (``uptime``) with any time.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_MODES = 96
_WRITE_FIELDS = 64  # fields generated and written at a time


def write_fields(path: Path, fields: int, lat: int, lon: int, seed: int = 0) -> None:
    """``fields`` synthetic fields of ``lat x lon`` (float32, variable ``t``) to ``path``."""
    import netCDF4

    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(-1, 1, lat), np.linspace(0, 2 * np.pi, lon, endpoint=False), indexing="ij")
    modes = np.stack([np.cos((1 + k % 7) * x + k) * np.cos((1 + k // 7) * np.pi * y / 2) for k in range(_MODES)])
    amplitude = 10.0 / (1 + np.arange(_MODES)) ** 1.5
    mean = 280 - 30 * y**2
    with netCDF4.Dataset(path, "w") as ds:
        for name, size in (("time", fields), ("lat", lat), ("lon", lon)):
            ds.createDimension(name, size)
        ds.createVariable("lat", "f8", ("lat",))[:] = np.linspace(-90, 90, lat)
        ds.createVariable("lon", "f8", ("lon",))[:] = np.linspace(0, 360, lon, endpoint=False)
        ds.createVariable("time", "f8", ("time",))[:] = np.arange(fields)
        t = ds.createVariable("t", "f4", ("time", "lat", "lon"))
        for start in range(0, fields, _WRITE_FIELDS):
            n = min(_WRITE_FIELDS, fields - start)
            c = rng.normal(size=(n, _MODES)) * amplitude
            t[start : start + n] = (mean + np.tensordot(c, modes, 1) + 0.05 * rng.normal(size=(n, lat, lon))).astype(np.float32)


def _config(path: Path, fields: int, how: str, args: argparse.Namespace, storage: str):
    from vcinr_sci.config import Config

    return Config.from_dict({
        "name": "bench-basis-fit",
        "data": {"paths": [str(path)], "variable": "t", "grid_dims": ["lat", "lon"], "split_dim": "time",
                 "val_fraction": 0.05, "test_fraction": 0.0, "normalisation": "fixed", "fixed_range": [200.0, 330.0]},
        "model": {"kind": "linear"},
        "basis": {"components": args.components, "max_fit_items": fields, "fit": how, "num_workers": args.workers,
                  "block_items": args.block_items},
        "train": {"storage_path": storage},
    })


def run_one(path: Path, fields: int, how: str, args: argparse.Namespace) -> dict:
    """In this (fresh) process: one fit; its peaks and seconds."""
    from pipelines.streamed_basis import lazy_training_items
    from vcinr_sci.data.items import load_dataset

    with tempfile.TemporaryDirectory() as storage:
        cfg = _config(path, fields, how, args, storage)
        data = load_dataset(cfg.data)
        items = len(lazy_training_items(data))
        t0 = time.perf_counter()
        if how == "streamed":
            from pipelines.streamed_basis import fit_streamed

            fit = fit_streamed(cfg, data, say=lambda *a: None)
            worker, private, k = fit.worker_peak_rss, fit.worker_private_rss, fit.basis.num_components
        else:
            from pipelines.fit_basis import fit_linear_basis

            worker, private, k = 0, 0, fit_linear_basis(cfg, data).num_components
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"items": items, "worker": worker, "private": private, "process": peak, "seconds": seconds, "components": k}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fields", type=int, nargs="+", default=[500, 2000])
    p.add_argument("--lat", type=int, default=181)
    p.add_argument("--lon", type=int, default=360)
    p.add_argument("--components", type=int, default=64)
    p.add_argument("--block-items", type=int, default=256)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--exact", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--workdir", default=None, help="where the synthetic files go (default: a temporary folder)")
    p.add_argument("--one", nargs=3, metavar=("FILE", "FIELDS", "HOW"), help=argparse.SUPPRESS)  # a child's run
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(Path(args.one[0]), int(args.one[1]), args.one[2], args)))
        return 0
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        points = args.lat * args.lon
        l_cols = args.components + 64  # basis.oversample's default
        print(f"SYNTHETIC fields of {args.lat} x {args.lon} ({points} points), {args.components} components, "
              f"probe {l_cols} columns: 2 x 4 S l = {8 * points * l_cols / 2**20:.0f} MiB of probe and partial sum per "
              f"worker; blocks of {args.block_items} items, {args.workers} worker(s)\n")
        print("| fields (fitted) | data MiB | streamed: worker peak RSS MiB | worker private RSS MiB | driver peak RSS MiB "
              "| seconds | exact SVD: peak RSS MiB | seconds |")
        print("|---|---|---|---|---|---|---|---|")
        for n in args.fields:
            path = Path(tmp) / f"fields-{n}.nc"
            write_fields(path, n, args.lat, args.lon)
            hows = ["streamed", "exact"] if args.exact else ["streamed"]
            res = {how: _child(path, n, how, argv or sys.argv[1:]) for how in hows}
            s, e = res["streamed"], res.get("exact")
            exact = f"{e['process'] / 2**20:.0f} | {e['seconds']:.1f}" if e else "- | -"
            print(f"| {n} ({s['items']}) | {n * points * 4 / 2**20:.0f} | {s['worker'] / 2**20:.0f} | "
                  f"{s['private'] / 2**20:.0f} | {s['process'] / 2**20:.0f} | {s['seconds']:.1f} | {exact} |", flush=True)
            path.unlink()
    return 0


def _child(path: Path, fields: int, how: str, argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv, "--one", str(path), str(fields), how],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
