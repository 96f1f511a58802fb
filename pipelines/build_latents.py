"""Encode every item of a dataset into its latent, on Ray Data, as latent shards.

    python -m pipelines.build_latents --config configs/rd-ccsm.yaml [--model HASH_OR_PATH]

The work is a list of shards (``latents.shard_fields`` fields of one split part each).
Ray Data maps them over a pool of ``latents.num_actors`` actors (one GPU each when
``latents.use_gpu`` and the cluster has GPUs, else ``latents.cpus_per_actor`` CPUs);
each actor loads the model artifact once, reads only the fields of the shard it is
given, adapts them (``latents.inner_steps`` MetaSGD steps) and writes the shard
atomically (:mod:`vcinr_sci.model.latents`). A rerun plans only the shards not yet complete,
so a killed run resumes where it stopped and a finished one does nothing. Locally it
starts an embedded Ray; under ``ray job submit`` it joins the cluster (the latents
folder must then be on storage every node sees).

The model is ``--model`` (an artifact folder, or a hash looked up in
``train.artifact_dir`` and ``$VCINR_MODEL_PATH``), or else the newest artifact in
``train.artifact_dir`` meta-trained from this config's data, model and meta sections
(one without coders first). The latents folder is named by the INR's fingerprint
(:func:`vcinr_sci.model.latents.inr_key`), so artifacts that differ only in their coders share it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.cli_args import config_parser, load
from pipelines.ray_setup import run_actor_pool, use_assigned_cpus
from vcinr_sci.config import Config
from vcinr_sci.data.grids import Patcher
from vcinr_sci.errors import ArtifactError
from vcinr_sci.metrics import psnr_from_mse
from vcinr_sci.model.artifact import load_artifact
from vcinr_sci.model.latents import (
    complete_shards,
    inr_key,
    latents_dir,
    missing_shards,
    plan_shards,
    remove_temp_files,
    shard_path,
    shard_table,
    write_manifest,
    write_shard,
)
from vcinr_sci.model.meta import masked_mse
from vcinr_sci.model.selection import select_artifact


class EncodeShards:
    """Ray Data actor: loads the artifact once, then encodes and writes whole shards."""

    def __init__(self, artifact_path: str, root: str, inner_steps: int, batch_size: int, use_gpu: bool):
        from vcinr_sci.data.items import load_dataset

        use_assigned_cpus()
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.artifact = load_artifact(artifact_path)
        self.model = self.artifact.model.to(self.device).eval()
        self.model.requires_grad_(False)
        # Opening is lazy: only the fields of a shard are read, when it is encoded.
        self.data = load_dataset(self.artifact.config.data, self.artifact.normaliser, self.artifact.linear_part())
        self.root, self.inner_steps, self.batch_size = Path(root), inner_steps, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list] = {"part": [], "shard": [], "rows": [], "psnr": [], "seconds": [], "skipped": []}
        for part, index, start, stop in zip(batch["part"], batch["shard"], batch["start"], batch["stop"]):
            t0 = time.perf_counter()
            part, index = str(part), int(index)
            skipped = index in complete_shards(self.root, part)  # a retried task after a late failure
            psnr = self._encode(part, index, int(start), int(stop)) if not skipped else np.array([np.nan])
            for k, v in zip(out, (part, index, int(stop - start), float(np.mean(psnr)), time.perf_counter() - t0, skipped)):
                out[k].append(v)
        return {k: np.asarray(v) for k, v in out.items()}

    def _encode(self, part: str, index: int, start: int, stop: int) -> np.ndarray:
        positions = np.arange(start, stop)
        fields = getattr(self.data.split, part)[positions]
        items = self.data.items(part, fields=fields)
        n, per = len(items), items.num_patches
        phis, psnrs = [], []
        for s in range(0, n, self.batch_size):
            coords, values, mask = (t.to(self.device) for t in items.batch(np.arange(s, min(s + self.batch_size, n))))
            phi = self.model.adapt(coords, values, mask, self.inner_steps)
            mse = masked_mse(self.model.decode(coords, phi), values, mask).double()
            phis.append(phi.float().cpu().numpy())
            psnrs.append(psnr_from_mse(mse.clamp_min(1e-20)).cpu().numpy())
        local = np.arange(n)
        field_pos, patch = np.divmod(local, per)
        field = fields[field_pos]
        cfg = self.artifact.config
        table = shard_table(
            np.concatenate(phis),
            np.concatenate(psnrs),
            dataset=cfg.name,
            variable=cfg.data.variable,
            part=part,
            part_item=start * per + local,
            field=field,
            patch=patch,
            item=field * per + patch,
            keys=[self.data.source.key(int(f)) | ({"patch": int(p)} if per > 1 else {}) for f, p in zip(field, patch)],
        )
        write_shard(shard_path(self.root, part, index), table)
        return np.concatenate(psnrs)


@dataclass
class BuildSummary:
    root: Path
    model_hash: str
    written: int  # shards written by this run
    skipped: int  # shards already complete before it
    seconds: float


def build(cfg: Config, model: str | None = None, quiet: bool = False) -> BuildSummary:
    """Encode the missing shards of ``cfg.latents.parts``; returns what was done."""

    t0 = time.perf_counter()
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    lc = cfg.latents
    path = select_artifact(cfg, model)
    artifact = load_artifact(path)
    # Only the split is needed here (opening is lazy; no field is read by the driver).
    from vcinr_sci.data.items import load_dataset

    data = load_dataset(artifact.config.data, artifact.normaliser)
    if not data.split.matches(artifact.split):
        raise ArtifactError(f"the data split of {path} no longer matches its data (files changed?)")
    root = latents_dir(lc.output_dir, artifact, lc.inner_steps)
    num_patches = Patcher(data.grid.shape, tuple(data.cfg.patch_shape)).num_patches if data.cfg.patch_shape else 1
    parts = {p: len(getattr(data.split, p)) for p in lc.parts}
    write_manifest(
        root,
        {
            "inr_key": inr_key(artifact),
            "dataset": artifact.config.name,
            "variable": artifact.config.data.variable,
            "inner_steps": lc.inner_steps,
            "shard_fields": lc.shard_fields,
            "latent_dim": artifact.model.latent_dim,
            "num_patches": num_patches,
            "parts": parts,
        },
    )
    removed = remove_temp_files(root)
    tasks, total = [], 0
    for part, n in parts.items():
        total += len(plan_shards(n, lc.shard_fields))
        for index, start, stop in missing_shards(root, part, n, lc.shard_fields):
            tasks.append({"part": part, "shard": index, "start": start, "stop": stop})
    say(
        f"model {artifact.hash[:16]} (INR {root.name}) -> {root}: {total} shards in {sorted(parts)}, {total - len(tasks)} complete, "
        f"{len(tasks)} to encode" + (f" ({removed} stale temporary file(s) removed)" if removed else "")
    )
    if not tasks:
        return BuildSummary(root, artifact.hash, 0, total, time.perf_counter() - t0)

    rows = run_actor_pool(
        EncodeShards,
        tasks,
        {
            "artifact_path": str(Path(path).resolve()),
            "root": str(root.resolve()),
            "inner_steps": lc.inner_steps,
            "batch_size": lc.batch_size,
        },
        num_actors=lc.num_actors,
        cpus_per_actor=lc.cpus_per_actor,
        want_gpu=lc.use_gpu,
        section="latents",
        say=say,
    )
    written = 0
    for row in rows:
        written += not row["skipped"]
        note = "already complete" if row["skipped"] else f"mean PSNR {row['psnr']:6.2f} dB  {row['seconds']:6.1f} s"
        say(f"shard {row['part']}/{int(row['shard']):05d}  {int(row['rows']):>5} fields  {note}  [{written}/{len(tasks)}]")
    # Every planned shard must now be complete (a failure raises out of iter_rows), and no
    # writer is left: what one on a lost node left half-written goes now, not next run.
    remove_temp_files(root)
    left = {p: missing_shards(root, p, n, lc.shard_fields) for p, n in parts.items()}
    if any(left.values()):
        raise RuntimeError(f"shards still missing after the build: {left}")
    seconds = time.perf_counter() - t0
    say(f"latents complete: {root} ({written} shards written, {total - len(tasks)} skipped, {seconds:.1f} s)")
    return BuildSummary(root, artifact.hash, written, total - len(tasks), seconds)


def main(argv: list[str] | None = None) -> int:
    p = config_parser("vcinr latents", __doc__, "YAML run config (its latents section; configs/*.yaml)", "latents.num_actors=4",
                      model_help="artifact folder or hash (default: the newest artifact of this config)")
    args = p.parse_args(argv)
    build(load(args), args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
