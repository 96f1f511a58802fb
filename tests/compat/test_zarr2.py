"""The numcodecs codec in a Zarr 2 environment (zarr 2.18, numcodecs 0.15), as benchmark
harnesses and many archives pin it: it imports, round-trips, serves as a Zarr-2 array's
compressor through zarr 2's own API, reads back in fresh processes (zarr 2 and zarr 3)
found by its codec id (entry point), with the model given by folder or stored inside the
store; the parts that need zarr 3 say so. Run by ``scripts/test_zarr2.sh``, which builds that environment;
skipped under zarr 3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import zarr

if int(zarr.__version__.split(".")[0]) >= 3:
    pytest.skip("needs zarr 2: scripts/test_zarr2.sh runs it in a zarr 2.18 environment", allow_module_level=True)

import numcodecs  # noqa: E402
import numpy as np  # noqa: E402
from _vcinr_tiny import QUALITY, fields, other_artifact, tiny_artifact  # noqa: E402

from vcinr_sci.codec.numcodecs import VCINRCodec, codec_of  # noqa: E402
from vcinr_sci.model.artifact import HASH_PREFIX_LEN, load_artifact  # noqa: E402
from vcinr_sci.model.embedded import MODELS_GROUP, embed_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread", "isolated_model_lookup")

REPO = Path(__file__).resolve().parents[2]


def test_environment_is_zarr2():
    assert zarr.__version__.startswith("2.18.") and numcodecs.__version__.startswith("0.15.")


@pytest.fixture(scope="module")
def artifact_path():
    return tiny_artifact()


@pytest.fixture(scope="module")
def data():
    return fields(20).air_temperature.values  # (20, 37, 49) float32


@pytest.mark.parametrize("bound", [None, 0.5])
def test_numcodecs_roundtrip(artifact_path, data, bound):
    codec = VCINRCodec.for_model(artifact_path, QUALITY, max_abs_error=bound)
    again = numcodecs.get_codec(json.loads(json.dumps(codec.get_config())))
    assert isinstance(again, VCINRCodec) and again == codec
    x = data[:4].copy()
    x[0, :3, :4] = np.nan
    y = again.decode(codec.encode(x))
    ok = np.isfinite(x)
    assert y.shape == x.shape and y.dtype == x.dtype and np.array_equal(np.isnan(y), ~ok)
    err = np.abs(y[ok] - x[ok])
    assert err.max() <= bound if bound else np.sqrt(np.mean(err**2)) < 5.0


def test_zarr2_array_compressor(artifact_path, data, tmp_path):
    """zarr 2's own API: open_array and create, with VCINRCodec as the compressor; the
    edge chunk is padded with the NaN fill value, masked by the codec."""
    codec = VCINRCodec.for_model(artifact_path, QUALITY)
    x = data.copy()
    x[19, 10:20, 10:20] = np.nan
    a = zarr.open_array(
        str(tmp_path / "a.zarr"), mode="w", shape=x.shape, chunks=(8, 37, 49), dtype="f4", fill_value=np.nan, compressor=codec
    )
    a[:] = x
    meta = json.loads((tmp_path / "a.zarr" / ".zarray").read_text())
    assert meta["compressor"] == codec.get_config()
    b = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
    assert codec_of(b) == codec
    y = b[:]
    ok = np.isfinite(x)
    assert np.isnan(y[~ok]).all() and np.sqrt(np.mean((y[ok] - x[ok]) ** 2)) < 5.0
    np.testing.assert_array_equal(y[:8], codec.decode(codec.encode(x[:8])))
    np.testing.assert_array_equal(b[17:19, 3], y[17:19, 3])
    c = zarr.create(shape=(4, 37, 49), chunks=(2, 37, 49), dtype="f8", compressor=codec, store=str(tmp_path / "c.zarr"))
    c[:] = x[:4]
    assert c[:].dtype == np.float64 and np.sqrt(np.mean((c[:] - x[:4]) ** 2)) < 5.0


def test_fresh_process_finds_codec_and_model(artifact_path, data, tmp_path):
    """A store written here with zarr 2 is read in new processes that import nothing of
    vcinr_sci, with zarr 2 and with .venv's zarr 3: the entry point finds the codec by
    id, the model comes from its folder, or, for the second array (another model), only
    from the copy stored inside the store by zarr 2 (each process's cache starts empty).
    Both are paths the store's codec configs name: followed as the user trusts this store
    (``VCINR_TRUST_STORE_PATHS=1``)."""
    stored = load_artifact(other_artifact())
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    embed_model(root, stored)
    inside = str(tmp_path / "s.zarr" / MODELS_GROUP / stored.hash[:HASH_PREFIX_LEN])
    expected = {}
    for name, model, model_path in (("by_folder", artifact_path, None), ("embedded", stored, inside)):
        codec = VCINRCodec.for_model(model, QUALITY, model_path=model_path)
        a = root.create_dataset(name, shape=(6, 37, 49), chunks=(3, 37, 49), dtype="f4", compressor=codec)
        a[:] = data[:6]
        expected[name] = a[:]
    zarr2_dir = str(Path(zarr.__file__).parents[1])  # where this zarr 2 is installed, shadowing zarr 3
    for major, path in (("2", [zarr2_dir, str(REPO)]), ("3", [str(REPO)])):
        script = textwrap.dedent(
            f"""
            import sys, numpy as np, zarr
            assert "vcinr_sci" not in sys.modules and zarr.__version__.startswith("{major}.")
            root = zarr.open_group(r"{tmp_path}/s.zarr", mode="r")
            for name in ("by_folder", "embedded"):
                np.save(r"{tmp_path}/%s-{major}.npy" % name, root[name][:])
            """
        )
        cache = tmp_path / f"cache-{major}"
        env = {"PYTHONPATH": os.pathsep.join(path), "VCINR_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin", "VCINR_DEVICE": "cpu",
               "VCINR_TRUST_STORE_PATHS": "1"}
        subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path, timeout=120)
        for name in expected:
            np.testing.assert_allclose(np.load(tmp_path / f"{name}-{major}.npy"), expected[name], rtol=0, atol=1e-4)
        assert any(cache.iterdir())  # the stored copy was taken into the empty cache


def test_zarr3_parts_say_so():
    with pytest.raises(ImportError, match=r"needs zarr >= 3\.1 \(installed: zarr 2\.18"):
        from vcinr_sci.codec.zarr3 import VCINRZarrCodec  # noqa: F401
    with pytest.raises(ImportError, match="xarray accessor"):
        import vcinr_sci.io.accessor  # noqa: F401
