"""What discharge is called and how it is labelled (CF conventions), wherever it leaves
hydroscale: :func:`hydroscale.route` results, output stores, NetCDF files."""

from __future__ import annotations

__all__ = ["DISCHARGE_ATTRS", "DISCHARGE_NAME"]

#: variable name of routed discharge
DISCHARGE_NAME = "discharge"

#: CF attributes of routed discharge ``Q`` (m³/s, mean over each routing step)
DISCHARGE_ATTRS: dict[str, str] = {
    "units": "m3 s-1",
    "standard_name": "water_volume_transport_in_river_channel",
    "long_name": "discharge leaving each reach (mean over each time step)",
    "cell_methods": "time: mean",
}
