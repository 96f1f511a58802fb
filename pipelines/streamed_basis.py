"""The streamed linear basis fit (``basis.fit: streamed``) on Ray Data: every pass of
:class:`~vcinr_sci.model.basis_fit.StreamedBasisFit` as a map over blocks of training items.

A pass's blocks (``basis.block_items`` items each) go to at most ``basis.num_workers``
Ray Data tasks at once. A task's worker opens the data lazily (the driver's normaliser,
no field cache; kept open for the next block and pass), takes the pass's inputs from the
object store (the probe: one copy a node, shared) and returns the block's sums, reading
``_READ_BYTES`` of fields at a time; the driver adds them in block order (Ray Data keeps
it). Memory per worker is the formula of :mod:`vcinr_sci.model.basis_fit` and does not
grow with the number of items.

A killed worker: Ray Data reruns its block on another (tasks are retried without
limit). A killed driver: each finished pass's sums are in the run folder,
``train.storage_path/basis-fit/<key>/NN-<pass>.npz`` (written atomically, read without
pickle), and a rerun takes them instead of reading the data again. The key hashes all
the sums depend on: the data section, the data files' sizes and modification times, the
normaliser, the training fields, the fit's settings and the seed; another config or
changed data gets another folder.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import resource
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.ray_setup import ensure_ray, run_task_pool
from vcinr_sci.atomic import atomic_write_bytes
from vcinr_sci.config import Config, DataConfig
from vcinr_sci.data.holdout import tuning_split
from vcinr_sci.data.items import Dataset, ItemSet, load_dataset
from vcinr_sci.data.normalise import Normaliser
from vcinr_sci.data.sources import resolve_paths
from vcinr_sci.errors import ArtifactError
from vcinr_sci.model.basis import LinearBasis
from vcinr_sci.model.basis_fit import BlockPass, StreamedBasisFit, add_sums, item_blocks

_READ_BYTES = 64 * 2**20  # float32 field values a worker reads at a time
_FORMAT = 1  # of the saved sums: part of the run folder's key


def lazy_training_items(data: Dataset) -> ItemSet:
    """The items ``pipelines.fit_basis`` fits on (the training part less any held-out
    tuning block), each read from the files when asked for (no cache)."""
    part = tuning_split(data.split, data.source)
    return dataclasses.replace(data, cfg=dataclasses.replace(data.cfg, cache_limit_mb=0)).items("train", part.train)


# In a Ray worker: the training items of the fit it last served, for its next block
# (opening the data costs more than a small block; a pass's inputs are not kept: a
# worker between passes holds nothing of them).
_OPEN: dict[str, ItemSet] = {}


def block_sums(batch: dict[str, np.ndarray], *, key: str, data: DataConfig, normaliser: Normaliser, name: str,
               inputs: dict) -> dict[str, np.ndarray]:
    """Ray Data function: one pass's sums of one block of training items, read
    ``_READ_BYTES`` of fields at a time."""
    import ray

    if key not in _OPEN:
        _OPEN.clear()
        _OPEN[key] = lazy_training_items(load_dataset(data, normaliser))
    items = _OPEN[key]
    work = BlockPass(name, {k: ray.get(ref) for k, ref in inputs.items()})
    total = None
    for chunk in item_blocks(np.asarray(batch["items"][0], np.int64), max(1, _READ_BYTES // (4 * items.grid.size))):
        total = add_sums(name, total, work.sums(items.values(chunk)))  # at most that many fields a read
    assert total is not None  # blocks are never empty
    return {"block": np.asarray(batch["block"]), "memory": _memory()[None], **{k: v[None] for k, v in total.items()}}


def _memory() -> np.ndarray:
    """This process's peak RSS and its private (anonymous) RSS now, bytes (Linux). The
    peak counts the pages of Ray's object store it touched (the probe it reads, the sums
    it hands back): shared with the node's other workers, and reused from block to block
    but not all at once."""
    private = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                private = int(line.split()[1]) * 1024
    return np.array([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, private])


@dataclass(frozen=True)
class StreamedFit:
    basis: LinearBasis
    passes_run: int  # passes this call summed on Ray (the others' sums were in the run folder)
    # bytes, over the workers that summed a block (0: none did): the largest peak RSS, and
    # the largest private RSS at the end of a block (the block's sums still held)
    worker_peak_rss: int
    worker_private_rss: int


def fit_streamed(cfg: Config, data: Dataset, say=None) -> StreamedFit:
    """The basis of ``cfg`` fitted pass by pass on Ray, each finished pass's sums kept
    in (and on a rerun taken from) :func:`run_folder`; progress lines go to ``say``
    (default: printed)."""
    say = say or functools.partial(print, flush=True)
    b = cfg.basis
    items = lazy_training_items(data)
    fit = StreamedBasisFit(len(items), items.points_per_item, b.components, b.max_fit_items, b.oversample,
                           b.power_iterations, cfg.train.seed)
    folder = run_folder(cfg, data, items)
    say(f"  streamed fit: {len(fit.passes)} passes over blocks of {b.block_items} items; sums in {folder}")
    run, memory = 0, np.zeros(2, np.int64)
    while (name := fit.next_pass) is not None:
        path = folder / f"{fit.done:02d}-{name}.npz"
        if path.is_file():
            try:
                fit.finish(load_sums(path))
            except ArtifactError as e:
                raise ArtifactError(f"{path}: {e}; delete it to run that pass again") from e
            say(f"  pass {name}: sums taken from {path.name}")
            continue
        read = len(fit.items())
        total, pass_memory = _run_pass(cfg, data, fit, name, folder.name)
        fit.finish(total)  # checked before it is kept
        save_sums(path, total)
        run, memory = run + 1, np.maximum(memory, pass_memory)
        say(f"  pass {name}: {read} items summed; a worker's peak RSS {pass_memory[0] / 2**20:.0f} MiB, "
            f"private at a block's end {pass_memory[1] / 2**20:.0f} MiB")
    return StreamedFit(fit.basis(), run, int(memory[0]), int(memory[1]))


def _run_pass(cfg: Config, data: Dataset, fit: StreamedBasisFit, name: str, key: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The sums of pass ``name`` over all its blocks, added in block order, and the
    largest memory figures (:func:`_memory`) of a worker that summed one."""
    import ray

    blocks = item_blocks(fit.items(), cfg.basis.block_items)
    tasks = [{"block": i, "items": block} for i, block in enumerate(blocks)]
    ensure_ray(cfg.basis.num_workers * cfg.basis.cpus_per_worker)
    # the inputs go to the object store once: the workers of a node share one copy
    refs = {k: ray.put(v) for k, v in fit.inputs().items()}
    kwargs = {"key": key, "data": data.cfg, "normaliser": data.normaliser, "name": name, "inputs": refs}
    rows = run_task_pool(block_sums, tasks, kwargs, num_tasks=cfg.basis.num_workers, cpus_per_task=cfg.basis.cpus_per_worker)
    total, memory = None, np.zeros(2, np.int64)
    for i, row in enumerate(rows):
        if int(row["block"]) != i:
            raise RuntimeError(f"pass {name}: block {int(row['block'])} came back where block {i} was due")
        memory = np.maximum(memory, row["memory"])
        total = add_sums(name, total, {k: np.asarray(v) for k, v in row.items() if k not in ("block", "memory")})
    assert total is not None
    return total, memory


def run_folder(cfg: Config, data: Dataset, items: ItemSet) -> Path:
    """Where the sums of this fit are kept: named by a hash of all they depend on."""
    b = cfg.basis
    files = []
    for p in resolve_paths(data.cfg.paths):
        st = os.stat(p)
        files.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    mean_field = data.normaliser.mean_field
    key = {
        "format": _FORMAT,
        "data": dataclasses.asdict(data.cfg),
        "files": files,
        "normaliser": [data.normaliser.lo, data.normaliser.hi,
                       hashlib.sha256(mean_field.tobytes()).hexdigest() if mean_field is not None else None],
        "train_fields": hashlib.sha256(np.ascontiguousarray(items.fields, np.int64).tobytes()).hexdigest(),
        "items": [len(items), items.points_per_item],
        "fit": [b.components, b.max_fit_items, b.oversample, b.power_iterations, b.block_items, cfg.train.seed],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(cfg.train.storage_path) / "basis-fit" / digest


def save_sums(path: Path, sums: dict[str, np.ndarray]) -> None:
    """``sums`` as an ``.npz`` file, written atomically."""
    buf = io.BytesIO()
    np.savez(buf, **sums)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def load_sums(path: Path) -> dict[str, np.ndarray]:
    """Sums saved by :func:`save_sums` (numeric arrays only: no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ArtifactError(f"unreadable saved sums ({e})") from e
