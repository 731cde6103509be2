"""A route workflow with routing.lakes level_pool: store and summary against LakeRouter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from workflow_cases import small_route

from hydroscale.io import open_output, write_lake_table
from hydroscale.routing import LEVEL_POOL_PARAMS, LakeRouter, Lakes
from hydroscale.workflows import WorkflowError, build_inputs, run_route, workflow_from_mapping


def _lakes_for(net) -> Lakes:
    """Two lakes: one reach with an upstream reach and the reach below it (a chain)."""
    down = net.downstream
    ups = np.bincount(down[down >= 0], minlength=net.n_reaches)
    j = next(int(i) for i in net.topo_order if ups[i] >= 1 and down[i] >= 0
             and down[down[i]] >= 0)
    p = dict(area=2e6, max_elevation=12.0, weir_elevation=10.5, weir_coefficient=0.6,
             weir_length=10.0, dam_length=10.0, orifice_elevation=5.0,
             orifice_coefficient=0.3, orifice_area=1.0)
    row = [p[c] for c in LEVEL_POOL_PARAMS]
    members = {11: net.ids[[j, int(np.flatnonzero(down == j)[0])]], 12: net.ids[[down[j]]]}
    return Lakes.from_members(members, [row, row], [0.6, 0.8], ("upper", "lower"))


@pytest.mark.parametrize("engine", ["torch", "oracle"])
def test_route_workflow_with_lakes(tmp_path, engine):
    wf = small_route(tmp_path / "out", routing={"engine": engine})
    inputs = build_inputs(workflow_from_mapping(wf))
    lakes = _lakes_for(inputs.network)
    table = write_lake_table(lakes, tmp_path / "lakes.csv")
    wf["network"]["lakes"] = str(table)
    wf["routing"]["lakes"] = "level_pool"
    cfg = workflow_from_mapping(wf)
    res = run_route(cfg)
    inputs = build_inputs(cfg)
    q = open_output(res.store, inputs.network).values
    r = inputs.forcing.read_all(0, inputs.forcing.n_steps).astype(np.float64)
    ref = LakeRouter(inputs.network, lakes, irf="linear_storage", substeps=2,
                     dt=inputs.forcing.interval_s, engine="oracle", dtype=torch.float64)(
        torch.tensor(r)[None], inputs.params)[0].numpy()
    np.testing.assert_allclose(q, ref, rtol=1e-6, atol=1e-9)
    s = json.loads(res.summary_path.read_text())
    assert s["engine"] == f"lakes/{engine}" and [lk["id"] for lk in s["lakes"]] == [11, 12]
    for lk in s["lakes"]:
        assert lk["storage_change_m3"] == pytest.approx(lk["inflow_m3"] - lk["outflow_m3"],
                                                        rel=1e-6, abs=1e-6 * lk["inflow_m3"])
        assert lk["inflow_m3"] > 0
    assert s["lakes"][0]["name"] == "upper" and s["lakes"][1]["stage"] == 2


def test_lake_workflow_checks(tmp_path):
    wf = small_route(tmp_path / "out", routing={"lakes": "level_pool"})
    with pytest.raises(WorkflowError, match="give network.lakes"):
        workflow_from_mapping(wf)
    wf["network"]["lakes"] = str(tmp_path / "lakes.csv")
    wf["cluster"] = "local-cpu"  # lakes route on a cluster too
    assert workflow_from_mapping(wf)["routing"]["lakes"] == "level_pool"
    wf["output"]["final_state"] = "final.npz"
    with pytest.raises(WorkflowError, match="restart states do not hold lake levels"):
        workflow_from_mapping(wf)
