"""What every benchmark does the same way: choose its device, write its JSON, save its
figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vcinr_sci.errors import UsageError


def resolve_device(name: str, prog: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present); a GPU asked for
    where torch sees none is a clear error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"{prog}: --device {name} asked for, but torch sees no GPU")
    return torch.device(name)


def device_name(device: torch.device | str) -> str:
    """The GPU's name, or ``cpu`` with its torch thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented JSON at ``path`` (folders made; non-JSON values as strings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (benchmarks run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> None:
    """Lay out, save as PNG at ``path`` (folders made) and close ``fig``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
