"""``data.subtract_mean_field``: models code a field's anomaly from the training mean
field, which the artifact carries and the model adds back, on the grid and off it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests._vcinr_tiny import tiny_artifact
from vcinr_sci.codec.core import decode_chunk, encode_chunk
from vcinr_sci.data.grids import RegularGrid, SphericalGrid
from vcinr_sci.data.items import load_dataset
from vcinr_sci.model.artifact import load_artifact
from vcinr_sci.model.registry import register_model


def test_spherical_interpolation_is_bilinear_and_wraps_the_dateline():
    grid = SphericalGrid(np.linspace(-90, 90, 19), np.arange(0, 360, 10.0))
    lat, lon = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    values = 0.5 * lat + np.where(lon == 0, 7.0, 0.0)  # linear in lat; one bump on the 0 meridian
    points = np.array([[5.0, 20.0], [-33.0, 140.0], [12.0, 355.0], [12.0, -5.0], [90.0, 77.0]])
    from vcinr_sci.data.grids import lat_lon_to_xyz

    got = grid.interpolate(values, lat_lon_to_xyz(points[:, 0], points[:, 1]))
    # exact in lat; halfway between lon 350 (no bump) and lon 0 (bump) across the dateline
    np.testing.assert_allclose(got, 0.5 * points[:, 0] + np.array([0, 0, 3.5, 3.5, 0]), atol=1e-9)
    np.testing.assert_allclose(grid.interpolate(values, grid.coords().reshape(-1, 3)), values.ravel(), atol=1e-4)


def test_regional_and_regular_grids_hold_their_edges():
    grid = SphericalGrid([50.0, 55.0, 60.0], [-10.0, 0.0, 10.0])  # regional: no wrap
    values = np.add.outer(np.arange(3.0), 10 * np.arange(3.0))
    from vcinr_sci.data.grids import lat_lon_to_xyz

    got = grid.interpolate(values, lat_lon_to_xyz(np.array([52.5, 70.0, 55.0]), np.array([5.0, 0.0, 40.0])))
    np.testing.assert_allclose(got, [0.5 + 15.0, 2.0 + 10.0, 1.0 + 20.0])
    reg = RegularGrid([[0.0, 1.0, 3.0], 1])  # a non-uniform axis and an axis of one point
    np.testing.assert_allclose(reg.interpolate(np.array([[0.0], [2.0], [6.0]]), np.array([[0.0, 0.0], [2.0, 0.0]])),
                               [3.0, 6.0])  # unit coordinate 0 is data coordinate 1.5; beyond 1 held


@pytest.fixture(scope="module")
def field_model():
    return register_model(tiny_artifact(subtract_mean_field=True))


def test_the_artifact_carries_the_training_mean_field(field_model):
    art = load_artifact(tiny_artifact(subtract_mean_field=True))
    data = load_dataset(art.config.data)
    train = data.source.load(data.split.train)
    expected = np.nanmean(art.normaliser.normalise(train.astype(np.float64)), axis=0)
    np.testing.assert_allclose(art.normaliser.mean_field, expected, atol=1e-6)
    assert art.normaliser.mean_field.dtype == np.float32 and art.normaliser.mean_field.shape == art.grid.shape
    items = data.items("train")  # what the INR was trained on: fields less the mean field
    np.testing.assert_allclose(np.nanmean(items.values(np.arange(len(items))), axis=0), 0.0, atol=1e-5)


def test_the_model_adds_the_mean_field_back_on_the_grid_and_off_it(field_model):
    phi = torch.randn(3, field_model.latent_dim) * 0.1
    items = np.arange(3)
    base = field_model.artifact.normaliser.mean_field.reshape(-1)
    np.testing.assert_allclose(field_model.evaluate(items, phi) - field_model.kind.evaluate(items, phi), base[None].repeat(3, 0),
                               atol=1e-6)
    coords = field_model.grid.coords().reshape(-1, field_model.grid.coord_dim)
    np.testing.assert_allclose(field_model.evaluate_at(coords, phi), field_model.evaluate(items, phi), atol=1e-4)


def test_chunks_round_trip_and_beat_the_mean_field_alone(field_model):
    art = field_model.artifact
    data = load_dataset(art.config.data)
    x = data.source.load(data.split.test[:4]).astype(np.float32)
    blob = encode_chunk(x, field_model, "u6", inner_steps=3)
    y = decode_chunk(blob)
    assert y.shape == x.shape and y.dtype == x.dtype
    mean_only = art.normaliser.denormalise(art.normaliser.mean_field.astype(np.float64))
    assert np.nanmean((y - x) ** 2) < np.nanmean((mean_only - x) ** 2)
