"""Write the golden chunks that tests/test_golden_chunks.py decodes forever.

Run once per new chunk feature, never to refresh existing files: a golden chunk that no
longer decodes to its stored values means old archives no longer read back.

    python tests/golden/make_golden.py NAME...   # only the named cases, if absent

Each case is ``NAME.vcinr`` (the chunk's bytes, as a store holds them), ``NAME.in.npy``
(what was encoded) and ``NAME.out.npy`` (what this code decoded), with its codec config
in ``cases.json``; the models they name live in ``models/``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/_vcinr_tiny.py

from _vcinr_tiny import LEARNED, QUALITY, fields, linear_artifact, tiny_artifact  # noqa: E402


def _inputs() -> dict[str, np.ndarray]:
    x = fields(2).air_temperature.values.astype(np.float32)  # (2, 37, 49)
    holes = x.copy()
    holes[0, :5, :7] = np.nan
    holes[1] = np.nan  # a field with no valid point: no latent, mask bits only
    filled = x.copy()
    filled[0, 10:12, :] = -9999.0
    filled[1, :3, :3] = np.nan  # NaN among a numeric fill value: the "other" mask
    return {"plain": x, "holes": holes, "filled": filled}


# name -> (model kind, input, codec options). The prefix names the container format the
# chunk was written in: format 1 (written without a bound) and 2 (with one) by earlier
# versions, format 3 by the current one.
CASES = {
    "v1_uniform": ("plain", "plain", {"quality": QUALITY}),
    "v1_learned_mask": ("plain", "holes", {"quality": LEARNED}),
    "v1_fill_other_mask": ("plain", "filled", {"quality": QUALITY, "fill_value": -9999.0}),
    "v1_means": ("means", "holes", {"quality": QUALITY}),
    "v2_abs_bound_means_mask": ("means", "holes", {"quality": QUALITY, "max_abs_error": 0.05}),
    "v2_rel_bound": ("plain", "plain", {"quality": LEARNED, "max_rel_error": 1e-3}),
    "v3_uniform": ("plain", "plain", {"quality": QUALITY}),
    "v3_learned_fill_other_mask": ("plain", "filled", {"quality": LEARNED, "fill_value": -9999.0}),
    "v3_abs_bound_means_mask": ("means", "holes", {"quality": QUALITY, "max_abs_error": 0.05}),
    # a loose bound, where the encoder's pick stores the correction as SPERR's stream
    "v2_sperr_residual": ("plain", "holes", {"quality": QUALITY, "max_rel_error": 0.05}),
    # a linear model (training mean + EOFs, coefficient coder)
    "v3_linear": ("linear", "plain", {"quality": "q1"}),
    "v3_linear_abs_bound_mask": ("linear", "holes", {"quality": "q0", "max_abs_error": 0.05}),
}


def _models(index: dict) -> dict[str, Path]:
    """Model folder per kind: the one earlier cases of that kind used (in ``models/``),
    else a freshly trained tiny model."""
    used = {CASES[n][0]: HERE / "models" / case["model"] for n, case in index.items() if n in CASES}
    if "plain" not in used:
        used["plain"] = tiny_artifact()
    if "means" not in used:
        used["means"] = tiny_artifact(subtract_item_mean=True)
    if "linear" not in used:
        used["linear"] = linear_artifact()
    return used


def main(names: list[str]) -> int:
    from vcinr_sci.codec.numcodecs import VCINRCodec

    inputs = _inputs()
    index_path = HERE / "cases.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    models = _models(index)
    for name in names or list(CASES):
        if name in index:
            print(f"{name}: exists, left as it is")
            continue
        kind, data, options = CASES[name]
        model = models[kind]
        target = HERE / "models" / model.name
        if not target.exists():
            shutil.copytree(model, target)
        codec = VCINRCodec.for_model(model, **options)
        x = inputs[data]
        chunk = codec.encode(x)
        (HERE / f"{name}.vcinr").write_bytes(chunk)
        np.save(HERE / f"{name}.in.npy", x, allow_pickle=False)
        np.save(HERE / f"{name}.out.npy", codec.decode(chunk), allow_pickle=False)
        config = codec.get_config()
        config.pop("model_path", None)  # the test points at models/
        index[name] = {"config": config, "model": model.name, "bytes": len(chunk)}
        print(f"{name}: {len(chunk)} bytes")
    index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
