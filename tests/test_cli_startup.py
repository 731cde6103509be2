"""The command line answers help, validation and input errors without the heavy libraries.

Each case runs ``hydroscale.cli.main`` in a fresh interpreter and lists which of torch, triton,
dask, distributed, xarray, pandas and zarr it imported: for ``--help`` (every subcommand's),
``validate``, ``--check`` and bad input (missing file, bad YAML, unknown key, unknown
``--network`` engine) that list must be empty.  It asserts module absence, never a time.
The lazy package ``__init__``s that make this possible are checked to export every name.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "triton", "dask", "distributed", "xarray", "pandas", "zarr")

_PROBE = """
import contextlib, io, json, sys
from hydroscale.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = main(json.loads(sys.argv[1]))
heavy = sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)
print(json.dumps({"rc": rc, "heavy": heavy, "out": out.getvalue(), "err": err.getvalue()}))
"""


def _run(argv: list[str], cwd: Path = ROOT) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(HEAVY)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


SUBCOMMANDS = ("route", "partition", "ingest", "bench", "calibrate", "validate", "demo")


@pytest.mark.parametrize("argv", [["--help"], ["--version"]]
                         + [[cmd, "--help"] for cmd in SUBCOMMANDS],
                         ids=lambda a: " ".join(a))
def test_help_imports_no_heavy_library(argv):
    r = _run(argv)
    assert r["rc"] == 0
    assert r["heavy"] == []
    assert ("usage: hydroscale" in r["out"]) or r["out"].startswith("hydroscale 0.")


def test_validate_every_bundled_workflow_imports_no_heavy_library():
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "workflows").glob("*.yaml"))
    assert len(files) >= 5
    r = _run(["validate", *files])
    assert r["rc"] == 0, r["err"]
    assert r["heavy"] == []
    for f in files:
        assert f"{f}: ok (" in r["out"]


@pytest.mark.parametrize("argv", [
    ["route", "workflows/route.yaml", "--check"],
    ["route", "workflows/route.yaml", "--check", "--cluster", "local-cpu"],
    ["calibrate", "workflows/calibrate.yaml", "--check"],
    ["bench", "workflows/benchmark.yaml", "--check"],
    ["ingest", "workflows/ingest.yaml", "--check"],
    ["route", "--show-schema"],
], ids=lambda a: " ".join(a))
def test_check_imports_no_heavy_library(argv):
    r = _run(argv)
    assert r["rc"] == 0, r["err"]
    assert r["heavy"] == []
    assert r["out"]


def test_input_errors_import_no_heavy_library(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("kind: route\nnetwork: [unclosed\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("kind: route\nforcing: {steps: 3}\nrouting: {substeps: 2, colour: red}\n")
    cases = [
        (["route", str(tmp_path / "missing.yaml")], "does not exist"),
        (["validate", str(tmp_path / "missing.yaml")], "does not exist"),
        (["route", str(bad_yaml)], "not valid YAML"),
        (["route", str(unknown)], "routing.colour"),
        (["route", "--network", "shapefile:rivers.shp", "--steps", "3"],
         "ENGINE: routelink, rapid_connect"),
        (["route", "--steps", "3", "--set", "routing.irf=kinematic"], "routing.irf"),
        (["route", "--steps", "3", "--cluster", "no-such-config"], "cluster:"),
    ]
    for argv, message in cases:
        r = _run(argv)
        assert r["rc"] == 2, (argv, r)
        assert message in r["err"], (argv, r["err"])
        assert r["heavy"] == [], (argv, r["heavy"])


@pytest.mark.parametrize("package", ["hydroscale", "hydroscale.io", "hydroscale.distributed",
                                     "hydroscale.workflows"])
def test_lazy_packages_export_every_name(package):
    mod = importlib.import_module(package)
    for name in mod.__all__:
        value = getattr(mod, name)  # imports the defining module
        assert value is not None, name
        assert name in dir(mod)
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'nope'"):
        getattr(mod, "nope")


def test_lazy_exports_refuses_a_name_twice():
    from hydroscale._lazy import lazy_exports

    with pytest.raises(ValueError, match="'x' is exported by both '._a' and '._b'"):
        lazy_exports("pkg", {"._a": ("x",), "._b": ("x", "y")})
