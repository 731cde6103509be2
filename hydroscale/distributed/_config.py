"""Cluster start-up from the YAML files of ``cluster_configs/`` (DESIGN §2, §3).

A config is a YAML mapping with a ``kind`` and that kind's keys::

    kind: local-cuda          # local-cpu | local-cuda | scheduler | slurm
    n_workers: null           # one worker per visible GPU
    host: 127.0.0.1
    dashboard_address: "127.0.0.1:8787"
    tls: {self_signed: true}  # optional: TLS between client, scheduler and workers

:func:`load_config` validates it (an unknown key, or a value of the wrong type, is a
:class:`ClusterConfigError` naming the file, the key, the expected type and the value);
:func:`start_cluster` starts (or connects to) the cluster and returns a
``distributed.Client``.  ``config=None`` picks ``local-cuda`` when GPUs are visible and
``local-cpu`` otherwise.  Schedulers and dashboards bind to 127.0.0.1 unless the config says
otherwise (a dashboard given as a bare port binds to ``host``, never to every interface).

``scheduler`` connects to a running scheduler: its ``address`` must complete the Dask
handshake within ``timeout`` seconds (an address answering another protocol, such as the
dashboard's HTTP port, is refused naming it).  ``slurm`` needs a scheduler address the compute
nodes reach: ``interface`` (e.g. ``ib0``) or ``host`` (the login node); loopback is refused.

``tls`` secures every connection (client, scheduler, workers) with ``distributed.Security``:
``{self_signed: true}`` makes a throw-away self-signed certificate in memory (needs the
``cryptography`` package: ``pip install hydroscale[tls]``); ``{ca_file, cert, key}`` (PEM
paths; optional ``client_cert``/``client_key``) uses yours.  Addresses then start with
``tls://``.  Work stealing is off by default in clusters hydroscale starts: routing tasks
are placed on the worker holding their group, and a stolen one would rebuild that group's
kernels elsewhere.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml

from ._recovery import worker_addresses

__all__ = [
    "CONFIG_KINDS",
    "ClusterConfigError",
    "config_path",
    "gpus_visible",
    "load_config",
    "make_security",
    "render_job_script",
    "start_cluster",
]

logger = logging.getLogger(__name__)

_OPT = type(None)
_STR = (str,)
_INT = (int,)
_NUM = (int, float)
_BOOL = (bool,)
_LIST = (list,)
_MAP = (dict,)

#: Keys of both local kinds (a cluster started on this machine, bound to loopback).
_LOCAL: dict[str, tuple[tuple[type, ...], Any]] = {
    "n_workers": (_INT + (_OPT,), None),
    "memory_limit": (_STR + _INT + (_OPT,), "auto"),
    "host": (_STR, "127.0.0.1"),
    "dashboard_address": (_STR + (_OPT,), "127.0.0.1:8787"),
    "local_directory": (_STR + (_OPT,), None),
    "silence_logs": (_STR + _INT + _BOOL, "ERROR"),
    "env": (_MAP, {}),
    "work_stealing": (_BOOL, False),
    "tls": (_MAP + (_OPT,), None),
    # how long the cluster waits for a lost worker's nanny to bring it back before closing
    # that nanny for good (Dask's default, 15 s, is shorter than a restart on a busy node)
    "lost_worker_timeout": (_STR + _NUM, "10 minutes"),
}

#: Schema per kind: key -> (allowed Python types, default).  ``None`` defaults are left to
#: the library started (Dask picks the number of workers, threads, ...).
CONFIG_KINDS: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "local-cpu": {
        **_LOCAL,
        "threads_per_worker": (_INT + (_OPT,), None),
        "processes": (_BOOL, True),
    },
    "local-cuda": {
        **_LOCAL,
        "CUDA_VISIBLE_DEVICES": (_STR + _LIST + (_OPT,), None),
        "threads_per_worker": (_INT, 1),
        "device_memory_limit": (_STR + _NUM + (_OPT,), "default"),
        "protocol": (_STR + (_OPT,), None),
        "rmm_pool_size": (_STR + _INT + (_OPT,), None),
    },
    "scheduler": {
        "address": (_STR + (_OPT,), None),
        "scheduler_file": (_STR + (_OPT,), None),
        "timeout": (_NUM, 30),
        "wait_for_workers": (_INT + (_OPT,), None),
        "tls": (_MAP + (_OPT,), None),
    },
    "slurm": {
        "jobs": (_INT, 1),
        "cores": (_INT, 16),
        "memory": (_STR, "64GB"),
        "processes": (_INT, 1),
        "job_cpu": (_INT + (_OPT,), None),
        "job_mem": (_STR + (_OPT,), None),
        "queue": (_STR + (_OPT,), None),
        "account": (_STR + (_OPT,), None),
        "walltime": (_STR, "01:00:00"),
        "interface": (_STR + (_OPT,), None),
        "local_directory": (_STR + (_OPT,), None),
        "log_directory": (_STR + (_OPT,), None),
        "python": (_STR + (_OPT,), None),
        "worker_command": (_STR + (_OPT,), None),
        "worker_extra_args": (_LIST, []),
        "job_extra_directives": (_LIST, []),
        "job_script_prologue": (_LIST, []),
        # no default: the scheduler must listen where compute nodes reach it (host or
        # interface, see _check_slurm_scheduler); loopback never does
        "host": (_STR + (_OPT,), None),
        "dashboard_address": (_STR + (_OPT,), "127.0.0.1:8787"),
        "wait_for_workers": (_INT + (_OPT,), None),
        "work_stealing": (_BOOL, False),
    },
}

#: host names that mean this machine only
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost",
                             "ip6-loopback"})

#: keys of a ``tls`` mapping -> allowed types
TLS_KEYS: dict[str, tuple[type, ...]] = {
    "self_signed": _BOOL, "ca_file": _STR, "cert": _STR, "key": _STR, "client_cert": _STR,
    "client_key": _STR,
}


class ClusterConfigError(ValueError):
    """A cluster config that cannot be used; the message names the file and the key."""


def _type_names(types: tuple[type, ...]) -> str:
    names = {str: "string", int: "integer", float: "number", bool: "boolean", list: "list",
             dict: "mapping", type(None): "null"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _configs_dir() -> Path:
    env = os.environ.get("HYDROSCALE_CLUSTER_CONFIGS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "cluster_configs"


def config_path(name: str) -> Path:
    """The YAML file for ``name``: an existing path, or ``<name>.yaml`` in the configs folder
    (``$HYDROSCALE_CLUSTER_CONFIGS`` or the repository's ``cluster_configs/``)."""
    p = Path(name)
    if p.is_file():
        return p
    cand = _configs_dir() / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if cand.is_file():
        return cand
    known = sorted(q.stem for q in _configs_dir().glob("*.yaml")) if _configs_dir().is_dir() \
        else []
    raise ClusterConfigError(
        f"cluster config {name!r} is neither a file nor one of {known} in {_configs_dir()} "
        "(set HYDROSCALE_CLUSTER_CONFIGS to a folder of configs)"
    )


def load_config(config: str | os.PathLike | dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Read and validate a cluster config.

    Parameters
    ----------
    config : a config name (``"local-cpu"``), a YAML path, or an already-parsed mapping.
    overrides : keys replacing the file's (e.g. ``n_workers=2``), validated the same way.

    Returns
    -------
    dict with ``kind`` and every key of that kind (defaults filled in) and ``source`` (the
    file read); such a dict is itself a valid ``config`` (its ``source`` is kept).

    Raises
    ------
    ClusterConfigError
        Not a mapping, a missing or unknown ``kind``, an unknown key, a value of the
        wrong type (the message names the key, the expected type and the value), or a
        ``slurm`` config without a scheduler host the compute nodes can reach (``host`` on
        loopback, or neither ``host`` nor ``interface``).
    """
    cfg = _load(config, overrides)
    if cfg["kind"] == "slurm":
        _check_slurm_scheduler(cfg)
    return cfg


def _load(config: str | os.PathLike | dict[str, Any], overrides: dict[str, Any]
          ) -> dict[str, Any]:
    """:func:`load_config` but for the ``slurm`` scheduler host check."""
    if isinstance(config, dict):
        raw = dict(config)
        source = str(raw.pop("source", None) or "<dict>")  # a config load_config returned
    else:
        path = config_path(os.fspath(config))
        source = str(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ClusterConfigError(f"{source}: not valid YAML: {err}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ClusterConfigError(
                f"{source}: a cluster config must be a mapping of keys, got "
                f"{type(raw).__name__}"
            )
    raw.update(overrides)
    kind = raw.pop("kind", None)
    if kind not in CONFIG_KINDS:
        raise ClusterConfigError(
            f"{source}: key 'kind' must be one of {sorted(CONFIG_KINDS)}, got {kind!r}"
        )
    schema = CONFIG_KINDS[kind]
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ClusterConfigError(
            f"{source}: unknown keys {unknown} for kind {kind!r}; allowed: {sorted(schema)}"
        )
    out: dict[str, Any] = {"kind": kind, "source": source}
    for key, (types, default) in schema.items():
        val = raw.get(key, default)
        ok = isinstance(val, types) and not (isinstance(val, bool) and bool not in types)
        if not ok:
            raise ClusterConfigError(
                f"{source}: key {key!r} must be {_type_names(types)}, got {val!r} "
                f"({type(val).__name__})"
            )
        out[key] = val
    if kind == "scheduler" and not (out["address"] or out["scheduler_file"]):
        raise ClusterConfigError(f"{source}: kind 'scheduler' needs 'address' or "
                                 "'scheduler_file'")
    for key in ("n_workers", "threads_per_worker", "jobs", "cores", "processes"):
        val = out.get(key)
        # a bool 'processes' (LocalCluster: worker processes or threads) is no count
        if val is not None and not isinstance(val, bool) and val < (0 if key == "jobs" else 1):
            raise ClusterConfigError(f"{source}: key {key!r} must be positive, got {out[key]}")
    if out.get("tls") is not None:
        out["tls"] = _check_tls(out["tls"], source)
    if out.get("dashboard_address") is not None and "host" in out:
        out["dashboard_address"] = _bind_dashboard(out["dashboard_address"],
                                                   out["host"] or "127.0.0.1")
    return out


def _is_loopback(host: str) -> bool:
    import ipaddress

    h = host.strip().strip("[]").lower()
    if h in _LOOPBACK_NAMES or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:  # a host name
        return False


_SLURM_FIX = ("set `interface:` to the network interface the login and compute nodes share "
              "(e.g. `interface: ib0` for InfiniBand) or `host:` to the login node's hostname "
              "or IP address (TLS is recommended once the scheduler listens off loopback)")


def _check_slurm_scheduler(cfg: dict[str, Any]) -> None:
    """Refuse a ``slurm`` scheduler that compute nodes cannot reach: every job script would
    point its workers at it."""
    host, source = cfg["host"], cfg["source"]
    if host is not None and _is_loopback(host):
        raise ClusterConfigError(
            f"{source}: key 'host' is {host!r}, a loopback address: the scheduler would "
            "listen on the login node only and no compute node's worker could reach it; "
            f"{_SLURM_FIX}"
        )
    if host is None and cfg["interface"] is None:
        raise ClusterConfigError(
            f"{source}: kind 'slurm' needs a scheduler address the compute nodes can reach, "
            f"got host null and interface null: {_SLURM_FIX}"
        )


def _check_tls(tls: dict[str, Any], source: str) -> dict[str, Any]:
    unknown = sorted(set(tls) - set(TLS_KEYS))
    if unknown:
        raise ClusterConfigError(f"{source}: unknown keys {unknown} under 'tls'; allowed: "
                                 f"{sorted(TLS_KEYS)}")
    for key, val in tls.items():
        if not isinstance(val, TLS_KEYS[key]):
            raise ClusterConfigError(f"{source}: key 'tls.{key}' must be "
                                     f"{_type_names(TLS_KEYS[key])}, got {val!r}")
    files = [k for k in ("ca_file", "cert", "key") if k in tls]
    if tls.get("self_signed"):
        if files:
            raise ClusterConfigError(f"{source}: 'tls' has self_signed: true and {files}; "
                                     "give one or the other")
    elif len(files) != 3:
        raise ClusterConfigError(f"{source}: 'tls' needs self_signed: true, or ca_file, cert "
                                 f"and key (PEM paths); got {sorted(tls)}")
    else:
        for k in ("ca_file", "cert", "key", "client_cert", "client_key"):
            if k in tls and not Path(tls[k]).is_file():
                raise ClusterConfigError(f"{source}: 'tls.{k}' is not a file: {tls[k]!r}")
    return dict(tls)


def _bind_dashboard(address: str, host: str) -> str:
    """A dashboard given as a port alone (``":8787"``, ``"8787"``) binds to ``host`` (Dask
    would bind it to every interface)."""
    a = str(address).strip()
    if a.isdigit():
        return f"{host}:{a}"
    if a.startswith(":"):
        return f"{host}{a}"
    return a


def make_security(tls: dict[str, Any] | None) -> Any:
    """A ``distributed.Security`` for a validated ``tls`` mapping (None: no TLS)."""
    if not tls:
        return None
    from distributed import Security

    if tls.get("self_signed"):
        try:
            return Security.temporary()
        except ImportError as err:
            raise ClusterConfigError(
                "tls: self_signed needs the 'cryptography' package (pip install "
                "'hydroscale[tls]'), or give ca_file, cert and key") from err
    ck, cc = tls.get("client_key", tls["key"]), tls.get("client_cert", tls["cert"])
    return Security(require_encryption=True, tls_ca_file=tls["ca_file"],
                    tls_scheduler_cert=tls["cert"], tls_scheduler_key=tls["key"],
                    tls_worker_cert=tls["cert"], tls_worker_key=tls["key"],
                    tls_client_cert=cc, tls_client_key=ck)


def gpus_visible() -> int:
    """Number of CUDA devices visible to this process (0 without a GPU or a driver)."""
    try:
        from dask_cuda.utils import get_n_gpus

        return int(get_n_gpus())
    except Exception:  # noqa: BLE001 - no driver, no NVML: no GPU
        pass
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # noqa: BLE001
        return 0


def _slurm_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    kw = {k: cfg[k] for k in ("cores", "memory", "processes", "job_cpu", "job_mem", "queue",
                              "account", "walltime",
                              "interface", "local_directory", "log_directory", "python",
                              "worker_command", "worker_extra_args", "job_extra_directives",
                              "job_script_prologue") if cfg[k] is not None}
    return kw


def render_job_script(config: str | os.PathLike | dict[str, Any],
                      scheduler: str | None = None, **overrides: Any) -> str:
    """The SLURM batch script a ``slurm`` config submits per job (no scheduler started).

    ``config`` is a config name, path or mapping (what :func:`load_config` returned
    included); ``scheduler`` is the address the workers connect to, by default
    ``tcp://<host>:8786`` from the config's ``host``, or the address of its ``interface``
    on this machine (render on the login node).  A loopback address is refused: no worker
    on a compute node could reach it.
    """
    cfg = _load(config, overrides)
    if cfg["kind"] != "slurm":
        raise ClusterConfigError(f"{cfg['source']}: render_job_script needs kind 'slurm', got "
                                 f"{cfg['kind']!r}")
    if scheduler is None:
        _check_slurm_scheduler(cfg)
        scheduler = f"tcp://{_interface_ip(cfg) if cfg['host'] is None else cfg['host']}:8786"
    else:
        from distributed.comm import get_address_host

        if _is_loopback(get_address_host(scheduler)):
            raise ClusterConfigError(
                f"{cfg['source']}: scheduler {scheduler!r} is a loopback address: no worker on "
                f"a compute node could reach it; give the login node's address, or "
                f"{_SLURM_FIX}"
            )
    from dask_jobqueue.slurm import SLURMJob

    job = SLURMJob(scheduler=scheduler, name="hydroscale-worker", **_slurm_kwargs(cfg))
    return job.job_script()


def _interface_ip(cfg: dict[str, Any]) -> str:
    from distributed.utils import get_ip_interface

    try:
        return get_ip_interface(cfg["interface"])
    except ValueError as err:
        raise ClusterConfigError(
            f"{cfg['source']}: interface {cfg['interface']!r} has no address on this machine "
            f"({err}); render the job script on the login node, pass "
            "scheduler='tcp://HOST:8786', or set `host:`"
        ) from None


def _log_level(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _scheduler_config(cfg: dict[str, Any]) -> Any:
    """Dask settings read when the scheduler starts (in this process for local and SLURM
    clusters)."""
    import dask

    return dask.config.set({"distributed.scheduler.work-stealing": cfg["work_stealing"]})


def _keep_lost_workers(cfg: dict[str, Any]) -> None:
    """Let a local cluster's nannies restart a lost worker however long it takes (up to
    ``lost_worker_timeout``).  Dask reads the setting each time a worker leaves, for as long
    as the cluster lives, in this (the cluster's) process: it is set process-wide."""
    import dask

    dask.config.set({"distributed.deploy.lost-worker-timeout": cfg["lost_worker_timeout"]})


def _tls_kwargs(cfg: dict[str, Any], security: Any) -> dict[str, Any]:
    return {} if security is None else {"security": security, "protocol": "tls://"}


def _local_cpu(cfg: dict[str, Any], security: Any) -> Any:
    from distributed import LocalCluster

    kw = {k: cfg[k] for k in ("n_workers", "threads_per_worker", "processes", "memory_limit",
                              "host", "dashboard_address", "local_directory", "silence_logs")
          if cfg[k] is not None}
    kw["silence_logs"] = _log_level(kw["silence_logs"])
    kw["dashboard_address"] = cfg["dashboard_address"]  # None: no dashboard (not Dask's :8787)
    comm = _tls_kwargs(cfg, security)
    if kw.get("processes") is False and not comm:
        # in-process workers would talk over inproc://, which takes no host (and the
        # dashboard link would name another address than the one it binds): TCP on loopback
        comm = {"protocol": "tcp://"}
    if cfg["env"]:
        os.environ.update({k: str(v) for k, v in cfg["env"].items()})
    _keep_lost_workers(cfg)
    with _scheduler_config(cfg):
        return LocalCluster(**kw, **comm)


def _local_cuda(cfg: dict[str, Any], security: Any) -> Any:
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as err:  # an optional dependency: the `cuda` extra
        raise ClusterConfigError(
            f"{cfg['source']}: a local-cuda cluster needs dask-cuda, which does not import "
            f"here ({err}); install it with `pip install 'hydroscale[cuda]'`, or run on CPU "
            "workers with --cluster local-cpu") from err

    kw = {k: cfg[k] for k in ("CUDA_VISIBLE_DEVICES", "n_workers", "threads_per_worker",
                              "memory_limit", "device_memory_limit", "protocol",
                              "rmm_pool_size", "host", "dashboard_address",
                              "local_directory", "silence_logs") if cfg[k] is not None}
    kw["silence_logs"] = _log_level(kw["silence_logs"])
    kw["dashboard_address"] = cfg["dashboard_address"]  # None: no dashboard (not Dask's :8787)
    if cfg["env"]:
        os.environ.update({k: str(v) for k, v in cfg["env"].items()})
    _keep_lost_workers(cfg)
    with _scheduler_config(cfg):
        return LocalCUDACluster(**{**kw, **_tls_kwargs(cfg, security)})


def _slurm(cfg: dict[str, Any], security: Any) -> Any:
    from dask_jobqueue import SLURMCluster

    # without a host, dask-jobqueue binds the scheduler to the workers' interface
    opts = {"dashboard_address": cfg["dashboard_address"]}
    if cfg["host"] is not None:
        opts["host"] = cfg["host"]
    with _scheduler_config(cfg):
        cluster = SLURMCluster(scheduler_options=opts, **_slurm_kwargs(cfg))
    cluster.scale(jobs=cfg["jobs"])
    return cluster


def start_cluster(config: str | os.PathLike | dict[str, Any] | None = None,
                  **overrides: Any) -> Any:
    """Start (or connect to) a Dask cluster and return a connected ``distributed.Client``.

    Parameters
    ----------
    config : config name or path (see :func:`load_config`), a mapping, or None: ``local-cuda``
        when GPUs are visible, else ``local-cpu``.
    overrides : config keys replacing the file's (e.g. ``n_workers=2``).

    Returns
    -------
    distributed.Client; for a cluster it started, ``client.cluster`` is that cluster (close
    both with ``client.close(); client.cluster.close()``, or use the client as a context
    manager and close the cluster after).
    """
    from distributed import Client

    from . import _sizeof  # noqa: F401  (dask sees the size of torch tensors in this process)

    if config is None:
        config = "local-cuda" if gpus_visible() else "local-cpu"
        logger.info("start_cluster: no config given, %d GPU(s) visible: using %s",
                    gpus_visible(), config)
    cfg = load_config(config, **overrides)
    kind = cfg["kind"]
    security = make_security(cfg.get("tls"))
    sec = {} if security is None else {"security": security}
    if kind == "scheduler":
        from ._connect import probe_scheduler, scheduler_file_address

        # Client bounds the connection by timeout, not the handshake after it: probe first
        if cfg["scheduler_file"]:
            address = scheduler_file_address(cfg["scheduler_file"])
            if address:  # else Client waits for the file to appear
                probe_scheduler(address, cfg["timeout"], security, cfg["scheduler_file"])
            client = Client(scheduler_file=cfg["scheduler_file"], timeout=cfg["timeout"], **sec)
        else:
            probe_scheduler(cfg["address"], cfg["timeout"], security, cfg["source"])
            client = Client(cfg["address"], timeout=cfg["timeout"], **sec)
    else:
        cluster = {"local-cpu": _local_cpu, "local-cuda": _local_cuda,
                   "slurm": _slurm}[kind](cfg, security)
        client = Client(cluster, **sec)
    if cfg.get("wait_for_workers"):
        client.wait_for_workers(cfg["wait_for_workers"])
    logger.info("cluster %s (%s): %d workers, dashboard %s", kind, cfg["source"],
                len(worker_addresses(client)), client.dashboard_link)
    return client
