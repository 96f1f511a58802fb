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
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/_vcinr_tiny.py

from _vcinr_tiny import LEARNED, QUALITY, fields, hybrid_artifact, linear_artifact, tiny_artifact  # noqa: E402

GAUSSIAN = "g0"  # the Gaussian latent coder's level in the "gaussian" model


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
    # rate control: the chunk coded at a step exponent (and maybe a neighbouring level's tables)
    "v3_linear_step": ("linear", "plain", {"quality": "q1"}),
    # the INR's latents under a Gaussian latent coder (transform + coefficient coder)
    "v3_gaussian_mask": ("gaussian", "holes", {"quality": GAUSSIAN}),
    # a hybrid model: the linear model alone (mode 0) and, forced, its INR mode (mode 1)
    "v3_hybrid_linear": ("hybrid", "plain", {"quality": "q1"}),
    "v3_hybrid_inr_abs_bound_mask": ("hybrid", "holes", {"quality": "q1", "max_abs_error": 0.05}),
}
# The tiny hybrid's INR never pays for its latents at these levels, so these chunks are
# written in its first INR mode (a valid chunk any hybrid encoder could write).
FORCED_INR_MODE = {"v3_hybrid_inr_abs_bound_mask"}


def gaussian_artifact() -> Path:
    """The tiny INR with a Gaussian latent coder (level ``g0``) fitted on its latents of
    24 consecutive fields (plain KLT, prediction along fields), at a tenth of the
    leading component's deviation."""
    import tempfile

    from vcinr_sci.coding.transform import fit_transform
    from vcinr_sci.model.artifact import load_artifact, save_artifact
    from vcinr_sci.model.registry import register_model

    art = load_artifact(tiny_artifact())
    model = register_model(art)
    x = fields(24).air_temperature.values.astype(np.float32)
    norm = art.normaliser.normalise(x.astype(np.float64)).astype(np.float32)
    items = model.to_items(norm)
    phi = model.kind.adapt(np.arange(len(items)), items, np.ones(items.shape, bool), art.config.latents.inner_steps)
    base = fit_transform(phi.detach().numpy(), 1.0, follows=np.arange(len(phi)) > 0)
    art.add_coder(GAUSSIAN, base.at_step(0.1 * float(base.coefficients.scales[0])))
    return save_artifact(art, tempfile.mkdtemp(prefix="vcinr-gaussian-artifact-"))


@contextmanager
def inr_mode():
    """A hybrid encoder that writes every chunk in its first INR mode: the leading
    coefficients at the level's step, the INR adapted on what they leave, its latents
    under the level's first latent coder (what :meth:`HybridKind.encoder` writes when
    that mode costs least)."""
    from vcinr_sci.model.kinds import HybridKind

    def encoder(self, items, values, valid, steps):
        def encode(coder):
            head, decoded = coder.head.code(self.basis.coefficients(values, valid)[:, : self.head])
            rest = values - self._head_basis.reconstruct(decoded.numpy())
            z = self.inr.adapt(items, rest.astype(np.float32), valid, steps)
            return coder.pack(1, head, coder.latents[0].compress(z))

        return encode

    original = HybridKind.encoder
    HybridKind.encoder = encoder
    try:
        yield
    finally:
        HybridKind.encoder = original


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
    if "gaussian" not in used:
        used["gaussian"] = gaussian_artifact()
    if "hybrid" not in used:
        used["hybrid"] = hybrid_artifact(residual_components=4)
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
        with inr_mode() if name in FORCED_INR_MODE else nullcontext():
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
