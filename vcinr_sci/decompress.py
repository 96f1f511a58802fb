"""``vcinr decompress STORE OUT``: decode a vcinr-coded Zarr store to plain data.

Writes netCDF (``OUT`` ending in ``.nc``) or an ordinary Zarr store (anything else) with
the decoded values; the ``vcinr_*`` attributes stay, as a record that the values are
lossy approximations. Decoding is chunk by chunk (dask), so the store may exceed memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vcinr_sci.accessor import open_zarr


def decompress(store: str, out: str, variables: list[str] | None = None, overwrite: bool = False) -> Path:
    target = Path(out)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists (pass --overwrite)")
    ds = open_zarr(store)
    if variables:
        ds = ds[variables]
    for var in ds.variables.values():
        var.encoding = {k: v for k, v in var.encoding.items() if k in ("units", "calendar", "dtype", "_FillValue")}
    if target.suffix in (".nc", ".nc4"):
        ds.to_netcdf(target)
    else:
        ds.to_zarr(target, mode="w")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="vcinr decompress", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("store", help="vcinr-coded Zarr store")
    p.add_argument("out", help="output: *.nc for netCDF, else a Zarr store")
    p.add_argument("--variables", nargs="+", help="only these variables")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    target = decompress(args.store, args.out, args.variables, args.overwrite)
    print(f"decoded {args.store} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
