"""RAPID2 cases: the YAML namelist and the tables it names (Parquet, or CSV with the same
columns).

Pinned to **RAPID2 2.0.0b2** (github.com/c-h-david/rapid2, ``rapid2 --namelist NML.yml``), the
first version whose static inputs are Parquet and whose namelist keys end in ``_pqt``.  Keys
read (all required by RAPID2's ``read_nml_tbl``):

==========  ==========================================================================
key         what
==========  ==========================================================================
Qex_ncf     external inflow NetCDF: ``Qext (time, rivid)`` m³/s over the whole domain,
            ``rivid``, ``time``, ``time_bnds`` (interval starts and ends, s since 1970)
Q00_ncf     initial discharge NetCDF: ``Qout (time, rivid)`` m³/s, one time, whole domain
con_pqt     connectivity: columns ``riv`` (int) and ``dwn`` (its downstream reach; 0 = none)
kpr_pqt     Muskingum k: columns ``riv``, ``kpr`` (s)
xpr_pqt     Muskingum x: columns ``riv``, ``xpr`` (-)
bas_pqt     the basin routed: column ``riv``, a subset of the domain's reaches
IS_dtR      routing sub-step (s, a positive integer; the inflow interval is a multiple)
Qou_ncf     output discharge NetCDF (RAPID ``Qout``: interval means on the basin's reaches)
Qfi_ncf     output final state NetCDF (RAPID ``Qfinal``: instantaneous, end of the run)
==========  ==========================================================================

The data-assimilation keys (``Qob_ncf``, ``ZS_scl_inf``, ...) are not read.  Paths are taken as
RAPID2 takes them (from the working directory), else relative to the namelist's folder or its
parent.  A table named ``.csv`` is read with pandas (no extra needed): a header holding the
column names, or no header (columns in the order above).  Parquet needs ``pyarrow``
(``pip install 'hydroscale[parquet]'``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

from ..network import RiverNetwork, format_ids
from ._common import IOFormatError, integer_ids, resolve_path
from .rapid import read_qinit, read_rapid_inflow

__all__ = ["NAMELIST_KEYS", "RAPID2_VERSION", "Rapid2Case", "is_rapid2_namelist",
           "read_rapid2_namelist", "read_table"]

logger = logging.getLogger(__name__)

#: the RAPID2 version whose namelist keys and table columns this module reads
RAPID2_VERSION = "2.0.0b2"
#: the namelist keys RAPID2 requires
NAMELIST_KEYS = ("Qex_ncf", "Q00_ncf", "con_pqt", "kpr_pqt", "xpr_pqt", "bas_pqt", "IS_dtR",
                 "Qou_ncf", "Qfi_ncf")
_COLUMNS = {"con_pqt": ("riv", "dwn"), "kpr_pqt": ("riv", "kpr"), "xpr_pqt": ("riv", "xpr"),
            "bas_pqt": ("riv",)}


def read_table(path: Any, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The ``columns`` of a Parquet or CSV table, as arrays.

    Raises
    ------
    ImportError
        A Parquet file without ``pyarrow`` installed (the message names the extra).
    IOFormatError
        A missing column or an unreadable file (naming the file, the columns it has).
    """
    import pandas as pd

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{p}: no such file (a RAPID2 table with columns "
                                f"{list(columns)})")
    if p.lower().endswith((".csv", ".txt")):
        with open(p, encoding="utf-8", errors="replace") as f:
            first = f.readline()
        fields = [v.strip() for v in first.split(",")]
        numeric = all(v.lstrip("-").replace(".", "", 1).replace("e", "", 1).isdigit()
                      for v in fields if v)
        df = pd.read_csv(p, header=None if numeric else 0)
        if numeric:
            if df.shape[1] < len(columns):
                raise IOFormatError(p, None, f"{df.shape[1]} columns without a header; "
                                    f"expected {list(columns)}")
            df = df.iloc[:, : len(columns)].set_axis(list(columns), axis=1)
        df.columns = [str(c).strip() for c in df.columns]
    else:
        try:
            import pyarrow  # noqa: F401  (pandas needs it for Parquet)
        except ImportError:
            raise ImportError(
                f"{p}: reading Parquet needs pyarrow, which is not installed: pip install "
                "'hydroscale[parquet]' (or pyarrow), or give the table as CSV with the "
                f"header {','.join(columns)}") from None
        try:
            df = pd.read_parquet(p)
        except (OSError, ValueError) as err:
            raise IOFormatError(p, None, f"cannot be read as Parquet ({err})") from err
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise IOFormatError(p, ", ".join(missing), f"missing column(s) {missing}; the table "
                            f"has {list(df.columns)} (RAPID2 {RAPID2_VERSION} columns: "
                            f"{list(columns)})")
    return {c: df[c].to_numpy() for c in columns}


def is_rapid2_namelist(source: Any) -> bool:
    """A ``.yml``/``.yaml`` file that holds RAPID2's ``con_pqt`` and ``bas_pqt`` keys."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    p = os.fspath(source)
    if not (p.lower().endswith((".yml", ".yaml")) and os.path.isfile(p)):
        return False
    try:
        data = _load_yaml(p)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "con_pqt" in data and "bas_pqt" in data


def _load_yaml(path: str) -> Any:
    import yaml

    with open(path, encoding="utf-8") as f:
        try:
            return yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err})") from err


@dataclass(frozen=True)
class Rapid2Case:
    """A RAPID2 case (:func:`read_rapid2_namelist`).

    Attributes
    ----------
    network : the basin's reaches in ``bas`` order (downstream reaches outside the basin are
        outlets, as in RAPID), attributes ``k`` (s) and ``x`` (-).
    k_s, x : float64 [N] Muskingum parameters (s, -).
    dtR_s : routing sub-step (s), ``IS_dtR``.
    qext : DataArray ``(reach, time)`` [N, T] of external inflow (m³/s, interval means, rows
        in ``network.ids`` order, ``time`` = interval starts, attribute ``interval_s``), or
        None when not read.
    qinit : float64 [N] initial discharge (m³/s), or None when not read.
    qout_path, qfinal_path : where RAPID2 writes ``Qou_ncf`` and ``Qfi_ncf``.
    namelist : the namelist file.
    """

    network: RiverNetwork
    k_s: np.ndarray
    x: np.ndarray
    dtR_s: float
    qext: xr.DataArray | None
    qinit: np.ndarray | None
    qout_path: str | None
    qfinal_path: str | None
    namelist: str

    @property
    def dt_s(self) -> float | None:
        """The inflow interval (s), from ``Qex_ncf``'s ``time_bnds``."""
        return None if self.qext is None else float(self.qext.attrs["interval_s"])


def _lookup(ids: np.ndarray, table_ids: np.ndarray, path: str, what: str) -> np.ndarray:
    order = np.argsort(table_ids, kind="stable")
    pos = np.clip(np.searchsorted(table_ids[order], ids), 0, max(table_ids.size - 1, 0))
    found = table_ids[order][pos] == ids if table_ids.size else np.zeros(ids.size, bool)
    if not found.all():
        raise IOFormatError(path, "riv", f"basin reaches {format_ids(ids[~found])} have no "
                            f"{what} in the table")
    return order[pos]


def read_rapid2_namelist(path: Any, *, read_inputs: bool = True) -> Rapid2Case:
    """Read a RAPID2 (:data:`RAPID2_VERSION`) YAML namelist and the files it names.

    Parameters
    ----------
    path : the namelist (``.yml``).
    read_inputs : False: the network, k, x and sub-step only (no ``Qex_ncf``/``Q00_ncf``).

    Raises
    ------
    IOFormatError
        Missing keys (listed), a non-integer or non-positive ``IS_dtR``, tables without their
        columns, basin reaches missing from the connectivity, k or x tables, k <= 0 or x
        outside [0, 0.5].
    ImportError
        A Parquet table without ``pyarrow`` (see :func:`read_table`).
    """
    p = os.fspath(path)
    nml = _load_yaml(p)
    if not isinstance(nml, dict):
        raise IOFormatError(p, None, "a RAPID2 namelist is a YAML mapping of keys")
    needed = NAMELIST_KEYS if read_inputs else ("con_pqt", "kpr_pqt", "xpr_pqt", "bas_pqt",
                                                 "IS_dtR")
    missing = [k for k in needed if k not in nml]
    if missing:
        raise IOFormatError(p, ", ".join(missing), f"missing namelist key(s) {missing} (RAPID2 "
                            f"{RAPID2_VERSION} needs {list(NAMELIST_KEYS)})")
    dtr = nml["IS_dtR"]
    if not isinstance(dtr, int) or isinstance(dtr, bool) or dtr <= 0:
        raise IOFormatError(p, "IS_dtR", f"the routing sub-step must be a positive integer "
                            f"number of seconds, got {dtr!r}")

    def file(key: str) -> str:
        return resolve_path(p, str(nml[key]))

    tables = {k: read_table(file(k), c) for k, c in _COLUMNS.items()}
    con_path = file("con_pqt")
    riv = integer_ids(tables["con_pqt"]["riv"], con_path, "riv")
    dwn = integer_ids(tables["con_pqt"]["dwn"], con_path, "dwn", "downstream ids")
    bas = integer_ids(tables["bas_pqt"]["riv"], file("bas_pqt"), "riv")
    rows = _lookup(bas, riv, file("bas_pqt"), "row in the connectivity table " + con_path)
    down = dwn[rows]
    outside = (down > 0) & ~np.isin(down, bas)
    if outside.any():
        logger.info("%s: %d basin reaches drain out of the basin: outlets here", p,
                    int(outside.sum()))
    down = np.where(outside | (down <= 0), 0, down)
    k_tab, x_tab = tables["kpr_pqt"], tables["xpr_pqt"]
    k = np.asarray(k_tab["kpr"], np.float64)[
        _lookup(bas, integer_ids(k_tab["riv"], file("kpr_pqt"), "riv"), file("kpr_pqt"), "k")]
    x = np.asarray(x_tab["xpr"], np.float64)[
        _lookup(bas, integer_ids(x_tab["riv"], file("xpr_pqt"), "riv"), file("xpr_pqt"), "x")]
    for key, v, ok, rule in (("kpr_pqt", k, k > 0, "k > 0 s"),
                             ("xpr_pqt", x, (x >= 0) & (x <= 0.5), "0 <= x <= 0.5")):
        if not (ok & np.isfinite(v)).all():
            bad = ~(ok & np.isfinite(v))
            raise IOFormatError(file(key), key[:3], f"RAPID needs {rule}; reaches "
                                f"{format_ids(bas[bad])} have {format_ids(v[bad])}")
    net = RiverNetwork.from_arrays(bas, down, k=k, x=x)
    qext = qinit = None
    if read_inputs:
        qext = read_rapid_inflow(file("Qex_ncf"), net, allow_extra=True)
        qinit = read_qinit(file("Q00_ncf"), net)
    logger.info("read RAPID2 namelist %s: %d reaches, sub-step %d s", p, net.n_reaches, dtr)
    return Rapid2Case(net, k, x, float(dtr), qext, qinit,
                      file("Qou_ncf") if "Qou_ncf" in nml else None,
                      file("Qfi_ncf") if "Qfi_ncf" in nml else None, p)
