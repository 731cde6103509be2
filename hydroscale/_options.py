"""The shape every options object of hydroscale shares (:class:`FrozenOptions`): a frozen,
validated dataclass built once (from keywords or a workflow) and passed as one object through
the layers; :class:`~hydroscale.routing.RoutingOptions` and
:class:`~hydroscale.calibration.CalibrationOptions` are the two."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["FrozenOptions"]

T = TypeVar("T", bound="FrozenOptions")


class FrozenOptions:
    """Mixin of a frozen dataclass of options: :meth:`build`, :meth:`replace`,
    :meth:`field_names`, :meth:`describe`.  ``kind`` names the options in errors."""

    kind = "options"

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The option names (what :meth:`build` accepts as keywords)."""
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def build(cls: type[T], options: T | None = None, /, **keywords: Any) -> T:
        """``options`` (default the defaults) with ``keywords`` replaced, validated; an
        unknown keyword is a ``TypeError`` naming it and the known ones."""
        if options is not None and not isinstance(options, cls):
            raise TypeError(f"options must be a {cls.__name__}, got {type(options).__name__}")
        known = cls.field_names()
        unknown = sorted(set(keywords) - set(known))
        if unknown:
            raise TypeError(f"unknown {cls.kind} option(s) {unknown}; {cls.kind} options are "
                            f"{sorted(known)}")
        base = options if options is not None else cls()
        return dataclasses.replace(base, **keywords) if keywords else base  # type: ignore

    def replace(self: T, **keywords: Any) -> T:
        """A copy with ``keywords`` replaced (validated)."""
        return type(self).build(self, **keywords)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (what run records and fingerprints hold)."""
        return {f.name: self._describe_value(getattr(self, f.name))
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @staticmethod
    def _describe_value(value: Any) -> Any:
        if isinstance(value, (str, int, float, bool, type(None))):
            return value
        name = getattr(value, "name", None)  # an IRF spec
        return name if isinstance(name, str) else str(value).removeprefix("torch.")
