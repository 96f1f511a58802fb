"""The streamed basis fit against the exact SVD on the suite's datasets, as one table.

    python examples/basis_fit_suite.py [NAME ...]      (default: all six suite datasets)

Per dataset (``configs/suite-NAME.yaml``, ``model.kind: linear``) ``pipelines.fit_basis``
fits the linear model twice, ``basis.fit: exact`` and ``basis.fit: streamed`` (on an
embedded Ray; all else as the config says), into ``out/basis-fit-suite/``. Then, on the
tuning items the stage tunes on, at each level's step of the exact model (the same
quantisation for both), the PSNR and bits per value of both models, and the held-out test
PSNR of both unquantised. Needs the real data folder (``$VCINR_DATA_DIR``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pipelines import fit_basis
from vcinr_sci.config import load_config
from vcinr_sci.data.holdout import tuning_split
from vcinr_sci.data.items import load_dataset
from vcinr_sci.model.artifact import load_artifact

REPO = Path(__file__).resolve().parents[1]
SUITE = ["ccsm", "ccsm-46x90", "hadcm3", "era5-uk", "ccsm-ts", "ostia"]
OUT = REPO / "out" / "basis-fit-suite"


def compare(name: str) -> str:
    models, seconds = {}, {}
    for how in ("exact", "streamed"):
        cfg = load_config(REPO / "configs" / f"suite-{name}.yaml", {
            "model.kind": "linear", "basis.fit": how,
            "train.artifact_dir": str(OUT / "artifacts"), "train.storage_path": str(OUT / "runs")})
        t0 = time.perf_counter()
        models[how] = load_artifact(fit_basis.fit(cfg))
        seconds[how] = time.perf_counter() - t0
    exact, streamed = models["exact"], models["streamed"]
    data = load_dataset(exact.config.data, exact.normaliser)
    tune = data.items("val", tuning_split(data.split, data.source).tune)
    score = {"chunk_items": exact.config.compress.chunk_fields, "predict": exact.config.basis.predict}
    scored = {how: fit_basis.Scored(m.basis, tune, **score) for how, m in models.items()}
    levels = []
    for q, level in exact.metrics["levels"].items():
        step = level["step"]
        psnr = {how: s.psnr(step) for how, s in scored.items()}
        bpv = {how: s.bits_per_value(s.coder(step)) for how, s in scored.items()}
        levels.append((q, level["target_psnr"], psnr, bpv))
    worst = max(abs(p["streamed"] - p["exact"]) for _, _, p, _ in levels)
    cells = " ".join(f"{t:g}: {p['exact']:.2f} / {p['streamed'] - p['exact']:+.3f} ({b['streamed'] / b['exact'] - 1:+.1%})"
                     for _, t, p, b in levels)
    train = len(data.items("train", tuning_split(data.split, data.source).train))
    return (f"| {name} | {train} x {exact.basis.points} | {exact.basis.num_components} / {streamed.basis.num_components} "
            f"| {exact.metrics['test_psnr']:.3f} / {streamed.metrics['test_psnr'] - exact.metrics['test_psnr']:+.4f} "
            f"| {worst:.4f} | {cells} | {seconds['exact']:.0f} / {seconds['streamed']:.0f} |")


def main(names: list[str]) -> int:
    print("\n| dataset | training items x points | components exact / streamed | test PSNR exact / streamed - exact (dB, "
          "unquantised) | max abs PSNR difference over the levels (dB) | per level, target: exact PSNR / streamed - "
          "exact (bits streamed / exact - 1) | fit seconds exact / streamed |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for name in names or SUITE:
        print(compare(name), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
