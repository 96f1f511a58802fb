"""How much a linear model's reconstruction differs between BLAS kernels, thread counts
and summation orders, against what the bounded mode allows for it
(``LoadedModel.reconstruction_margin``).

    python examples/linear_margin.py --model out/suite/artifacts/<hash> [--fields 24] [--rel 1e-4]

Codes the last ``--fields`` held-out fields as one bounded chunk, as float32 and as
float64, at the best level. Then, in a fresh process per setting (OpenBLAS reads its
settings at start-up), it reconstructs the chunk's decoded coefficients with numpy's BLAS
(``OPENBLAS_CORETYPE`` kernels, ``OPENBLAS_NUM_THREADS`` 1-4) and with torch's float64
matmul (1 and 2 threads), and decodes both chunks. Printed: the largest difference from
this process's float64 sums and float32 values (normalised units, and float32 ulps at the
largest value), next to the model's bound; and whether every decode equals this process's
bit for bit and keeps the error bound. The float64 sum in reversed order and exactly
(``math.fsum``) are compared in this process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SETTINGS = [{"OPENBLAS_NUM_THREADS": str(n)} for n in (1, 2, 4)] + [
    {"OPENBLAS_NUM_THREADS": "2", "OPENBLAS_CORETYPE": kind} for kind in ("SandyBridge", "Nehalem", "Prescott")
]


def _child(folder: Path) -> None:
    """In a fresh process: this setting's sums, values and decodes, saved to ``folder``."""
    import torch

    from vcinr_sci.codec.numcodecs import VCINRCodec
    from vcinr_sci.model.artifact import load_artifact

    meta = json.loads((folder / "meta.json").read_text())
    codec = VCINRCodec.from_config(meta["config"])
    basis = load_artifact(meta["config"]["model_path"]).basis
    c = np.load(folder / "c.npy")
    out = {"sums": basis.mean + c @ basis.components.astype(np.float64), "values": basis.reconstruct(c)}
    for n in (1, 2):
        torch.set_num_threads(n)
        out[f"torch{n}"] = (torch.from_numpy(basis.mean.astype(np.float64))
                            + torch.from_numpy(c) @ torch.from_numpy(basis.components.astype(np.float64))).numpy()
    for dtype in ("f4", "f8"):
        out[f"decoded_{dtype}"] = codec.decode((folder / f"chunk_{dtype}.vcinr").read_bytes())
    np.savez(folder / f"{os.environ['SETTING']}.npz", **out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a linear model artifact (folder)")
    p.add_argument("--fields", type=int, default=24)
    p.add_argument("--rel", type=float, default=1e-4, help="the chunk's bound, a fraction of its range")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(Path(args.child))

    from vcinr_sci.codec.core import decode_latents
    from vcinr_sci.codec.numcodecs import VCINRCodec
    from vcinr_sci.data.items import load_dataset
    from vcinr_sci.model.artifact import load_artifact

    artifact = load_artifact(args.model)
    if artifact.basis is None:
        raise SystemExit(f"{args.model} is not a linear model")
    data = load_dataset(artifact.config.data, artifact.normaliser)
    x = data.source.load(np.asarray(data.split.test[-args.fields :])).astype(np.float32)
    level = artifact.quality_levels[-1]
    codec = VCINRCodec.for_model(str(artifact.path), level, max_rel_error=args.rel)
    folder = Path(tempfile.mkdtemp(prefix="vcinr-linear-margin-"))
    chunks = {dtype: codec.encode(x.astype(dtype)) for dtype in ("f4", "f8")}
    for dtype, chunk in chunks.items():
        (folder / f"chunk_{dtype}.vcinr").write_bytes(chunk)
    lat = decode_latents(chunks["f4"])
    kept = ~np.isnan(x)
    own = lat.model.evaluate(lat.active, lat.phi).reshape(x.shape)[kept]  # no item means in a linear model's chunk
    margin = lat.model.reconstruction_margin(lat.phi, own, lat.offsets)
    basis, c = artifact.basis, lat.phi.numpy()
    np.save(folder / "c.npy", c)
    (folder / "meta.json").write_text(json.dumps({"config": codec.get_config() | {"model_path": str(artifact.path)}}))

    sums = basis.mean + c @ basis.components.astype(np.float64)
    values = basis.reconstruct(c)
    top = float(np.abs(values).max())
    ulp = float(np.spacing(np.float32(top)))
    spread = basis.reconstruction_spread(c, top)
    span = artifact.normaliser.hi - artifact.normaliser.lo
    print(f"{len(x)} fields of {x.shape[1:]}, {basis.num_components} EOFs, level {level}, bound {args.rel:g} x range; "
          f"max |value| {top:.3f}, a float32 ulp there {ulp:.3g} (normalised)")
    print(f"bound on the difference: float32 values {spread:.3g} = {spread / ulp:.2f} ulp; "
          f"margin's model term {margin:.3g} data units = {margin / span / ulp:.2f} ulp")

    terms = c[:, :, None] * basis.components.astype(np.float64)[None]
    others = {"reversed order": basis.mean + sum(terms[:, k] for k in reversed(range(basis.num_components))),
              "exact (fsum)": np.array([[math.fsum([float(basis.mean[j]), *terms[i, :, j]]) for j in range(basis.points)]
                                        for i in range(len(c))])}
    rows = [(name, other, other.astype(np.float32)) for name, other in others.items()]
    decodes_equal, kept_bound = True, True
    for setting in SETTINGS:
        name = ", ".join(f"{k}={v}" for k, v in setting.items())
        env = os.environ | setting | {"SETTING": name}
        subprocess.run([sys.executable, __file__, "--model", args.model, "--child", str(folder)], env=env, check=True)
        got = np.load(folder / f"{name}.npz")
        rows.append((f"numpy {name}", got["sums"], got["values"]))
        if setting is SETTINGS[0]:  # torch has its own BLAS: once
            rows += [(f"torch float64, {n} threads", got[f"torch{n}"], got[f"torch{n}"].astype(np.float32)) for n in (1, 2)]
        for dtype, chunk in chunks.items():
            decoded = got[f"decoded_{dtype}"].reshape(x.shape)
            decodes_equal &= bool(np.array_equal(decoded, codec.decode(chunk).reshape(x.shape)))
            kept_bound &= bool(np.abs(decoded.astype(np.float64) - x)[kept].max() <= args.rel * float(np.ptp(x[kept])))
    print("| reconstruction | max float64 difference | max float32 difference (ulp) |\n|---|---|---|")
    for name, s, v in rows:
        print(f"| {name} | {np.abs(s - sums).max():.3g} | {np.abs(v.astype(np.float64) - values).max() / ulp:.0f} |")
    print(f"every decode (float32 and float64 chunks, every setting) equal to this process's: {decodes_equal}; "
          f"within the bound: {kept_bound}")


if __name__ == "__main__":
    main()
