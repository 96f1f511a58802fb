"""Make model artifacts of what a GPU run brought back (``examples/train_gpu.py``).

    python -m pipelines.import_gpu_run RUN_DIR [--out out/gpu]

For each ``NAME.json`` beside a ``NAME.safetensors`` in ``RUN_DIR`` (the run's output
folder as it came back; it may be read-only):

1. the artifact, as ``pipelines.meta_train`` writes one
   (:func:`~pipelines.meta_train.write_artifact`: scored on the held-out test items here,
   on the CPU, content-hashed, into the config's ``train.artifact_dir``); its
   ``metrics.training`` says where it was trained (machine, torch, matmul precision,
   wall time, steps) and holds the whole curve, and names the copy of the run file;
2. ``OUT/NAME.yaml``, the config as trained (``meta.steps`` the steps run), and
   ``OUT/NAME.run.json``, the run file: the CPU stages take that config
   (``pipelines.build_latents``, ``pipelines.train_coder``, or ``pipelines.fit_hybrid``
   for a hybrid) and find the artifact by it;
3. the run's done file under ``train.storage_path``, as meta_train leaves one, so that
   ``pipelines.meta_train`` and ``pipelines.fit_hybrid`` with that config take the GPU's
   model as the finished meta-training instead of training again.

A hybrid's linear model is the one the bundle was made from (its path and hash are in the
run file): it must still be here, unchanged.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml
from safetensors.torch import load_file

from pipelines.meta_train import DONE_FILE, run_id, write_artifact
from vcinr_sci.config import Config
from vcinr_sci.errors import ArtifactError, UsageError
from vcinr_sci.model.artifact import load_artifact


def runs_in(run_dir: Path) -> list[str]:
    """Names of the finished runs in ``run_dir``: a run file beside its weights."""
    names = sorted(p.stem for p in run_dir.glob("*.json") if p.with_suffix(".safetensors").is_file())
    if not names:
        raise UsageError(f"{run_dir}: no NAME.json beside a NAME.safetensors (a GPU run's output folder)")
    return names


def curve_table(curve: list[dict]) -> str:
    """The curve as a markdown table."""

    def cell(value, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = ["| step | seconds | train PSNR (dB) | val PSNR (dB) | ms/step |", "|---|---|---|---|---|"]
    lines += [f"| {p['step']} | {p['elapsed_s']:.0f} | {cell(p['train_psnr'], '.2f')} | {cell(p['val_psnr'], '.2f')} | "
              f"{cell(p['step_ms'], '.1f')} |" for p in curve]
    return "\n".join(lines)


def import_run(run_dir: Path, name: str, out: Path) -> Path:
    """The artifact of run ``name`` in ``run_dir`` (see the module's steps); returns its folder."""
    doc = json.loads((run_dir / f"{name}.json").read_text())
    if not doc["run"].get("finished"):
        raise UsageError(f"{run_dir / name}.json: the run did not finish")
    cfg = Config.from_dict(doc["config"])
    linear = doc["bundle"].get("linear_artifact")
    if linear:  # the hybrid's linear model, exactly the one its INR learned the residuals of
        try:
            load_artifact(linear, doc["bundle"]["linear_hash"])
        except ArtifactError as e:
            raise UsageError(f"{name}: the linear model the bundle was made from is gone or changed: {e}") from None
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / f"{name}.json", out / f"{name}.run.json")
    (out / f"{name}.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    run = doc["run"]
    print(f"== {name}: {run['steps']} outer steps in {run['wall_s']:.0f} s on {run['machine']} ({run['matmul']})")
    print(curve_table(doc["curve"]))
    provenance = {"run": f"gpu-{run_id(cfg)}", "machine": run["machine"], "torch": run["torch"], "matmul": run["matmul"],
                  "wall_s": run["wall_s"], "steps": run["steps"], "bundle_sha256": doc["bundle"]["sha256"],
                  "run_file": str((out / f"{name}.run.json").resolve()), "curve": doc["curve"]}
    artifact = write_artifact(cfg, load_file(str(run_dir / f"{name}.safetensors")), provenance, Path(linear) if linear else None)
    last = doc["curve"][-1]
    done = Path(cfg.train.storage_path) / run_id(cfg) / DONE_FILE
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps({"artifact": str(artifact.resolve()), "checkpoint": None,
                                "metrics": {"step": run["steps"], "val_psnr": last["val_psnr"], "trained_on": run["machine"]}}))
    print(f"config as trained -> {out / f'{name}.yaml'}")
    return artifact


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.import_gpu_run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="the GPU run's output folder (examples/train_gpu.py --out)")
    p.add_argument("--out", type=Path, default=Path("out/gpu"), help="where the configs and run files go (default out/gpu)")
    args = p.parse_args(argv)
    for name in runs_in(args.run_dir):
        import_run(args.run_dir, name, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
