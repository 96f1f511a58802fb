"""The synthetic 0.25-degree generator (scale runs only): its grid, its structure, and a
series cut into files that is the same series."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from vcinr_sci.bench.synthetic import NOT_FOR_RD, SyntheticT2m, native_grid, write_files
from vcinr_sci.errors import UsageError

SHAPE = (73, 144)  # 2.5 degrees: the generator's code paths at a test's size


def test_native_grid_is_era5s():
    lat, lon = native_grid()
    assert lat.shape == (721,) and lon.shape == (1440,)
    assert lat[0] == 90 and lat[-1] == -90 and lon[0] == 0 and lon[-1] == 359.75
    with pytest.raises(UsageError):
        native_grid((2, 4))


def test_fields_have_poles_a_continuous_dateline_and_hourly_memory():
    a = np.stack(list(SyntheticT2m(SHAPE, seed=3).fields(48)))
    assert a.dtype == np.float32 and a.shape == (48, *SHAPE) and np.isfinite(a).all()
    assert np.ptp(a[:, 0], axis=1).max() == 0 and np.ptp(a[:, -1], axis=1).max() == 0  # one value a pole
    # Across the dateline as smooth as between any two neighbouring columns.
    across = np.abs(a[..., 0] - a[..., -1]).mean()
    neighbours = np.abs(np.diff(a, axis=-1)).mean()
    assert across < 2 * neighbours
    # Consecutive hours are alike, hours a day apart less so, than two independent series.
    other = np.stack(list(SyntheticT2m(SHAPE, seed=4).fields(1)))
    step = np.sqrt(((a[1:] - a[:-1]) ** 2).mean())
    assert step < np.sqrt(((a[24] - a[0]) ** 2).mean()) < np.sqrt(((other[0] - a[0]) ** 2).mean())
    # Warm tropics, cold poles.
    assert a[:, SHAPE[0] // 2].mean() > a[:, 2].mean() + 20


def test_spectrum_falls_steeply():
    f = next(SyntheticT2m(SHAPE, seed=0).fields(1)).astype(np.float64)
    row = f[SHAPE[0] // 2] - f[SHAPE[0] // 2].mean()  # the equator, along longitude
    power = np.abs(np.fft.rfft(row)) ** 2
    # k^-3 in 2-D: the power at wavenumbers 20-40 is orders below that at 2-4.
    assert power[20:40].mean() < 1e-2 * power[2:5].mean()


def test_a_series_cut_into_files_is_the_same_series(tmp_path):
    whole = np.stack(list(SyntheticT2m(SHAPE, seed=7).fields(10)))
    paths = write_files(tmp_path, 10, 4, seed=7, shape=SHAPE, quiet=True)
    assert [p.name for p in paths] == [f"t2m_synthetic_{k:04d}.nc" for k in range(3)]
    with xr.open_mfdataset(paths, combine="by_coords") as ds:
        assert ds.t2m.shape == (10, *SHAPE) and ds.attrs["comment"] == NOT_FOR_RD
        np.testing.assert_array_equal(ds.t2m.values, whole)
        assert (np.diff(ds.time.values) == np.timedelta64(1, "h")).all()
    later = np.stack(list(SyntheticT2m(SHAPE, seed=7).fields(3, start_hour=7)))
    np.testing.assert_array_equal(later, whole[7:])
