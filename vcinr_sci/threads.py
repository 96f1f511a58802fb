"""How many CPU threads torch uses inside the codec.

Zarr (format 3 runs each chunk's codec in a thread of its own pool) and dask (the
threaded scheduler) already code several chunks at once, one per core; torch's intra-op
pool, one thread per core by default, would start its own threads inside each of them
and oversubscribe the cores. So the codec runs every encode and decode with
``$VCINR_NUM_THREADS`` torch threads, by default :data:`DEFAULT_CODEC_THREADS` (1),
set in the calling thread and set back to the caller's count afterwards. Give more to a
caller that codes one large chunk at a time on an otherwise idle machine; ``0`` leaves
torch's own setting alone. The Ray pipelines' workers set it to the CPUs Ray gave them.

With the OpenMP backend of torch's CPU builds the count is per thread (a thread that has
not run torch yet starts from the count last set anywhere), so chunk threads coding at
once do not change each other's count, nor the caller's.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from vcinr_sci.errors import CodecError

THREADS_ENV = "VCINR_NUM_THREADS"
# One torch thread per chunk thread: measured on a 2-core machine, see the README's
# "Threads" section.
DEFAULT_CODEC_THREADS = 1


def codec_threads() -> int:
    """The torch threads of one codec call: ``$VCINR_NUM_THREADS``, else
    :data:`DEFAULT_CODEC_THREADS`; 0 means "leave torch's setting alone"."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return DEFAULT_CODEC_THREADS
    if not raw.isdecimal():
        raise CodecError(
            f"{THREADS_ENV}={raw!r}: give the number of torch threads per codec call (1 or more), "
            "or 0 to leave torch's setting alone"
        )
    return int(raw)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads in this thread (``n <= 0``: as
    they are), then restore the caller's count."""
    before = torch.get_num_threads()
    if n <= 0 or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
