#!/usr/bin/env python3
"""Set up the project environment and run its main jobs, with nothing but Python >= 3.11.

    python3 dev.py demo   # create .venv if needed, then route the bundled Lower Colorado basin
    python3 dev.py test   # create .venv if needed, then run the whole test suite

The environment is rebuilt only when ``pyproject.toml`` changes.  torch is installed first and
pinned (``torch==2.13.0``, the CPU build): an unpinned torch pulls several GB of CUDA packages.
Extra arguments after the command are passed on (to ``hydroscale demo`` or to ``pytest``).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".hydroscale-installed"
# The CPU build of torch, installed before the project: pyproject.toml only asks torch >= 2.11
# (the GPU machines run 2.11), and from PyPI an unpinned torch pulls GBs of CUDA wheels.
TORCH = "torch==2.13.0"


def _sh(*cmd: str | os.PathLike, env: dict | None = None) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)


def _check(*cmd: str | os.PathLike) -> None:
    rc = _sh(*cmd)
    if rc != 0:
        sys.exit(f"dev.py: command failed with exit code {rc}: {' '.join(map(str, cmd))}")


def ensure_env() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"dev.py: Python >= 3.11 is required, this is {sys.version.split()[0]}")
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == want and PY.exists():
        return
    if not PY.exists():
        print(f"dev.py: creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    _check(PY, "-m", "pip", "install", "-q", TORCH)
    _check(PY, "-m", "pip", "install", "-q", "-e", ".[test]")
    STAMP.write_text(want)


def run_tests(args: list[str]) -> int:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONHASHSEED="0", MPLBACKEND="Agg")
    log = ROOT / ".pytest-last.log"
    cmd = [str(PY), "-m", "pytest", *args]
    print("+", " ".join(cmd), flush=True)
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            sys.stdout.write(line)
            lines.append(line)
        rc = proc.wait()
    log.write_text("".join(lines))
    tail = "".join(lines[-5:])
    passed = re.search(r"(\d+) passed", tail)
    if rc == 5 or not passed or int(passed.group(1)) == 0:
        print("dev.py: FAILED - no test ran", file=sys.stderr)
        return rc or 1
    return rc


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "setup"}:
        print(__doc__)
        return 2
    ensure_env()
    cmd, rest = argv[0], argv[1:]
    if cmd == "setup":
        return 0
    if cmd == "test":
        return run_tests(rest)
    return _sh(BIN / "hydroscale", "demo", *rest, env=dict(os.environ, MPLBACKEND="Agg"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
