"""``vcinr bench synthetic``: synthetic hourly 2 m temperature on ERA5's native 0.25-degree
global grid (721 x 1440), written as netCDF files, for scale, memory and throughput runs.

**Never for rate-distortion claims.** Every file says so in its attributes, and every
table built on it must say so too: the fields have a realistic spectrum and realistic
cycles, not the statistics of real weather, so how well any codec compresses them says
nothing about real data. Rate-distortion at 0.25 degrees comes from the real ERA5 UK file.

A field at hour ``t`` (hours since 1 January) is, in kelvin:

- a zonal climate, 300 K at the equator falling as ``sin^2`` of latitude to 250 K at the
  poles, plus a fixed "geography" (spectral noise, 4 K rms);
- a seasonal cycle whose amplitude grows from 1 K at the equator to 15 K at the poles,
  opposite in the two hemispheres;
- a diurnal cycle of 3 K that follows local solar time (longitude), strongest at low
  latitudes;
- weather: spectral noise (6 K rms) that evolves as an AR(1) process in time with a
  correlation of :data:`HOURLY_CORRELATION` per hour (about a 2-day memory).

The spectral noise has the ``k^-3`` power spectrum of the atmosphere's synoptic scales
(2-D spectral density, on the lat-lon index grid). It is drawn on a doubled latitude
axis and cut in half, so it is periodic in longitude (the dateline is continuous) but not
in latitude; towards each pole it is blended into its own zonal mean as ``cos(lat)``
falls, so a pole row is one value, as on a real grid. Fields are reproducible from
``--seed``: field ``t`` depends on the seed and on every field before it (AR(1)), so a
file series is generated from its first hour on.

    vcinr bench synthetic --out /tmp/era5-025 --hours 2000 --hours-per-file 250
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from vcinr_sci.errors import UsageError

# ERA5's native global grid: latitude 90 .. -90, longitude 0 .. 359.75, 0.25 degrees.
NATIVE_SHAPE = (721, 1440)
HOURLY_CORRELATION = 0.98
SPECTRAL_SLOPE = -3.0  # power spectral density ~ k^SPECTRAL_SLOPE
NOT_FOR_RD = ("synthetic fields for scale, memory and throughput runs only; never for rate-distortion claims "
              "(vcinr bench synthetic)")


def native_grid(shape: tuple[int, int] = NATIVE_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes (north to south, both poles) and longitudes (from 0 east) of an
    equiangular global grid of ``shape``, ERA5's layout."""
    n_lat, n_lon = shape
    if n_lat < 3 or n_lon < 4:
        raise UsageError(f"a global grid needs at least 3 x 4 points, got {shape}")
    lat = np.linspace(90.0, -90.0, n_lat)
    lon = np.arange(n_lon) * (360.0 / n_lon)
    return lat, lon


@dataclass
class SyntheticT2m:
    """The generator (see the module doc); :meth:`fields` yields float32 fields in order."""

    shape: tuple[int, int] = NATIVE_SHAPE
    seed: int = 0

    def __post_init__(self) -> None:
        self.lat, self.lon = native_grid(self.shape)
        self._rng = np.random.default_rng(self.seed)
        n_lat, n_lon = self.shape
        ky = np.fft.fftfreq(2 * (n_lat - 1), d=1.0 / (2 * (n_lat - 1)))[:, None]
        kx = np.fft.rfftfreq(n_lon, d=1.0 / n_lon)[None, :]
        k = np.hypot(ky, kx)
        # Amplitude ~ sqrt(PSD / k) per 2-D mode (the 1-D spectrum integrates over a ring of
        # circumference ~k); the mean and the largest scale are left to the cycles.
        with np.errstate(divide="ignore"):
            amplitude = np.where(k >= 1.0, k ** ((SPECTRAL_SLOPE - 1.0) / 2.0), 0.0)
        self._amplitude = amplitude
        coslat = np.cos(np.deg2rad(self.lat))[:, None]
        self._pole_blend = np.sqrt(np.clip(coslat, 0.0, 1.0))
        sinlat = np.sin(np.deg2rad(self.lat))[:, None]
        self._climate = (300.0 - 50.0 * sinlat**2) + self._noise(self._white(), rms=4.0)
        self._seasonal = -np.sign(sinlat) * (1.0 + 14.0 * np.abs(sinlat))  # coldest in January in the north
        self._diurnal = 3.0 * coslat
        self._weather = self._white()

    def _white(self) -> np.ndarray:
        """White complex Gaussian spectral coefficients of the doubled grid."""
        shape = self._amplitude.shape
        return self._rng.standard_normal(shape) + 1j * self._rng.standard_normal(shape)

    def _noise(self, spectrum: np.ndarray, rms: float) -> np.ndarray:
        """The field of ``spectrum`` shaped by the power law, cut to the grid, blended into
        its zonal mean towards the poles and scaled to ``rms``."""
        n_lat = self.shape[0]
        x = np.fft.irfft2(spectrum * self._amplitude, s=(2 * (n_lat - 1), self.shape[1]))[:n_lat]
        zonal = x.mean(axis=1, keepdims=True)
        x = zonal + self._pole_blend * (x - zonal)
        return x * (rms / max(float(x.std()), 1e-12))

    def fields(self, hours: int, start_hour: int = 0) -> Iterator[np.ndarray]:
        """``hours`` consecutive fields from hour 0 (the ones before ``start_hour`` are
        generated and dropped, so a series cut into files is the same series)."""
        rho = HOURLY_CORRELATION
        innovation = math.sqrt(1.0 - rho**2)
        local = np.deg2rad(self.lon)[None, :]
        for t in range(start_hour + hours):
            if t:
                self._weather = rho * self._weather + innovation * self._white()
            if t < start_hour:
                continue
            season = math.cos(2 * math.pi * t / (365.25 * 24))
            day = np.cos(2 * math.pi * (t % 24) / 24 + local - math.pi)  # warmest at local noon
            field = self._climate + self._seasonal * season + self._diurnal * day + self._noise(self._weather, rms=6.0)
            yield field.astype(np.float32)


def write_files(out: Path, hours: int, hours_per_file: int, seed: int = 0,
                shape: tuple[int, int] = NATIVE_SHAPE, quiet: bool = False) -> list[Path]:
    """Write ``hours`` fields as netCDF-4 files of ``hours_per_file`` fields each
    (``t2m_synthetic_NNNN.nc``, variable ``t2m``, dims time/latitude/longitude, one HDF5
    chunk per field, zlib level 1 as archive downloads often are)."""
    import xarray as xr

    if hours < 1 or hours_per_file < 1:
        raise UsageError("--hours and --hours-per-file must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    gen = SyntheticT2m(shape=shape, seed=seed)
    stream = gen.fields(hours)
    paths = []
    for k, start in enumerate(range(0, hours, hours_per_file)):
        n = min(hours_per_file, hours - start)
        values = np.stack([next(stream) for _ in range(n)])
        time = np.datetime64("2000-01-01T00") + np.arange(start, start + n).astype("timedelta64[h]")
        ds = xr.Dataset(
            {"t2m": (("time", "latitude", "longitude"), values, {"units": "K", "long_name": "2 metre temperature"})},
            coords={"time": time, "latitude": ("latitude", gen.lat, {"units": "degrees_north"}),
                    "longitude": ("longitude", gen.lon, {"units": "degrees_east"})},
            attrs={"title": "synthetic 2 m temperature, ERA5 0.25-degree grid", "comment": NOT_FOR_RD,
                   "seed": seed},
        )
        path = out / f"t2m_synthetic_{k:04d}.nc"
        encoding = {"t2m": {"chunksizes": (1, *shape), "zlib": True, "complevel": 1, "_FillValue": None}}
        ds.to_netcdf(path, engine="netcdf4", encoding=encoding)
        paths.append(path)
        if not quiet:
            print(f"{path}  hours {start}-{start + n - 1}  ({values.nbytes / 1e6:.0f} MB of float32)", flush=True)
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vcinr bench synthetic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the netCDF files")
    p.add_argument("--hours", type=int, default=240, help="fields in all (default 240)")
    p.add_argument("--hours-per-file", type=int, default=240, help="fields a file (default 240)")
    p.add_argument("--shape", type=int, nargs=2, default=list(NATIVE_SHAPE), metavar=("LAT", "LON"),
                   help="grid (default ERA5's 721 1440)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    write_files(Path(args.out), args.hours, args.hours_per_file, args.seed, tuple(args.shape))
    print(NOT_FOR_RD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
