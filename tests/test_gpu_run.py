"""The GPU training route (``examples/train_gpu.sh``) on the CPU, on the tiny data, for an
INR and a hybrid's INR: a data bundle holds the items the library makes; the device
script trains from it with the packages a lent GPU machine lacks made unimportable; what
it writes becomes an artifact here, scored like meta_train's, that meta_train then takes
as its finished run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vcinr_sci.config import load_config

ROOT = Path(__file__).resolve().parents[1]
# Not on the training machine (docs: .library/device KINDS); iris_sample_data: the
# bundle, not the data's package, must feed the run.
ABSENT = ["compressai", "ray", "zarr", "numcodecs", "netCDF4", "h5netcdf", "dask", "iris_sample_data"]
STEPS = 3


@pytest.fixture(scope="module", params=["inr", "hybrid"])
def bundle(request, tmp_path_factory):
    """A bundle of the tiny data: an INR's (on the anomalies from the mean field) or a
    hybrid's (on what the mean and 4 of its linear model's 16 EOFs leave)."""
    from pipelines.gpu_bundle import write_bundle

    root = tmp_path_factory.mktemp(f"gpu-{request.param}")
    overrides = {"model.kind": request.param, "meta.steps": STEPS, "train.artifact_dir": str(root / "artifacts"),
                 "train.storage_path": str(root / "runs")}
    overrides |= {"data.subtract_mean_field": True} if request.param == "inr" else \
        {"basis.components": 16, "basis.target_psnr": [30, 40], "model.residual_components": 4}
    return write_bundle(load_config(ROOT / "configs" / "tiny.yaml", overrides), root / "data")


@pytest.fixture(scope="module")
def device_run(bundle, tmp_path_factory):
    """The device script's run of ``bundle``, in an interpreter where the absent packages
    cannot be imported; returns (output folder, the modules it had imported)."""
    out = tmp_path_factory.mktemp("device-out")
    script = (
        "import json, runpy, sys\n"
        f"for name in {ABSENT!r}:\n"
        "    sys.modules[name] = None  # import raises, find_spec says absent\n"
        f"sys.argv = ['train_gpu.py', {str(bundle)!r}, '--out', {str(out)!r}, '--eval-every-s', '0']\n"
        "try:\n"
        "    runpy.run_path('examples/train_gpu.py', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    if e.code:\n"
        "        raise\n"
        "print(json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)))\n"
    )
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return out, json.loads(run.stdout.strip().splitlines()[-1])


def test_a_bundle_holds_the_items_the_library_makes(bundle):
    from pipelines.gpu_bundle import read_bundle
    from vcinr_sci.data.holdout import tuning_split
    from vcinr_sci.model.artifact import load_artifact
    from vcinr_sci.model.training import training_data

    read = read_bundle(bundle)
    linear = read.manifest["linear_artifact"]
    data = training_data(read.config, load_artifact(linear) if linear else None)
    part = tuning_split(data.split, data.source)
    for mine, theirs in ((read.train, data.items("train", part.train)), (read.tune, data.items("val", part.tune)),
                         (read.test, data.items("test"))):
        idx = np.arange(len(theirs))
        assert len(mine) == len(theirs)
        np.testing.assert_array_equal(mine.values(idx), theirs.values(idx))
        for a, b in zip(mine.batch(idx[:4]), theirs.batch(idx[:4])):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    if read.config.model.kind == "inr":
        assert read.train.normaliser.mean_field is not None  # the mean field travelled
    else:
        assert read.train.linear_part is not None  # the linear model's leading EOFs travelled


def test_the_device_script_needs_none_of_the_absent_packages(device_run):
    _, modules = device_run
    tops = {m.split(".")[0] for m in modules}
    assert not tops & set(ABSENT)
    assert not [m for m in modules if m.startswith(("vcinr_sci.coding", "vcinr_sci.codec", "vcinr_sci.io"))]
    assert "vcinr_sci.model.steps" in modules  # the library's own steps, not a copy


def test_a_gpu_run_becomes_the_artifact_meta_train_would_have_made(device_run, tmp_path):
    from pipelines import meta_train
    from pipelines.import_gpu_run import import_run, runs_in
    from vcinr_sci.model.artifact import load_artifact

    out, _ = device_run
    (name,) = runs_in(out)
    doc = json.loads((out / f"{name}.json").read_text())
    assert doc["run"]["finished"] and doc["run"]["steps"] == STEPS == doc["config"]["meta"]["steps"]
    assert [p["step"] for p in doc["curve"]] == list(range(STEPS + 1))
    artifact = load_artifact(import_run(out, name, tmp_path))
    training = artifact.metrics["training"]
    assert training["steps"] == STEPS and training["curve"] == doc["curve"]
    # scored here on the test items as on the training machine: the same items and model
    assert artifact.metrics["test_psnr"] == pytest.approx(doc["curve"][-1]["test_psnr"], abs=1e-3)
    # the config as trained (a hybrid's: with its linear model) finds it as meta_train's finished run
    linear = doc["bundle"]["linear_artifact"]
    outcome = meta_train.fit(load_config(tmp_path / f"{name}.yaml"), Path(linear) if linear else None)
    assert outcome.artifact.resolve() == artifact.path.resolve()
