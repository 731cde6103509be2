"""Lazy re-exports for a package ``__init__`` (PEP 562 module ``__getattr__``).

A package whose public names live in modules that import heavy libraries (torch, dask,
xarray) re-exports them lazily, so that ``import hydroscale.workflows`` (what the command
line needs to validate a workflow) costs only the modules it uses::

    from .._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(__name__, {"._route": ("run_route", ...)})

The first access to a name imports its module and keeps the value in the package, so later
accesses are plain attribute look-ups.  A name equal to its module's (``"nwm": ".nwm"``) is
that submodule.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, modules: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the package named ``package`` that exports the names of
    ``modules`` (relative module name, e.g. ``"._route"`` -> names it defines)."""
    where: dict[str, str] = {}
    for module, names in modules.items():
        for name in names:
            if name in where:
                raise ValueError(f"{package}: {name!r} is exported by both {where[name]!r} "
                                 f"and {module!r}")
            where[name] = module

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        mod = importlib.import_module(module, package)
        value = mod if module.rsplit(".", 1)[-1] == name else getattr(mod, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__
