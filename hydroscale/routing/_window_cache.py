"""Fitted kernel windows kept on disk between runs.

``window="auto"`` fits the window by one float64 aggregation of every in-cluster path kernel at
a bound (:meth:`~hydroscale.routing.StagedRouter.auto_window`): 3.6 to 8.6 s of a 3M-reach
run's set-up on an H200.  The fit is a pure function of the clusters, the parameters of their
reaches, the IRF, the sub-steps, the tolerance and the cap, so a later run of the same network
and parameters (the next day's forecast, a second benchmark run, another worker of a cluster
that shares a home directory) reads it back instead.

A window is stored under a sha256 digest of all of those (the parameters' float64 bytes
included) and of hydroscale's version, one small JSON file per key in ``windows/`` under
``$HYDROSCALE_CACHE_DIR`` (``off`` turns the cache off), else ``$XDG_CACHE_HOME/hydroscale``,
else ``~/.cache/hydroscale``.  Only the catalogue's IRFs are cached (a user-registered IRF of
the same name may change between runs).  A cache that cannot be read or written is skipped
with a debug log: the window is then fitted as without it.  Delete the folder to clear it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .._digest import digest

__all__ = ["CACHE_ENV_VAR", "cache_dir", "load_window", "store_window", "window_key"]

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "HYDROSCALE_CACHE_DIR"
_FORMAT = 1


def cache_dir() -> Path | None:
    """The folder of hydroscale's on-disk caches, or None when turned off."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hydroscale"


def window_key(*parts: Any) -> str:
    """The key of a fitted window: a digest of ``parts`` (arrays digested by content, other
    values by their ``repr``), the cache format and hydroscale's version."""
    arrays, facts = [], [f"format={_FORMAT}", f"version={_version()}"]
    for p in parts:
        if hasattr(p, "shape") and hasattr(p, "dtype"):
            arrays.append(p)
        else:
            facts.append(repr(p))
    import numpy as np

    return digest(np.frombuffer("\n".join(facts).encode(), dtype=np.uint8), *arrays)


def _version() -> str:
    """hydroscale's installed version (the facade's ``__version__`` sits above this layer)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hydroscale")
    except PackageNotFoundError:
        return "unknown"


def _path(key: str) -> Path | None:
    root = cache_dir()
    return None if root is None else root / "windows" / f"{key}.json"


def load_window(key: str) -> int | None:
    """The window stored under ``key``, or None."""
    path = _path(key)
    if path is None or not path.is_file():
        return None
    try:
        return int(json.loads(path.read_text())["window"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.debug("window cache %s unreadable (%s): fitting again", path, err)
        return None


def store_window(key: str, window: int, **facts: Any) -> None:
    """Store ``window`` under ``key`` (written whole, then renamed into place)."""
    path = _path(key)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"window": int(window), **facts}, default=str))
        os.replace(tmp, path)
    except OSError as err:
        logger.debug("window cache %s not written (%s)", path, err)
