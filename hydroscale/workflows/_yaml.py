"""Strict reading of workflow YAML: UTF-8 text, no key twice in a mapping, not empty.

``yaml.safe_load`` keeps the last of two equal keys silently (a workflow that sets
``routing.substeps`` twice runs with one of them, unsaid), decodes bytes as it can and turns
an empty file into ``None``, which the schema would then fill with defaults.
:func:`read_yaml_file` refuses all three with a :class:`WorkflowError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ._schema import WorkflowError

__all__ = ["StrictLoader", "read_yaml_file"]

_MERGE = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that refuses a key given twice in one mapping, at any depth
    (``<<`` merge keys may still be overridden: that is what they are for)."""

    def construct_document(self, node: yaml.Node) -> Any:
        problems: list[str] = []
        self._find_duplicates(node, "", problems, set())
        if problems:
            raise _DuplicateKeys(problems)
        return super().construct_document(node)

    def _find_duplicates(self, node: yaml.Node, prefix: str, problems: list[str],
                         visited: set[int]) -> None:
        if id(node) in visited:  # an alias: checked where its anchor is (may be recursive)
            return
        visited.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._find_duplicates(item, f"{prefix}[{i}].", problems, visited)
            return
        if not isinstance(node, yaml.MappingNode):
            return
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            if isinstance(key_node, yaml.ScalarNode):
                key = self.construct_object(key_node, deep=True)
            else:  # a complex key: compare its text
                key = ("<node>", yaml.serialize(key_node))
            line = key_node.start_mark.line + 1
            name = f"{prefix}{key}"
            if key in seen:
                problems.append(f"{name}: key given twice (lines {seen[key]} and {line}); YAML "
                                "would keep the last one silently: keep one")
            else:
                seen[key] = line
            self._find_duplicates(value_node, f"{name}.", problems, visited)


class _DuplicateKeys(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def read_yaml_file(path: Path) -> Any:
    """The YAML document of ``path``, read strictly (see the module docstring).

    Raises
    ------
    WorkflowError
        Not UTF-8 text, not valid YAML, a key twice in one mapping, or an empty document.
    """
    where = str(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise WorkflowError(where, [
            f"not UTF-8 text: byte 0x{raw[err.start]:02x} on line {line} (offset {err.start}) "
            "cannot be decoded; save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ]) from None
    try:
        data = yaml.load(text, Loader=StrictLoader)  # a SafeLoader: no arbitrary objects
    except _DuplicateKeys as err:
        raise WorkflowError(where, err.problems) from None
    except yaml.YAMLError as err:
        raise WorkflowError(where, [f"not valid YAML: {err}"]) from None
    if data is None:
        raise WorkflowError(where, [
            "the file is empty (no YAML mapping, only blanks or comments): write the "
            "workflow's keys, at least `kind:` (see `hydroscale route --show-schema`)"
        ])
    return data
