"""What a reader lets a store decide. A store is untrusted input: by default a reader
follows no place the store names (a codec config's ``model_path``: a URL, a path outside
the store) and no symlink that leads out of a local store; ``$VCINR_TRUST_STORE_PATHS=1``
lets a store the user trusts do both. (The base floor: model lookup and the io helpers
both ask.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vcinr_sci.errors import ConfigError, StoreError

TRUST_STORE_PATHS_ENV = "VCINR_TRUST_STORE_PATHS"


def is_local_path(store: Any) -> bool:
    """True for a filesystem path (str or PathLike without a URL scheme)."""
    return isinstance(store, (str, os.PathLike)) and "://" not in os.fspath(store)


def trust_store_paths() -> bool:
    """Whether the user lets a store name places to read (``$VCINR_TRUST_STORE_PATHS``
    "1"; unset, empty or "0": no). Read on every call; any other value is a
    :class:`ConfigError`, not a guess."""
    value = os.environ.get(TRUST_STORE_PATHS_ENV, "")
    if value not in ("", "0", "1"):
        raise ConfigError(f"${TRUST_STORE_PATHS_ENV} must be 1 (trust) or 0 (the default), got {value[:40]!r}")
    return value == "1"


def escaping_links(root: str | os.PathLike) -> list[str]:
    """The symlinks under the folder ``root`` (paths relative to it) whose target lies
    outside it. Reads directory entries only (no file is opened, no link followed)."""
    base = Path(root).resolve()
    found, folders = [], [base]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                path = Path(entry.path)
                if entry.is_symlink():
                    if not path.resolve().is_relative_to(base):
                        found.append(str(path.relative_to(base)))
                elif entry.is_dir(follow_symlinks=False):
                    folders.append(path)
    return sorted(found)


def check_store_links(store: Any) -> None:
    """:class:`StoreError` if the local store ``store`` holds a symlink out of itself
    (unless :func:`trust_store_paths`): zarr would read what it points at as the
    store's own bytes. Other stores have no links to check."""
    if not is_local_path(store) or not Path(store).is_dir() or trust_store_paths():
        return
    links = escaping_links(store)
    if links:
        raise StoreError(
            f"{store}: {len(links)} symlink(s) lead out of the store, e.g. {links[:3]}; a reader does not follow "
            f"them (copy the store with its links resolved, or set {TRUST_STORE_PATHS_ENV}=1 for a store you trust)"
        )
