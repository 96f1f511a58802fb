"""``vcinr bench scale``: does the compress pipeline's memory stay flat as the data grows,
and how does its throughput scale with Ray Data actors?

The config's fields (e.g. the 660 CCSM TREFHT fields of ``configs/suite-ccsm.yaml``) are
tiled along a new ``time`` dim, 1x and 8x by default (copy k holds the same fields in an
order rotated by k, so no two copies' chunks are equal), into netCDF-4 files in a
temporary folder (one HDF5 chunk per field, as ERA5 downloads are). Each file is
compressed by the real pipeline, ``python -m pipelines.compress``, in a fresh process
whose embedded Ray gets a small object store (``--object-store-mb``, through Ray's
``RAY_DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES``; the size the raylet was started with is
read back from its command line). A thread samples the resident set size (RSS) of
every process in that job's process tree (the driver, Ray's GCS server and raylet,
the chunk-writing actors, Ray's other workers and agents) every ``--interval`` seconds;
the table gives each kind's peak RSS and peak anonymous RSS (RSS less file-backed and
shared-memory pages: the object store's and the libraries' pages are in RSS only).

Throughput: values compressed per second of the whole job (start-up, model load and the
final digests included), and in the steady state: the chunks after the first over the
time between the driver's first and last per-chunk line. The actor rows run the largest
size (``--actors-at``) with 1, 2, ... actors (one CPU each); efficiency = rate(n) / (n x
rate(1)), steady rates. Last, the codec alone (``VCINRCodec`` in this process, one
thread, the same chunks): the encode and decode rates per core behind the README's cost
model.

    vcinr bench scale --config configs/suite-ccsm.yaml --set model.kind=linear
    vcinr bench scale --config configs/tiny.yaml --model ARTIFACT --factors 1 --actors 1

The machine's load average is printed with every row: on a shared machine the rates
depend on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vcinr_sci.bench.candidates import Candidate
from vcinr_sci.bench.measure import run_candidate
from vcinr_sci.bench.output import write_json
from vcinr_sci.config import Config, load_config, parse_overrides
from vcinr_sci.errors import UsageError

OBJECT_STORE_ENV = "RAY_DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES"  # Ray's cap on its default object store size
KINDS = ("driver", "actors", "other Ray workers", "raylet", "gcs_server", "Ray agents")
_CHUNK_LINE = re.compile(r"^chunk \S+ ")
_STORE_FLAG = re.compile(r"--object_store_memory=(\d+)")


def process_kind(cmdline: list[str], name: str) -> str:
    """Which of :data:`KINDS` (less the driver) a process of a Ray job is, from its
    command line (Ray titles its workers ``ray::<actor or task>``)."""
    title = cmdline[0] if cmdline else name
    if title.startswith("ray::"):
        if "WriteChunks" in title:
            return "actors"
        return "Ray agents" if title.endswith("Agent") else "other Ray workers"
    if name in ("raylet", "gcs_server"):
        return name
    return "Ray agents"  # dashboard, autoscaler monitor, log monitor


@dataclass
class ProcessPeak:
    """One process's role and the peaks of its memory in that role (bytes)."""

    kind: str
    cmdline: str
    rss: int = 0
    anon: int = 0  # anonymous pages: the RSS less file-backed and shared-memory pages (Linux)


@dataclass
class TreeMemory:
    """Peak RSS of every process below (and including) ``root``, sampled by a thread.

    A process that exec()s starts a new record: between fork and exec a child still maps
    its parent's pages, and counting those would give e.g. the log monitor the driver's
    size. A Ray worker that retitles itself keeps its record, as the most specific kind it
    was seen as (an actor over an idle worker)."""

    root: int
    interval: float
    records: dict[int, ProcessPeak] = field(default_factory=dict)  # pid -> its record
    peak_total: int = 0  # the largest sum over all processes at one sample
    object_store_bytes: int | None = None  # as the raylet was started with
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "TreeMemory":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.root)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for p in procs:
                try:
                    mem = p.memory_info()
                    record = self._record(p)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                total += mem.rss
                record.rss = max(record.rss, mem.rss)
                record.anon = max(record.anon, mem.rss - getattr(mem, "shared", 0))
            self.peak_total = max(self.peak_total, total)
            self._stop.wait(self.interval)

    def _record(self, p) -> ProcessPeak:
        cmdline = p.cmdline()
        old = self.records.get(p.pid)
        if not cmdline and old is not None:  # exiting: /proc shows no command line, keep what it was
            return old
        line = " ".join(cmdline)
        kind = "driver" if p.pid == self.root else process_kind(cmdline, p.name())
        if old is None or (old.cmdline != line and not old.cmdline.startswith("ray::")):  # new, or exec'd
            old = self.records[p.pid] = ProcessPeak(kind, line)
        elif old.kind != "actors":  # retitled: once an actor, always counted as one
            old.kind, old.cmdline = kind, line
        if kind == "raylet" and self.object_store_bytes is None:
            found = next((m for m in map(_STORE_FLAG.match, cmdline) if m), None)
            self.object_store_bytes = int(found.group(1)) if found else None
        return old

    def by_kind(self) -> dict[str, dict[str, float]]:
        """Per kind: processes seen, the largest peak RSS and the largest peak of
        anonymous RSS among them (MB)."""
        out: dict[str, dict[str, float]] = {}
        for kind in KINDS:
            recs = [r for r in self.records.values() if r.kind == kind]
            out[kind] = {"processes": len(recs), "peak_rss_mb": max((r.rss for r in recs), default=0) / 1e6,
                         "peak_anon_mb": max((r.anon for r in recs), default=0) / 1e6}
        return out

    def processes(self) -> list[dict[str, Any]]:
        """Every process seen: pid, kind, command line (shortened), peaks (MB)."""
        return [{"pid": pid, "kind": r.kind, "cmdline": r.cmdline[:160], "peak_rss_mb": r.rss / 1e6,
                 "peak_anon_mb": r.anon / 1e6} for pid, r in self.records.items()]


def config_fields(cfg: Config) -> tuple[Any, np.ndarray]:
    """The config's variable (lazily) and its fields, loaded, as (fields, *grid) float32."""
    from vcinr_sci.data.sources import open_variable

    source = open_variable(cfg.data)
    grid = [source.sizes[d] for d in cfg.data.grid_dims]
    return source, np.asarray(source.values, np.float32).reshape(-1, *grid)


def write_tiled(cfg: Config, factor: int, path: Path) -> dict[str, Any]:
    """The config's fields tiled ``factor`` times along a new ``time`` dim into the
    netCDF-4 file ``path`` (copy k rotated by k fields; one HDF5 chunk per field), written
    copy by copy; returns its field count and grid."""
    import dask
    import dask.array
    import xarray as xr

    source, base = config_fields(cfg)
    grid_dims = list(cfg.data.grid_dims)
    grid = base.shape[1:]
    copies = [
        dask.array.from_delayed(dask.delayed(np.roll)(base, k, 0), base.shape, base.dtype) for k in range(factor)
    ]
    values = dask.array.concatenate(copies).rechunk((len(base), *grid))
    coords = {d: source[d] for d in grid_dims if d in source.coords}
    ds = xr.Dataset({cfg.data.variable: (("time", *grid_dims), values, source.attrs)}, coords=coords)
    encoding = {cfg.data.variable: {"chunksizes": (1, *grid), "_FillValue": None}}
    with dask.config.set(scheduler="synchronous"):
        ds.to_netcdf(path, engine="netcdf4", encoding=encoding)
    return {"fields": len(base) * factor, "grid": list(grid), "values": int(values.size)}


def job_config(cfg: Config, source: Path, store: Path, actors: int, chunk_fields: int, quality: str) -> dict:
    """The compress job's config: the bench config, reading ``source`` into ``store``."""
    raw = cfg.to_dict()
    raw["data"] = dict(raw["data"], paths=[str(source)], concat_dim=None, isel={}, split_dim="time")
    raw["compress"] = dict(raw["compress"], paths=[], variables=[], output=str(store), chunk_fields=chunk_fields,
                           quality=quality, num_actors=actors, cpus_per_actor=1, use_gpu=False)
    return raw


def run_job(config: dict, workdir: Path, model: Path, object_store_bytes: int, interval: float) -> dict[str, Any]:
    """``python -m pipelines.compress`` on ``config`` in a fresh process (its own Ray),
    its process tree's memory sampled; the wall time, the steady-state span, the peaks."""
    path = workdir / f"job-{Path(config['compress']['output']).stem}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, **{OBJECT_STORE_ENV: str(object_store_bytes)})
    env.pop("RAY_ADDRESS", None)  # a Ray of its own, never a cluster this shell points at
    cmd = [sys.executable, "-m", "pipelines.compress", "--config", str(path), "--model", str(model)]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    memory = TreeMemory(proc.pid, interval).start()
    chunk_times: list[float] = []
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if _CHUNK_LINE.match(line):
            chunk_times.append(time.perf_counter())
        tail = (tail + [line])[-40:]
    code = proc.wait()
    wall = time.perf_counter() - t0
    memory.stop()
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (status {code}):\n{''.join(tail)}")
    return {
        "wall_s": wall,
        "chunks": len(chunk_times),
        "steady_s": chunk_times[-1] - chunk_times[0] if len(chunk_times) > 1 else float("nan"),
        "load_avg_1min": [load_before, os.getloadavg()[0]],
        "object_store_mb": memory.object_store_bytes / 1e6 if memory.object_store_bytes else None,
        "peak_rss": memory.by_kind(),
        "peak_rss_all_mb": memory.peak_total / 1e6,
        "processes": memory.processes(),
    }


def codec_rates(model: Path, fields: np.ndarray, quality: str, chunk_fields: int) -> dict[str, Any]:
    """Encode and decode values per second of ``VCINRCodec`` alone, in this process, one
    thread (the codec's default), on ``fields`` in chunks of ``chunk_fields``."""
    from vcinr_sci.codec.numcodecs import VCINRCodec
    from vcinr_sci.model.registry import resolve_model

    codec = VCINRCodec.for_model(resolve_model(model), quality)
    candidate = Candidate("vcinr", quality, [codec], chunk_fields, "vcinr")
    load_before = os.getloadavg()[0]
    run_candidate(candidate, fields[:chunk_fields])  # warm-up: model load, first calls
    _, nbytes, _, t_enc, t_dec = run_candidate(candidate, fields)
    return {"values": int(fields.size), "encode_values_per_s": fields.size / t_enc,
            "decode_values_per_s": fields.size / t_dec, "bits_per_value": 8 * nbytes / fields.size,
            "load_avg_1min": [load_before, os.getloadavg()[0]]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vcinr bench scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="run config YAML: its data are tiled, its model compresses them")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. model.kind=linear (repeatable)")
    p.add_argument("--model", help="model artifact folder or hash (default: the config's newest with coders)")
    p.add_argument("--quality", help="coder level (default: compress.quality, else the model's first)")
    p.add_argument("--factors", type=int, nargs="+", default=[1, 8], help="data sizes, as multiples of the config's fields")
    p.add_argument("--actors", type=int, nargs="+", default=[1, 2], help="actor counts, one CPU each (default 1 2)")
    p.add_argument("--actors-at", type=int, help="the size (a factor) the actor counts run on (default: the largest)")
    p.add_argument("--chunk-fields", type=int, help="fields per chunk (default: compress.chunk_fields)")
    p.add_argument("--object-store-mb", type=int, default=100, help="the jobs' Ray object store (default 100; Ray's minimum is 75)")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between memory samples (default 0.1)")
    p.add_argument("--workdir", help="folder for the tiled files and stores (default: a new temporary folder, removed after)")
    p.add_argument("--json", metavar="PATH", help="also write the rows and settings as JSON")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from vcinr_sci.model.registry import resolve_model
    from vcinr_sci.model.selection import select_artifact

    cfg = load_config(args.config, parse_overrides(args.overrides))
    if min(args.factors) < 1 or min(args.actors) < 1:
        raise UsageError("vcinr bench scale: --factors and --actors must be at least 1")
    model = select_artifact(cfg, args.model, with_coders=True, require_coders=True, quality=args.quality).resolve()
    art = resolve_model(model).artifact
    quality = args.quality or cfg.compress.quality or art.quality_levels[0]
    if quality not in art.quality_levels:
        raise UsageError(f"vcinr bench scale: model {art.hash[:16]} has no quality level {quality!r}; it has {art.quality_levels}")
    chunk_fields = args.chunk_fields or cfg.compress.chunk_fields
    factors = sorted(set(args.factors))
    at = args.actors_at or factors[-1]
    if at not in factors:
        raise UsageError(f"vcinr bench scale: --actors-at {at} is not one of --factors {factors}")
    runs = [(f, 1) for f in factors] + [(at, a) for a in sorted(set(args.actors)) if a != 1]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vcinr-bench-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        sources = {}
        for f in factors:
            sources[f] = (workdir / f"fields-{f}x.nc", write_tiled(cfg, f, workdir / f"fields-{f}x.nc"))
        for factor, actors in runs:
            source, info = sources[factor]
            store = workdir / f"store-{factor}x-{actors}a.zarr"
            config = job_config(cfg, source, store, actors, chunk_fields, quality)
            job = run_job(config, workdir, model, args.object_store_mb * 2**20, args.interval)
            steady_values = info["values"] * (job["chunks"] - 1) / max(job["chunks"], 1)
            rows.append({"factor": factor, "actors": actors, **info, **job,
                         "values_per_s": info["values"] / job["wall_s"],
                         "steady_values_per_s": steady_values / job["steady_s"],
                         "data_mb": info["values"] * 4 / 1e6})
            shutil.rmtree(store, ignore_errors=True)
        codec = codec_rates(model, config_fields(cfg)[1], quality, chunk_fields)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    base = next(r for r in rows if r["factor"] == at and r["actors"] == 1)
    for r in rows:  # parallel efficiency, among the runs of one size
        same = r["factor"] == at
        r["efficiency"] = r["steady_values_per_s"] / (r["actors"] * base["steady_values_per_s"]) if same else None
    return {"benchmark": "scale", "model": art.hash, "model_kind": cfg.model.kind, "quality": quality,
            "chunk_fields": chunk_fields, "cpus": os.cpu_count(), "object_store_mb_asked": args.object_store_mb,
            "rows": rows, "codec": codec, "config": dataclasses.asdict(cfg)}


def format_tables(out: dict[str, Any]) -> str:
    """The memory and throughput table per run, and the codec's rates alone."""
    head = ["data", "fields", "MB", "actors", "wall s", "values/s (whole job)", "values/s (steady)", "efficiency",
            *[f"peak RSS / anon MB: {k}" for k in KINDS], "all processes", "load avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in out["rows"]:
        kinds = [f"{m['peak_rss_mb']:.0f} / {m['peak_anon_mb']:.0f} ({m['processes']})" for m in map(r["peak_rss"].get, KINDS)]
        lines.append(
            f"| {r['factor']}x | {r['fields']:,} | {r['data_mb']:.0f} | {r['actors']} | {r['wall_s']:.1f} | "
            f"{r['values_per_s']:.3g} | {r['steady_values_per_s']:.3g} | {_or_dash(r['efficiency'])} | {' | '.join(kinds)} | "
            f"{r['peak_rss_all_mb']:.0f} | {r['load_avg_1min'][0]:.1f}-{r['load_avg_1min'][1]:.1f} |"
        )
    c = out["codec"]
    lines += [
        "",
        "| codec alone, one thread | values/s | MB/s (float32) | bits/value | load avg |",
        "|---|---|---|---|---|",
        f"| encode | {c['encode_values_per_s']:.3g} | {c['encode_values_per_s'] * 4e-6:.3g} | {c['bits_per_value']:.3g} | "
        f"{c['load_avg_1min'][0]:.1f}-{c['load_avg_1min'][1]:.1f} |",
        f"| decode | {c['decode_values_per_s']:.3g} | {c['decode_values_per_s'] * 4e-6:.3g} | | |",
    ]
    return "\n".join(lines)


def _or_dash(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = run(args)
    store = {r["object_store_mb"] for r in out["rows"]}
    print(f"model {out['model'][:16]} ({out['model_kind']}), quality {out['quality']}, {out['chunk_fields']} fields a chunk; "
          f"{out['cpus']} CPUs; Ray object store {', '.join(f'{s:.0f}' if s else '?' for s in store)} MB per job")
    print(format_tables(out))
    print("\nPeak RSS per kind: the largest of its processes (their count in brackets); RSS counts shared pages, "
          "anon only the process's anonymous pages (RSS less file-backed and shared memory). "
          "Steady: the chunks after the first over the span of the driver's per-chunk lines; efficiency = "
          "rate(n actors) / (n x rate(1 actor)) on the same data.")
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
