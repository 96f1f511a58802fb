"""Write-to-a-temporary-then-rename, the one copy: whatever is written (a file, a Zarr
store, an artifact folder) appears under its final name whole or not at all, so a killed
writer leaves only a hidden temporary that nothing reads."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator


def temp_sibling(final: str | os.PathLike) -> Path:
    """A hidden, unique name beside ``final``: ``.<name>.tmp-<8 hex>``."""
    final = Path(final)
    return final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, temp: Path | None = None, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` to write to (a file or a folder); when the
    block ends without error it takes ``final``'s name (with ``overwrite``, whatever was
    there is removed first; without, an existing ``final`` raises ``OSError`` and is left
    alone). On any error, or after a failed rename, the temporary is removed."""
    final = Path(final)
    tmp = Path(temp) if temp is not None else temp_sibling(final)
    try:
        yield tmp
        if overwrite and final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        if not overwrite and final.exists():
            raise FileExistsError(f"{final} exists")
        os.replace(tmp, final)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, temp: Path | None = None, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (with ``fsync``, flushed to disk first)."""
    with atomic_path(path, temp=temp) as tmp, open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
