"""Cluster configs: the bundled YAML files, validation errors, SLURM job script rendering."""

from __future__ import annotations

import pytest

from hydroscale.distributed import (
    CONFIG_KINDS,
    ClusterConfigError,
    config_path,
    load_config,
    render_job_script,
)


@pytest.mark.parametrize("name", ["local-cpu", "local-cuda", "scheduler", "slurm", "local-tls"])
def test_bundled_configs_load(name):
    # slurm.yaml leaves the scheduler host to the user (no default reaches compute nodes)
    cfg = load_config(name, **({"interface": "ib0"} if name == "slurm" else {}))
    kind = {"local-tls": "local-cpu"}.get(name, name)
    assert cfg["kind"] == kind
    assert set(cfg) == set(CONFIG_KINDS[kind]) | {"kind", "source"}
    if "work_stealing" in cfg:
        assert cfg["work_stealing"] is False
    if "host" in cfg and kind != "slurm":
        assert cfg["host"] == "127.0.0.1"
    if "dashboard_address" in cfg:
        assert cfg["dashboard_address"].startswith("127.0.0.1:")


def test_defaults_and_overrides():
    cfg = load_config({"kind": "local-cpu"}, n_workers=3)
    assert cfg["n_workers"] == 3 and cfg["processes"] is True and cfg["host"] == "127.0.0.1"
    assert load_config("local-cuda")["n_workers"] is None  # one worker per GPU


def test_wrong_type_names_key_and_type(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("kind: local-cpu\nn_workers: two\n")
    with pytest.raises(ClusterConfigError, match=r"bad.yaml: key 'n_workers' must be integer "
                                                 r"or null, got 'two' \(str\)"):
        load_config(str(p))
    assert load_config({"kind": "local-cpu", "processes": False})["processes"] is False
    with pytest.raises(ClusterConfigError, match="'processes' must be boolean, got 1"):
        load_config({"kind": "local-cpu", "processes": 1})
    with pytest.raises(ClusterConfigError, match="'n_workers' must be integer or null, got True"):
        load_config({"kind": "local-cpu", "n_workers": True})


def test_unknown_key_kind_and_shape(tmp_path):
    with pytest.raises(ClusterConfigError,
                       match=r"unknown keys \['n_gpus'\] for kind 'local-cuda'"):
        load_config({"kind": "local-cuda", "n_gpus": 2})
    with pytest.raises(ClusterConfigError, match=r"key 'kind' must be one of \['local-cpu', "
                       r"'local-cuda', 'scheduler', 'slurm'\], got 'k8s'"):
        load_config({"kind": "k8s"})
    p = tmp_path / "list.yaml"
    p.write_text("- kind: local-cpu\n")
    with pytest.raises(ClusterConfigError, match="must be a mapping of keys, got list"):
        load_config(str(p))
    with pytest.raises(ClusterConfigError, match="needs 'address' or 'scheduler_file'"):
        load_config({"kind": "scheduler"})
    with pytest.raises(ClusterConfigError, match="'n_workers' must be positive, got 0"):
        load_config({"kind": "local-cpu", "n_workers": 0})
    with pytest.raises(ClusterConfigError, match="neither a file nor one of"):
        config_path("no-such-config")


def test_slurm_job_script_rendering():
    script = render_job_script("slurm", host="10.0.0.5", queue="a100",
                               walltime="00:30:00", job_extra_directives=["--gres=gpu:2"])
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "#SBATCH -p a100" in lines
    assert "#SBATCH -t 00:30:00" in lines
    assert "#SBATCH --gres=gpu:2" in lines
    assert "#SBATCH --cpus-per-task=32" in lines
    assert "#SBATCH --mem=256GB" in lines
    cmd = lines[-1]
    assert "-m dask_cuda.cli tcp://10.0.0.5:8786" in cmd
    assert "--nthreads 1" in cmd
    with pytest.raises(ClusterConfigError, match="needs kind 'slurm'"):
        render_job_script("local-cpu")


def test_slurm_config_round_trip():
    """render_job_script takes what load_config returned; the workers connect to the host
    the config names (or the address given), never to loopback."""
    cfg = load_config("slurm", host="login1.cluster.example")
    assert cfg["host"] == "login1.cluster.example" and cfg["interface"] is None
    assert load_config(cfg) == cfg
    script = render_job_script(cfg)
    assert "-m dask_cuda.cli tcp://login1.cluster.example:8786" in script.splitlines()[-1]
    assert "127.0.0.1" not in script
    ib = load_config("slurm", interface="ib0")
    assert ib["host"] is None and ib["interface"] == "ib0"
    script = render_job_script(ib, scheduler="tcp://10.1.0.7:8786")
    assert "tcp://10.1.0.7:8786" in script and "--interface ib0" in script


def test_tls_keys_and_dashboard_binding(tmp_path):
    cfg = load_config("local-tls")
    assert cfg["tls"] == {"self_signed": True} and cfg["host"] == "127.0.0.1"
    with pytest.raises(ClusterConfigError, match=r"unknown keys \['cafile'\] under 'tls'"):
        load_config({"kind": "local-cpu", "tls": {"cafile": "x"}})
    with pytest.raises(ClusterConfigError, match="needs self_signed: true, or ca_file, cert"):
        load_config({"kind": "local-cpu", "tls": {"cert": "a.pem"}})
    with pytest.raises(ClusterConfigError, match=r"'tls.key' is not a file: '.*nokey.pem'"):
        (tmp_path / "ca.pem").write_text("x")
        load_config({"kind": "local-cpu", "tls": {"ca_file": str(tmp_path / "ca.pem"),
                                                  "cert": str(tmp_path / "ca.pem"),
                                                  "key": str(tmp_path / "nokey.pem")}})
    with pytest.raises(ClusterConfigError, match="'tls.self_signed' must be boolean"):
        load_config({"kind": "scheduler", "address": "tls://127.0.0.1:1", "tls": {
            "self_signed": "yes"}})
    # a dashboard given as a bare port binds to the host, not to every interface
    assert load_config({"kind": "local-cpu", "dashboard_address": ":8790"}
                       )["dashboard_address"] == "127.0.0.1:8790"
    assert load_config({"kind": "local-cuda", "dashboard_address": "8790"}
                       )["dashboard_address"] == "127.0.0.1:8790"


def test_local_cluster_binds_to_loopback(client):
    """The scheduler, the workers and the dashboard (HTTP) of a local cluster listen on
    127.0.0.1 only."""
    from urllib.parse import urlparse

    from distributed.comm import get_address_host

    from hydroscale.distributed import worker_addresses

    assert get_address_host(client.scheduler.address) == "127.0.0.1"
    addrs = list(worker_addresses(client).values())
    assert len(addrs) == 2
    for addr in addrs:
        assert get_address_host(addr) == "127.0.0.1"
    assert urlparse(client.dashboard_link).hostname == "127.0.0.1"
    http = client.cluster.scheduler.http_server
    assert http.address == "127.0.0.1"


def test_in_process_cluster_on_loopback_with_a_working_dashboard_link():
    """processes: false runs the workers in this process, over TCP on 127.0.0.1 (inproc://
    takes no host), and the printed dashboard link is the address it listens on."""
    import urllib.request

    from distributed.comm import get_address_host

    from hydroscale.distributed import start_cluster

    c = start_cluster("local-cpu", n_workers=1, processes=False,
                      dashboard_address="127.0.0.1:0")
    try:
        assert get_address_host(c.scheduler.address) == "127.0.0.1"
        assert c.submit(sum, [1, 2]).result() == 3
        with urllib.request.urlopen(c.dashboard_link, timeout=10) as r:
            assert r.status == 200
    finally:
        cluster = c.cluster
        c.close()
        cluster.close()


def test_local_cuda_without_dask_cuda_names_the_extra(monkeypatch):
    """dask-cuda is the optional `cuda` extra: a local-cuda cluster without it is refused
    before anything starts, with the install command (and no other cluster is started)."""
    import sys

    from hydroscale.distributed import start_cluster

    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # as if it were not installed
    with pytest.raises(ClusterConfigError) as err:
        start_cluster("local-cuda")
    msg = str(err.value)
    assert "local-cuda.yaml: a local-cuda cluster needs dask-cuda" in msg
    assert "pip install 'hydroscale[cuda]'" in msg and "--cluster local-cpu" in msg
