"""Writers of a small mizuRoute case (NTOPO, HRU runoff, control file), written from
mizuRoute's users' guide ("Input files", "Control file") with the variable names of its test
cases (``seg_id``, ``Tosegment``, ``seg_hru_id``, ``hruid``, ``Basin_Area``)."""

from __future__ import annotations

import numpy as np
import xarray as xr

# reaches: 101, 102 -> 103 -> 104 -> -9999 (outlet); 105 -> 0 (outlet); 106 -> 999 (not in
# the file: a subset's cut outlet)
SEG = np.array([101, 102, 103, 104, 105, 106], np.int32)
TOSEG = np.array([103, 103, 104, -9999, 0, 999], np.int32)
# HRUs 1..7: two drain into 101, HRU 7 into nothing (0: closed)
HRU = np.array([1, 2, 3, 4, 5, 6, 7, 8], np.int32)
HRU_SEG = np.array([101, 102, 103, 104, 105, 101, 0, 106], np.int32)
AREA_M2 = np.array([2e6, 1e6, 3e6, 0.5e6, 4e6, 1e6, 5e6, 2.5e6])
# runoff (mm/s) per HRU (rows in HRU order) and day
RUNOFF = np.array([[1.0, 2.0, 0.0], [0.5, 0.5, 0.5], [0.0, 1.0, 2.0], [4.0, 0.0, 0.0],
                   [1.0, 1.0, 1.0], [3.0, 0.0, 1.0], [9.0, 9.0, 9.0], [0.2, 0.4, 0.6]]) * 1e-3


def write_ntopo(path, **drop_or_replace):
    data = {
        "seg_id": ("seg", SEG), "Tosegment": ("seg", TOSEG),
        "Length": ("seg", np.full(SEG.size, 5000.0), {"units": "m"}),
        "Slope": ("seg", np.full(SEG.size, 0.001)),
        "hruid": ("hru", HRU), "seg_hru_id": ("hru", HRU_SEG),
        "Basin_Area": ("hru", AREA_M2, {"units": "m2"}),
    }
    data.update(drop_or_replace)
    xr.Dataset({k: v for k, v in data.items() if v is not None}).to_netcdf(path)
    return path


def write_runoff(path, units="mm/s", factor=1.0, order=None, start="1950-01-01",
                 time_units="days since 1950-01-01"):
    """``RUNOFF (time, hru)`` with ``units``; values RUNOFF / factor (so that a unit that is
    ``factor`` times larger holds the same flux); HRUs in ``order`` (default reversed)."""
    order = np.arange(HRU.size)[::-1] if order is None else np.asarray(order)
    days = (np.datetime64(start, "D") - np.datetime64("1950-01-01", "D")).astype(int)
    ds = xr.Dataset(
        {"RUNOFF": (("time", "hru"), (RUNOFF[order] / factor).T, {"units": units}),
         "hru": ("hru", HRU[order])},
        coords={"time": ("time", days + np.arange(3.0), {"units": time_units,
                                                          "calendar": "standard"})})
    ds.to_netcdf(path)
    return path


def write_case(root, runoff_units="mm/s"):
    """A case folder as mizuRoute's test cases lay it out; returns the control file path."""
    for d in ("ancillary_data", "input", "settings", "output"):
        (root / d).mkdir(parents=True, exist_ok=True)
    write_ntopo(root / "ancillary_data" / "ntopo.nc")
    write_runoff(root / "input" / "runoff.nc", units=runoff_units)
    control = root / "settings" / "case.control"
    control.write_text(
        "! mizuRoute control file (test case layout)\n"
        "<ancil_dir>         ./ancillary_data/   ! river network\n"
        "<input_dir>         ./input/            ! runoff\n"
        "<output_dir>        ./output/           !\n"
        "<case_name>         tiny                !\n"
        "<sim_start>         1950-01-01 00:00:00 ! start\n"
        "<sim_end>           1950-01-03 00:00:00 ! end\n"
        "<route_opt>         1                   ! IRF\n"
        "<fname_ntopOld>     ntopo.nc            ! river network netCDF\n"
        "<dname_sseg>        seg                 !\n"
        "<dname_nhru>        hru                 !\n"
        "<varname_segId>     seg_id              !\n"
        "<varname_downSegId> Tosegment           !\n"
        "<varname_hruSegId>  seg_hru_id          !\n"
        "<varname_HRUid>     hruid               !\n"
        "<varname_area>      Basin_Area          !\n"
        "<fname_qsim>        runoff.nc           ! runoff netCDF\n"
        "<vname_qsim>        RUNOFF              ! runoff variable\n"
        "<vname_time>        time                !\n"
        "<vname_hruid>       hru                 !\n"
        "<dname_time>        time                !\n"
        "<dname_hruid>       hru                 !\n"
        f"<units_qsim>        {runoff_units}     ! runoff units\n"
        "<dt_ro>             86400               ! daily runoff\n"
        "<is_remap>          F                   ! runoff on the network's HRUs\n")
    return control


def expected_inflow():
    """Hand computation: r_j = sum over HRUs h -> j of area_h (m2) * runoff_h (m/s)."""
    flux = RUNOFF * 1e-3 * AREA_M2[:, None]  # mm/s -> m/s, times m2
    out = np.zeros((SEG.size, 3))
    for h, seg in enumerate(HRU_SEG):
        if seg in SEG:
            out[list(SEG).index(seg)] += flux[h]
    return out
