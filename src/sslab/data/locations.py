"""Where datasets are found and their decoded copies cached.

``data_dir()``: ``--data-dir`` / ``root`` > ``$SSLAB_DATA`` > ``~/.cache/sslab/data``.
``cache_dir()``: ``$SSLAB_CACHE`` when set, else ``<data dir>/.sslab-cache`` when the data
directory exists and is writable, else ``~/.cache/sslab/cache``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def data_dir(override: str | Path | None = None) -> Path:
    """Where datasets are found and cached: ``override`` (a ``--data-dir`` flag) > ``$SSLAB_DATA``
    > ``~/.cache/sslab/data``."""
    if override is not None and str(override) != "":
        return Path(override).expanduser()
    env = os.environ.get("SSLAB_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "sslab" / "data"


def cache_dir(data_root: str | Path | None = None) -> Path:
    """Where decoded splits are cached: ``$SSLAB_CACHE`` > ``<data dir>/.sslab-cache`` when the
    data directory exists and is writable (has write permission bits; root's override does not
    count) > ``~/.cache/sslab/cache``. Not created here."""
    env = os.environ.get("SSLAB_CACHE")
    if env:
        return Path(env).expanduser()
    root = data_dir(data_root)
    if _writable(root) and (not (root / ".sslab-cache").exists() or _writable(root / ".sslab-cache")):
        return root / ".sslab-cache"
    return Path.home() / ".cache" / "sslab" / "cache"


def _writable(folder: Path) -> bool:
    """An existing folder we may write to. A folder with no write permission bits at all counts as
    read-only even for root (who ``os.access`` says may write anywhere): it was meant to be."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) and bool(mode & 0o222) and os.access(folder, os.W_OK | os.X_OK)
