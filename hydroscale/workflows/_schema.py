"""Workflow schemas: typed fields with defaults, strict validation, ``key.path=value`` overrides.

A schema is a nested mapping ``name -> Field | schema``.  :func:`validate` checks a loaded YAML
mapping against it: unknown keys, wrong types and out-of-range values are all reported at once,
each naming the dotted key, what was expected and what was found.  The result is a plain nested
``dict`` with every default filled in.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = ["Field", "WorkflowError", "apply_overrides", "describe", "set_values", "validate"]


class WorkflowError(ValueError):
    """An invalid workflow file or override; ``problems`` lists one line per offending key."""

    def __init__(self, where: str, problems: Iterable[str]) -> None:
        self.where = where
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid workflow {where}:\n{lines}")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_time(v: Any) -> bool:
    import numpy as np

    if isinstance(v, (datetime.date, datetime.datetime)):
        return True
    if not isinstance(v, str):
        return False
    try:
        np.datetime64(v.rstrip("Z"), "s")
    except ValueError:
        return False
    return True


def _normalise(spec: Field, value: Any) -> Any:
    if spec.kind == "time" and isinstance(value, (datetime.date, datetime.datetime)):
        if isinstance(value, datetime.datetime) and value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        if not isinstance(value, datetime.datetime):
            value = datetime.datetime(value.year, value.month, value.day)
        return value.isoformat(timespec="seconds")
    return _copy(value)


@dataclass(frozen=True)
class Field:
    """One leaf of a schema.

    ``kind``: ``"int"``, ``"float"``, ``"bool"``, ``"str"``, ``"time"`` (an ISO 8601 string;
    YAML timestamps are turned into one), ``"ids"`` (list of integers),
    ``"mapping"`` (any mapping, checked by ``check``), ``"any"``.  ``choices`` restricts
    values; ``minimum``/``maximum`` bound numbers; ``nullable`` accepts ``null``; ``also``
    lists extra accepted literal values (e.g. ``"auto"`` for an integer field); ``check`` is a
    callable ``(value) -> error message or None`` for structured values.
    """

    kind: str
    default: Any
    help: str
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False
    also: tuple[Any, ...] = ()
    check: Callable[[Any], str | None] | None = field(default=None, compare=False)

    def expected(self) -> str:
        if self.choices:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = {
                "int": "an integer", "float": "a number", "bool": "true or false",
                "str": "a string", "ids": "a list of integer reach ids",
                "time": "an ISO 8601 time such as 2000-01-01T00:00:00",
                "mapping": "a mapping", "any": "a value",
            }[self.kind]
            if self.minimum is not None and self.maximum is not None:
                text += f" in [{self.minimum}, {self.maximum}]"
            elif self.minimum is not None:
                text += f" >= {self.minimum}"
            elif self.maximum is not None:
                text += f" <= {self.maximum}"
        for a in self.also:
            text += f" or {a!r}"
        if self.nullable:
            text += " or null"
        return text

    def problem(self, value: Any) -> str | None:
        """Why ``value`` does not fit, or None."""
        if value is None and self.nullable:
            return None
        if value in self.also and not isinstance(value, bool):
            return None
        if self.choices:
            return None if value in self.choices and not isinstance(value, bool) else "bad"
        ok = {
            "int": _is_int(value),
            "float": _is_number(value),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str) and value != "",
            "time": _is_time(value),
            "ids": isinstance(value, list) and all(_is_int(v) for v in value),
            "mapping": isinstance(value, Mapping),
            "any": True,
        }[self.kind]
        if not ok:
            return "bad"
        if _is_number(value):
            if self.minimum is not None and value < self.minimum:
                return "bad"
            if self.maximum is not None and value > self.maximum:
                return "bad"
        if self.check is not None:
            return self.check(value)
        return None


Schema = Mapping[str, Any]  # name -> Field | Schema


def _defaults(schema: Schema) -> dict[str, Any]:
    return {
        k: _defaults(v) if not isinstance(v, Field) else _copy(v.default)
        for k, v in schema.items()
    }


def _copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


def _walk(data: Any, schema: Schema, prefix: str, out: dict, problems: list[str]) -> None:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "the file"
        problems.append(f"{where}: expected a mapping of keys, got {_type_name(data)} {data!r}")
        return
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in schema:
            known = ", ".join(sorted(schema))
            problems.append(f"{name}: unknown key (allowed here: {known})")
            continue
        spec = schema[key]
        if isinstance(spec, Field):
            why = spec.problem(value)
            if why == "bad":
                problems.append(
                    f"{name}: expected {spec.expected()}, got {_type_name(value)} {value!r}"
                )
            elif why:
                problems.append(f"{name}: {why}")
            else:
                out[key] = _normalise(spec, value)
        else:
            _walk(value, spec, f"{name}.", out[key], problems)


def validate(data: Any, schema: Schema, where: str = "") -> dict[str, Any]:
    """Check ``data`` (a loaded YAML mapping) against ``schema``; return it with defaults.

    Raises
    ------
    WorkflowError
        Listing every unknown key, wrong type and out-of-range value with its dotted name.
    """
    out = _defaults(schema)
    problems: list[str] = []
    _walk(data, schema, "", out, problems)
    if problems:
        raise WorkflowError(where, problems)
    return out


def _lookup(schema: Schema, dotted: str) -> tuple[Field, int] | None:
    """The field a dotted key sets and the number of its parts naming that field; keys below
    a ``mapping`` field (``routing.params.x``) set one entry of it."""
    node: Any = schema
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
        if isinstance(node, Field):
            inside = i + 1 < len(parts)
            return (node, i + 1) if not inside or node.kind == "mapping" else None
    return None


def set_values(data: Any, values: Mapping[str, Any], schema: Schema,
               where: str = "options") -> dict[str, Any]:
    """Set already-typed values by dotted key (e.g. from command-line flags); returns a new
    mapping.  A key below a mapping field (``routing.params.x``) sets that one entry and
    keeps the others (the data's, else the field's default).  Raises :class:`WorkflowError`
    for a key the schema does not have."""
    out = _copy(dict(data or {}))
    problems = []
    for key, value in values.items():
        found = _lookup(schema, key)
        if found is None:
            problems.append(f"{key}: unknown key (sections: {', '.join(sorted(schema))})")
            continue
        spec, depth = found
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                # the mapping field itself, absent from the data: start from its default
                own = i == depth - 1 and isinstance(spec.default, dict)
                node[part] = _copy(spec.default) if own else {}
            node = node[part]
        node[parts[-1]] = _copy(value)
    if problems:
        raise WorkflowError(where, problems)
    return out


def apply_overrides(data: Any, overrides: Iterable[str], schema: Schema) -> dict[str, Any]:
    """Set ``key.path=value`` overrides (values parsed as YAML: ``24``, ``true``, ``[1, 2]``).

    A key below a mapping field sets one entry of it and keeps the others:
    ``routing.params.x=0.3`` changes ``x`` only.  Returns a new mapping; the result still has
    to go through :func:`validate`.

    Raises
    ------
    WorkflowError
        An override without ``=`` or naming a key the schema does not have.
    """
    problems = []
    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--set {item!r}: expected KEY=VALUE, e.g. routing.substeps=24")
            continue
        if _lookup(schema, key) is None:
            problems.append(
                f"--set {key}: unknown key (see `hydroscale route --show-schema`; sections: "
                f"{', '.join(sorted(schema))})"
            )
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            problems.append(f"--set {key}: value {text!r} is not valid YAML ({err})")
            continue
        values.pop(key, None)  # the last override of a key wins
        values[key] = value
    if problems:
        raise WorkflowError("overrides", problems)
    return set_values(data, values, schema, "overrides")


def describe(schema: Schema, prefix: str = "") -> list[str]:
    """One line per key: ``dotted.key: expected (default: value) -- help``."""
    lines = []
    for key, spec in schema.items():
        name = f"{prefix}{key}"
        if isinstance(spec, Field):
            lines.append(
                f"{name}: {spec.expected()} (default: {spec.default!r}) -- {spec.help}"
            )
        else:
            lines.extend(describe(spec, f"{name}."))
    return lines
