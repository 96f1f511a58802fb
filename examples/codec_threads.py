"""How long the codec takes for one chunk with 1 and 2 torch threads (``VCINR_NUM_THREADS``),
for one caller and for two chunks coded at once in two threads (as Zarr and dask do).

    python examples/codec_threads.py [--config configs/demo.yaml] [--reps 30]

The model is the config's INR after two outer steps with a 6-bit uniform coder (speed
does not depend on the weights); chunks are 8 of the config's fields. The settings are
timed round-robin, so load from other processes falls on each alike; medians in ms.
Run ``uptime`` alongside: on a shared machine the load decides most of the answer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from vcinr_sci.bench.residual import held_out_fields
from vcinr_sci.codec.numcodecs import VCINRCodec
from vcinr_sci.config import load_config
from vcinr_sci.model.artifact import save_artifact
from vcinr_sci.model.training import add_uniform_coder, train_in_process
from vcinr_sci.threads import THREADS_ENV

THREADS = (1, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--reps", type=int, default=30, help="decode repetitions (encodes: a quarter)")
    args = p.parse_args()
    artifact, items = train_in_process(load_config(args.config), steps=2)
    add_uniform_coder(artifact, items, bits=6)
    codec = VCINRCodec.for_model(save_artifact(artifact, tempfile.mkdtemp(prefix="vcinr-threads-")), "u6")
    fields = held_out_fields(artifact, 16)
    chunks = [fields[:8].copy(), fields[8:16].copy()]
    coded = [codec.encode(c) for c in chunks]
    pool = ThreadPoolExecutor(2)
    work = {
        "decode 1 chunk": (lambda: codec.decode(coded[0]), args.reps),
        "decode 2 chunks in 2 threads": (lambda: list(pool.map(codec.decode, coded)), args.reps),
        "encode 1 chunk": (lambda: codec.encode(chunks[0]), max(3, args.reps // 4)),
        "encode 2 chunks in 2 threads": (lambda: list(pool.map(codec.encode, chunks)), max(3, args.reps // 4)),
    }
    times = {(w, n): [] for w in work for n in THREADS}
    for rep in range(args.reps + 1):  # the first round warms up
        for what, (fn, reps) in work.items():
            for n in THREADS if rep <= reps else ():
                os.environ[THREADS_ENV] = str(n)
                start = time.perf_counter()
                fn()
                if rep:
                    times[(what, n)].append(time.perf_counter() - start)
    print(f"| {args.config}, 8 fields a chunk | " + " | ".join(f"{n} thread(s), ms" for n in THREADS) + " | runs |")
    print("|---|" + "---|" * (len(THREADS) + 1))
    for what in work:
        cells = " | ".join(f"{statistics.median(times[(what, n)]) * 1e3:.1f}" for n in THREADS)
        print(f"| {what} | {cells} | {len(times[(what, THREADS[0])])} |")


if __name__ == "__main__":
    main()
