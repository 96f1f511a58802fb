"""Grids (vcinr_sci.data.grids): spherical and regular coordinates, area weights, patches."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcinr_sci.data.grids import Patcher, RegularGrid, SphericalGrid, grid_from_dict, lat_lon_to_xyz


def gaussian_lats(n: int) -> np.ndarray:
    """Latitudes (degrees, south to north) of an n-point Gaussian grid."""
    nodes, _ = np.polynomial.legendre.leggauss(n)
    return np.rad2deg(np.arcsin(nodes))


# ---------------------------------------------------------------- SphericalGrid


@pytest.mark.parametrize(
    "lat, lon, xyz",
    [
        (0.0, 0.0, (1, 0, 0)),
        (0.0, 90.0, (0, 1, 0)),
        (0.0, 180.0, (-1, 0, 0)),
        (0.0, -90.0, (0, -1, 0)),
        (90.0, 0.0, (0, 0, 1)),
        (90.0, 123.0, (0, 0, 1)),  # every longitude is the same point at the pole
        (-90.0, 0.0, (0, 0, -1)),
        (45.0, 0.0, (np.sqrt(0.5), 0, np.sqrt(0.5))),
    ],
)
def test_spherical_known_points(lat, lon, xyz):
    c = SphericalGrid([lat], [lon]).coords()
    assert c.shape == (1, 1, 3)
    assert c.dtype == np.float32
    np.testing.assert_allclose(c[0, 0], xyz, atol=1e-6)


def test_spherical_coords_are_unit_vectors_with_lat_lon_layout():
    lat = np.array([-60.0, 0.0, 30.0])
    lon = np.array([0.0, 45.0, 200.0, 300.0])
    g = SphericalGrid(lat, lon)
    c = g.coords()
    assert g.shape == (3, 4) and g.size == 12 and g.coord_dim == 3
    assert c.shape == (3, 4, 3)
    np.testing.assert_allclose(np.linalg.norm(c, axis=-1), 1.0, atol=1e-6)
    # z depends on latitude only; the (x, y) angle on longitude only
    np.testing.assert_allclose(c[..., 2], np.sin(np.deg2rad(lat))[:, None].repeat(4, 1), atol=1e-6)
    angle = np.rad2deg(np.arctan2(c[1, :, 1], c[1, :, 0])) % 360
    np.testing.assert_allclose(angle, lon % 360, atol=1e-4)


def test_longitude_conventions_give_identical_coords():
    lon_0_360 = np.arange(0.0, 360.0, 22.5)
    lon_pm180 = np.where(lon_0_360 >= 180.0, lon_0_360 - 360.0, lon_0_360)
    lon_beyond = lon_0_360 + 360.0  # e.g. FNOC's 20..377.5
    lon_negative_beyond = lon_0_360 - 720.0
    lat = np.array([-80.0, -10.0, 0.0, 45.0, 89.0])
    ref = SphericalGrid(lat, lon_0_360).coords()
    for lon in (lon_pm180, lon_beyond, lon_negative_beyond):
        np.testing.assert_allclose(SphericalGrid(lat, lon).coords(), ref, atol=2e-6)
    # ... and the dateline is continuous: 179.9 E and -179.9 E are neighbours
    a, b = SphericalGrid([10.0], [179.9, -179.9]).coords()[0]
    assert np.linalg.norm(a - b) < 0.005


def test_latitude_order_descending_is_the_reversed_ascending_grid():
    lat = np.linspace(-90.0, 90.0, 13)
    lon = np.arange(0.0, 360.0, 30.0)
    up = SphericalGrid(lat, lon)
    down = SphericalGrid(lat[::-1], lon)
    np.testing.assert_array_equal(down.coords(), up.coords()[::-1])
    np.testing.assert_allclose(down.area_weights(), up.area_weights()[::-1])
    # north first really means +z first
    assert down.coords()[0, 0, 2] == pytest.approx(1.0) and up.coords()[0, 0, 2] == pytest.approx(-1.0)


def _check_gaussian(lat: np.ndarray):
    lon = np.arange(128) * 360.0 / 128
    g = SphericalGrid(lat, lon)
    c = g.coords()
    assert g.shape == (lat.size, 128)
    # non-uniform spacing is kept: z = sin(lat) are the Gauss-Legendre nodes
    nodes, _ = np.polynomial.legendre.leggauss(lat.size)
    np.testing.assert_allclose(c[:, 0, 2], nodes, atol=2e-6)
    spacing = np.diff(lat)
    assert spacing.max() - spacing.min() > 1e-3  # really non-uniform
    np.testing.assert_allclose(np.hypot(c[..., 0], c[..., 1]), np.cos(np.deg2rad(lat))[:, None] * np.ones(128), atol=2e-6)


def test_gaussian_latitudes_computed():
    _check_gaussian(gaussian_lats(64))


@pytest.mark.shared_data
def test_gaussian_latitudes_of_ccsm_t42(shared_data):
    import xarray as xr

    with xr.open_dataset(shared_data / "ccsm_trefht_1890-1999_annual_run57.nc") as ds:
        lat = ds["lat"].values.astype(np.float64)
    assert lat.size == 64
    np.testing.assert_allclose(lat, gaussian_lats(64), atol=1e-4)  # the file is T42
    _check_gaussian(lat)


def test_regional_subset_matches_the_global_grid():
    glob_lat = np.arange(90.0, -90.1, -0.25)  # ERA5 order, north to south
    glob_lon = np.arange(0.0, 360.0, 0.25)
    full = SphericalGrid(glob_lat, glob_lon).coords()
    # the UK box of the ERA5 sample: 58..50 N, 10 W..2 E (in -180..180)
    lat_i = np.flatnonzero((glob_lat <= 58.0) & (glob_lat >= 50.0))
    lon_uk = np.arange(-10.0, 2.01, 0.25)
    lon_i = np.round((lon_uk % 360.0) / 0.25).astype(int)
    uk = SphericalGrid(glob_lat[lat_i], lon_uk)
    assert uk.shape == (33, 49)
    np.testing.assert_allclose(uk.coords(), full[np.ix_(lat_i, lon_i)], atol=2e-6)
    w = uk.area_weights()
    assert w.mean() == pytest.approx(1.0)
    # over a regional box, cos lat still sets the ratios
    assert w[0, 0] / w[-1, 0] == pytest.approx(np.cos(np.deg2rad(58.0)) / np.cos(np.deg2rad(50.0)))


def test_area_weights_mean_one_and_cos_lat_shape():
    lat = gaussian_lats(32)
    lon = np.arange(0.0, 360.0, 10.0)
    w = SphericalGrid(lat, lon).area_weights()
    assert w.shape == (32, 36)
    assert w.mean() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(w, w[:, :1].repeat(36, 1))  # constant along longitude
    cos = np.cos(np.deg2rad(lat))
    np.testing.assert_allclose(w[:, 0], cos / cos.mean())
    # a pole row carries no area
    wp = SphericalGrid([-90.0, 0.0, 90.0], [0.0, 180.0]).area_weights()
    np.testing.assert_allclose(wp[[0, 2]], 0.0, atol=1e-12)
    assert wp.mean() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "lat, lon, match",
    [
        ([0.0, 90.5], [0.0], r"\[-90, 90\]"),
        ([-91.0], [0.0], r"\[-90, 90\]"),
        ([0.0, np.nan], [0.0], "lat has non-finite"),
        ([0.0], [np.nan, 10.0], "lon has non-finite"),
        ([0.0], [np.inf], "lon has non-finite"),
        ([], [0.0], "lat must be a non-empty"),
        ([[0.0, 1.0]], [0.0], "lat must be a non-empty 1-D"),
    ],
)
def test_spherical_invalid_input(lat, lon, match):
    with pytest.raises(ValueError, match=match):
        SphericalGrid(lat, lon)


def test_lat_lon_to_xyz_broadcasts():
    xyz = lat_lon_to_xyz(np.zeros((2, 1)), np.array([0.0, 90.0, 180.0]))
    assert xyz.shape == (2, 3, 3)
    np.testing.assert_allclose(xyz[1, 1], [0, 1, 0], atol=1e-12)


# ---------------------------------------------------------------- RegularGrid


def test_regular_grid_maps_each_axis_to_unit_interval():
    g = RegularGrid([5, [10.0, 20.0, 30.0]])
    c = g.coords()
    assert g.shape == (5, 3) and g.coord_dim == 2 and c.shape == (5, 3, 2) and c.dtype == np.float32
    np.testing.assert_allclose(c[:, 0, 0], np.linspace(-1, 1, 5))
    np.testing.assert_allclose(c[0, :, 1], [-1.0, 0.0, 1.0])
    # axis k varies along grid axis k only
    np.testing.assert_array_equal(c[:, :, 0], c[:, :1, 0].repeat(3, 1))
    np.testing.assert_array_equal(c[:, :, 1], c[:1, :, 1].repeat(5, 0))
    assert c.min() == -1.0 and c.max() == 1.0


def test_regular_grid_keeps_non_uniform_spacing_and_descending_axes():
    c = RegularGrid([[0.0, 1.0, 3.0, 10.0]]).coords()
    np.testing.assert_allclose(c[:, 0], [-1.0, -0.8, -0.4, 1.0], atol=1e-7)
    c = RegularGrid([[1000.0, 850.0, 500.0]]).coords()  # pressure levels, descending
    np.testing.assert_allclose(c[:, 0], [1.0, 0.4, -1.0], atol=1e-7)


def test_regular_grid_length_one_axis_maps_to_zero():
    for axes in ([1, 4], [[273.15], [0.0, 1.0, 2.0, 3.0]]):
        c = RegularGrid(axes).coords()
        assert c.shape == (1, 4, 2)
        np.testing.assert_array_equal(c[..., 0], 0.0)
        np.testing.assert_allclose(c[0, :, 1], np.linspace(-1, 1, 4), atol=1e-7)
        assert np.isfinite(c).all()


def test_regular_grid_three_axes_and_errors():
    c = RegularGrid([2, 3, 4]).coords()
    assert c.shape == (2, 3, 4, 3)
    with pytest.raises(ValueError, match="at least one axis"):
        RegularGrid([])
    with pytest.raises(ValueError, match="axis 1 has non-finite"):
        RegularGrid([3, [0.0, np.nan]])


def test_regular_grid_area_weights_are_uniform():
    w = RegularGrid([3, 4]).area_weights()
    np.testing.assert_array_equal(w, np.ones((3, 4)))


# ---------------------------------------------------------------- grid_from_dict


@pytest.mark.parametrize(
    "grid",
    [
        SphericalGrid(gaussian_lats(8), np.arange(-180.0, 180.0, 45.0)),
        SphericalGrid(np.float32([58.0, 57.75]), [350.0, 370.25]),
        RegularGrid([4, [0.0, 1.0, 5.0], [7.0]]),
    ],
)
def test_grid_from_dict_round_trip(grid):
    d = json.loads(json.dumps(grid.to_dict()))  # plain JSON
    back = grid_from_dict(d)
    assert type(back) is type(grid)
    assert back.shape == grid.shape and back.coord_dim == grid.coord_dim
    np.testing.assert_array_equal(back.coords(), grid.coords())
    np.testing.assert_array_equal(back.area_weights(), grid.area_weights())
    assert back.to_dict() == d


def test_grid_from_dict_unknown_type():
    with pytest.raises(ValueError, match="unknown grid type 'healpix'"):
        grid_from_dict({"type": "healpix"})


# ---------------------------------------------------------------- Patcher


def test_patcher_split_layout_and_edge_padding():
    x = np.arange(7 * 10, dtype=np.float32).reshape(7, 10)
    p = Patcher((7, 10), (3, 4))
    assert p.counts == (3, 3) and p.num_patches == 9
    s = p.split(x)
    assert s.shape == (9, 3, 4)
    # patches are in row-major order of the patch grid
    np.testing.assert_array_equal(s[0], x[0:3, 0:4])
    np.testing.assert_array_equal(s[1], x[0:3, 4:8])
    np.testing.assert_array_equal(s[4], x[3:6, 4:8])
    # the last patch covers row 6 and columns 8..9, padded by repeating the edge values
    np.testing.assert_array_equal(s[8][0, :2], x[6, 8:10])
    np.testing.assert_array_equal(s[8], np.tile(np.pad(x[6, 8:10], (0, 2), mode="edge"), (3, 1)))
    np.testing.assert_array_equal(p.merge(s), x)


def test_patcher_round_trip_with_leading_and_trailing_axes():
    rng = np.random.default_rng(0)
    grid = SphericalGrid(np.linspace(-80, 80, 11), np.arange(0.0, 360.0, 24.0))  # 11 x 15
    coords = grid.coords()
    p = Patcher(grid.shape, (4, 4))
    s = p.split(coords, trailing=1)
    assert s.shape == (p.num_patches, 4, 4, 3)
    np.testing.assert_array_equal(s[0], coords[:4, :4])
    np.testing.assert_array_equal(p.merge(s, trailing=1), coords)
    x = rng.standard_normal((2, 5) + grid.shape + (2,))
    s = p.split(x, trailing=1)
    assert s.shape == (2, 5, p.num_patches, 4, 4, 2)
    np.testing.assert_array_equal(p.merge(s, trailing=1), x)


def test_patcher_accepts_lists_like_config_patch_shape():
    # DataConfig.patch_shape is a list; a Patcher made from it must work the same.
    x = np.arange(35.0).reshape(5, 7)
    p = Patcher([5, 7], [2, 3])
    s = p.split(x)
    assert s.shape == (9, 2, 3)
    np.testing.assert_array_equal(p.merge(s), x)


def test_patcher_patch_larger_than_grid():
    x = np.arange(6.0).reshape(2, 3)
    p = Patcher((2, 3), (4, 4))
    s = p.split(x)
    assert s.shape == (1, 4, 4)
    np.testing.assert_array_equal(p.merge(s), x)


def test_patcher_errors():
    with pytest.raises(ValueError, match="one entry per grid axis"):
        Patcher((4, 4), (2,))
    with pytest.raises(ValueError, match="positive"):
        Patcher((4, 4), (2, 0))
    p = Patcher((4, 6), (2, 3))
    with pytest.raises(ValueError, match="does not end in grid"):
        p.split(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="does not end in grid"):
        p.split(np.zeros((4, 6)), trailing=1)
    with pytest.raises(ValueError, match="do not match"):
        p.merge(np.zeros((3, 2, 3)))
    with pytest.raises(ValueError, match="do not match"):
        p.merge(np.zeros((4, 3, 2)))


@st.composite
def patch_cases(draw):
    d = draw(st.integers(1, 3))
    grid = tuple(draw(st.integers(1, 9)) for _ in range(d))
    patch = tuple(draw(st.integers(1, 5)) for _ in range(d))
    lead = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2))))
    trail = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 1))))
    return grid, patch, lead, trail


@settings(max_examples=60, deadline=None)
@given(patch_cases(), st.integers(0, 2**31 - 1))
def test_patcher_round_trip_property(case, seed):
    grid, patch, lead, trail = case
    p = Patcher(grid, patch)
    x = np.random.default_rng(seed).standard_normal(lead + grid + trail).astype(np.float32)
    s = p.split(x, trailing=len(trail))
    assert s.shape == lead + (p.num_patches,) + patch + trail
    assert p.num_patches == np.prod([-(-g // q) for g, q in zip(grid, patch)])
    back = p.merge(s, trailing=len(trail))
    assert back.shape == x.shape
    np.testing.assert_array_equal(back, x)
    # the first patch is the grid's corner block (as far as the grid reaches)
    corner = tuple(slice(0, min(g, q)) for g, q in zip(grid, patch))
    first = s[(slice(None),) * len(lead) + (0,)]
    keep = (slice(None),) * len(lead)
    np.testing.assert_array_equal(first[keep + corner], x[keep + corner])
