"""The context-manager shape of objects that hold resources until :meth:`close` (workers'
routers, a distributed gradient, a calibrator): ``with X(...) as x:`` closes on exit."""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["Closing"]

T = TypeVar("T", bound="Closing")


class Closing:
    """Mixin: ``__enter__`` returns the object, ``__exit__`` calls :meth:`close`."""

    def close(self) -> None:  # pragma: no cover - every user defines it
        raise NotImplementedError

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
