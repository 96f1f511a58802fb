"""Where the INR runs, and the float32 mode every decode runs in (so that no process-wide
speed setting changes what the bytes mean)."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

import torch

DEVICE_ENV = "VCINR_DEVICE"


def default_device() -> torch.device:
    """``$VCINR_DEVICE`` if set, else CUDA when present, else the CPU."""
    name = os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


_PRECISION_LOCK = threading.Lock()
_PRECISION_USERS = 0
_PRECISION_SAVED: str | None = None


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """Run CUDA float32 matmuls in IEEE float32 (no TF32) inside the block, restoring the
    caller's setting afterwards.

    Decoding must not depend on a process-wide speed setting: TF32 changes the INR's
    output by ~1e-3 of the normalisation range, far beyond the error-bounded mode's
    margin (:mod:`vcinr_sci.coding.bound`). torch 2.13 sets this with
    ``torch.backends.cuda.matmul.fp32_precision`` (``"ieee"``); the legacy
    ``allow_tf32`` / ``set_float32_matmul_precision`` flags map onto it, and reading
    them after the new one was set raises, so only the new one is touched. The INR
    has no convolutions, so cuDNN's flag does not apply. Chunks decode in several
    threads at once: the first to enter saves and sets, the last to leave restores.
    On the CPU the setting has no effect.
    """
    global _PRECISION_USERS, _PRECISION_SAVED
    matmul = torch.backends.cuda.matmul
    with _PRECISION_LOCK:
        if _PRECISION_USERS == 0:
            _PRECISION_SAVED = matmul.fp32_precision
            matmul.fp32_precision = "ieee"
        _PRECISION_USERS += 1
    try:
        yield
    finally:
        with _PRECISION_LOCK:
            _PRECISION_USERS -= 1
            if _PRECISION_USERS == 0:
                matmul.fp32_precision = _PRECISION_SAVED
