"""Fixtures of the io tests (file writers live in ``nwm_files.py``)."""

from __future__ import annotations

from nwm_files import nwm_dir  # noqa: F401  (fixture)
