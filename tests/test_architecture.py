"""The package's import graph keeps DESIGN §2's floors (parsed with ``ast``, nothing imported).

Three rules, over every ``import`` in ``hydroscale/`` (top level, inside functions, under
``TYPE_CHECKING``: all alike):

(a) no package imports another package's private module or name (``from ..x._y import``,
    ``from ..x import _name``); what another package needs is exported from its ``__init__``;
(b) no import cycle between packages;
(c) no arrow that climbs the floors, lowest first: network, irf -> kernels -> routing ->
    partition, io -> models -> distributed, api -> calibration -> workflows -> cli.
    ``plotting`` (imports nothing of hydroscale) and ``_adapters`` (the API's array adapters,
    on top of network only) sit low.

A "package" is a folder under ``hydroscale/`` or a top-level module (``api``, ``cli``,
``plotting``).  The root ``hydroscale/__init__.py`` is the facade: it is not checked, and
importing it counts as importing the top floor.

The ``ALLOWED_*`` tables list the violations still in the tree, each with its reason; remove an
entry when its import is fixed (a stale entry fails the test too, so the tables only shrink).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hydroscale"

#: floor of every package, lowest first (DESIGN §2)
FLOORS = {
    "_options": 0,  # the shape of every options object (FrozenOptions)
    "_closing": 0,  # the context-manager shape of objects closed after use (Closing)
    "_digest": 0,  # content digests of arrays (run fingerprints, restart states)
    "_lazy": 0,  # lazy re-exports of package __init__s (imports nothing of hydroscale)
    "network": 0,
    "irf": 0,
    "plotting": 0,
    "kernels": 1,
    "_adapters": 1,
    "routing": 2,
    "partition": 3,
    "io": 3,
    "models": 4,
    "distributed": 5,
    "api": 5,
    "calibration": 6,
    "workflows": 7,
    "cli": 8,
}
FACADE_FLOOR = max(FLOORS.values())  # ``import hydroscale`` / ``from .. import __version__``

REDESIGN = "being removed by the one-runtime redesign (issue 25)"

#: (importing file, "hydroscale.pkg.module:name" imported) -> reason
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {}

#: (importing file, imported package) -> reason, for arrows that climb the floors
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}

#: packages of an import cycle (a strongly connected component of the package graph) -> reason
ALLOWED_CYCLES: dict[frozenset[str], str] = {}


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository root
    line: int
    src: str  # importing package
    dst: str  # imported package ("" for the root facade)
    target: str  # "hydroscale.pkg.module:name" (name empty for a whole module)
    private: bool

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _subpackages() -> set[str]:
    names = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    return names | {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def _imports_of(path: Path, root: Path, subpackages: set[str]) -> list[Import]:
    """Every import of hydroscale in the file ``path`` (under the repository ``root``)."""
    rel = path.relative_to(root).as_posix()
    parts = list(path.relative_to(root).with_suffix("").parts)
    here = parts[:-1] if parts[-1] == "__init__" else parts  # this module, as a package path
    package = here if parts[-1] == "__init__" else parts[:-1]  # what ``from .`` means
    src = _package_of(".".join(here))
    found: list[Import] = []

    def add(node: ast.AST, module: str, names: list[str]) -> None:
        if module != "hydroscale" and not module.startswith("hydroscale."):
            return
        if module == "hydroscale":  # ``from .. import io``: each name a package, or the facade
            for name in names:
                dst = name if name in subpackages else ""
                target = f"hydroscale.{name}" if dst else f"hydroscale:{name}"
                found.append(Import(rel, node.lineno, src, dst, target, False))
            return
        dst = _package_of(module)
        inner = module.split(".")[2:]  # below the package: its modules
        private_module = any(_is_private(s) for s in inner)
        for name in names or [""]:
            private = private_module or _is_private(name)
            found.append(Import(rel, node.lineno, src, dst, f"{module}:{name}", private))

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), rel)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, alias.name, [])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            add(node, module, [a.name for a in node.names])
    return found


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    subpackages = _subpackages()
    out: list[Import] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py":
            continue  # the facade re-exports every floor
        out += _imports_of(path, ROOT, subpackages)
    return [i for i in out if i.dst != i.src]


def test_every_package_has_a_floor() -> None:
    missing = sorted(_subpackages() - set(FLOORS))
    assert not missing, (
        f"packages {missing} have no floor in tests/test_architecture.py FLOORS: add them (and "
        "to DESIGN §2)"
    )


def test_no_cross_package_private_imports(imports: list[Import]) -> None:
    bad = [i for i in imports if i.private and (i.file, i.target) not in ALLOWED_PRIVATE]
    used = {(i.file, i.target) for i in imports if i.private}
    stale = sorted(set(ALLOWED_PRIVATE) - used)
    lines = [f"{i.where}: {i.src} imports {i.target} (private to {i.dst}); export it from "
             f"hydroscale/{i.dst}/__init__.py and import it from there" for i in bad]
    lines += [f"ALLOWED_PRIVATE lists {f} -> {t}, which is no longer imported: remove the entry"
              for f, t in stale]
    assert not lines, "\n".join(lines)


def test_no_upward_imports(imports: list[Import]) -> None:
    def floor(pkg: str) -> int:
        return FACADE_FLOOR if pkg == "" else FLOORS[pkg]

    up = [i for i in imports if floor(i.dst) > floor(i.src)]
    bad = [i for i in up if (i.file, i.dst) not in ALLOWED_UPWARD]
    stale = sorted(set(ALLOWED_UPWARD) - {(i.file, i.dst) for i in up})
    lines = [f"{i.where}: {i.src} (floor {floor(i.src)}) imports {i.target} from "
             f"{i.dst or 'the hydroscale facade'} (floor {floor(i.dst)}): lower layers never "
             "import higher ones (DESIGN §2)" for i in bad]
    lines += [f"ALLOWED_UPWARD lists {f} -> {p}, which no longer climbs: remove the entry"
              for f, p in stale]
    assert not lines, "\n".join(lines)


def _cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_packages(imports: list[Import]) -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for i in imports:
        if i.dst:
            edges[i.src].add(i.dst)
            edges.setdefault(i.dst, set())
            if i.where not in where[i.src, i.dst]:
                where[i.src, i.dst].append(i.where)
    found = _cycles(edges)
    lines = []
    for comp in found:
        if frozenset(comp) in ALLOWED_CYCLES:
            continue
        arrows = [f"  {a} -> {b}: {', '.join(where[a, b][:3])}"
                  + (f" (+{len(where[a, b]) - 3} more)" if len(where[a, b]) > 3 else "")
                  for a in sorted(comp) for b in sorted(edges[a] & comp)]
        lines.append(f"import cycle between {sorted(comp)}:\n" + "\n".join(arrows))
    stale = sorted(sorted(c) for c in set(ALLOWED_CYCLES) - {frozenset(c) for c in found})
    lines += [f"ALLOWED_CYCLES lists {c}, which is no longer a cycle: remove the entry"
              for c in stale]
    assert not lines, "\n".join(lines)


def test_the_checks_see_what_they_should(tmp_path: Path) -> None:
    """The parser resolves relative, absolute, lazy and ``from .. import pkg`` imports."""
    pkg = tmp_path / "hydroscale"
    (pkg / "routing").mkdir(parents=True)
    src = pkg / "routing" / "_x.py"
    src.write_text(
        "from ..network._validation import _some\n"
        "from ..network import format_ids, _hidden\n"
        "from .. import partition\n"
        "def f():\n"
        "    import hydroscale.io._common\n"
        "    from hydroscale.calibration import losses\n"
        "from ._engines import ENGINE_ENV_VAR\n"
    )
    got = _imports_of(src, tmp_path, {"network", "partition", "io", "calibration", "routing"})
    seen = {(i.line, i.dst, i.target, i.private) for i in got}
    assert seen == {
        (1, "network", "hydroscale.network._validation:_some", True),
        (2, "network", "hydroscale.network:format_ids", False),
        (2, "network", "hydroscale.network:_hidden", True),
        (3, "partition", "hydroscale.partition", False),
        (5, "io", "hydroscale.io._common:", True),
        (6, "calibration", "hydroscale.calibration:losses", False),
        (7, "routing", "hydroscale.routing._engines:ENGINE_ENV_VAR", True),
    }
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
