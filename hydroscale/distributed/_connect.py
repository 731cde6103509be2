"""Reaching a running scheduler: a Dask handshake with a deadline, before ``Client``.

``distributed.Client(address, timeout=...)`` bounds the TCP connection by ``timeout`` but not
the handshake that follows, so an address that answers another protocol (the dashboard's
HTTP port by mistake, a proxy) hangs for ever, or dies reading the reply's first 8 bytes
(``HTTP/1.1``) as a frame length: "Unable to allocate 3.07 EiB".  :func:`probe_scheduler`
opens one connection and completes the handshake within ``timeout`` seconds, or says what
the address is likely to be.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._config import ClusterConfigError

__all__ = ["probe_scheduler", "scheduler_file_address"]

logger = logging.getLogger(__name__)

#: seconds the handshake may take beyond ``timeout``: the connection attempt itself is
#: bounded by ``timeout`` inside ``distributed.comm.connect`` and fails first on its own
_GRACE = 1.0


async def _handshake(address: str, timeout: float, connection_args: dict[str, Any]) -> None:
    from distributed.comm import connect

    comm = await connect(address, timeout=timeout, **connection_args)
    comm.abort()


def _run(address: str, timeout: float, connection_args: dict[str, Any]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(_handshake(address, timeout, connection_args), timeout + _GRACE)

    # a fresh event loop in its own thread: the caller may be inside a running loop
    with ThreadPoolExecutor(1, thread_name_prefix="hydroscale-probe") as pool:
        pool.submit(asyncio.run, bounded()).result()


def _not_dask(source: str, address: str, what: str) -> str:
    return (
        f"{source}: {address} {what}: it is not a Dask scheduler. Is this the dashboard "
        "port (8787 by default) or another service? The scheduler listens on 8786 by default "
        "(`dask scheduler` prints 'Scheduler at: tcp://HOST:8786'); a scheduler with TLS "
        "needs a tls:// address and the config's 'tls' key. Set 'address' to the "
        "scheduler's address"
    )


def probe_scheduler(address: str, timeout: float, security: Any = None,
                    source: str = "<dict>") -> None:
    """Connect to ``address`` and complete the Dask handshake within ``timeout`` seconds.

    Raises
    ------
    ClusterConfigError
        Nothing answers at ``address`` within ``timeout`` s, or something answers that does
        not speak the Dask protocol (no handshake within ``timeout`` s, the connection
        closed, or bytes that are not a Dask message); the message names the address and
        the likely mistake.
    """
    from distributed.comm import CommClosedError

    args = security.get_connection_args("client") if security is not None else {}
    try:
        _run(address, float(timeout), args)
    except asyncio.TimeoutError:
        raise ClusterConfigError(_not_dask(
            source, address, f"accepted a connection but sent no Dask handshake within "
            f"{timeout:g} s")) from None
    except CommClosedError as err:
        raise ClusterConfigError(_not_dask(
            source, address, f"closed the connection during the Dask handshake ({err})")) \
            from None
    except OSError as err:
        raise ClusterConfigError(
            f"{source}: no Dask scheduler answers at {address} within {timeout:g} s ({err}). "
            "Is the scheduler running, and are its host and port right (`dask scheduler` "
            "prints 'Scheduler at: tcp://HOST:8786')? Raise 'timeout' if it is still "
            "starting"
        ) from None
    except Exception as err:  # noqa: BLE001 - any garbage in the reply
        # e.g. b"HTTP/1.1" read as a frame length: a MemoryError for 3.07 EiB
        why = "" if isinstance(err, MemoryError) else f" ({type(err).__name__})"
        raise ClusterConfigError(_not_dask(
            source, address, f"answered with bytes that are not a Dask message{why}")) \
            from None
    logger.debug("a Dask scheduler answers at %s", address)


def scheduler_file_address(path: str) -> str | None:
    """The ``address`` a scheduler wrote to its scheduler file, or None while the file is
    missing or not readable yet (the scheduler may still be writing it)."""
    import json

    try:
        with open(path) as f:
            address = json.load(f).get("address")
    except (OSError, ValueError, AttributeError):
        return None
    return address if isinstance(address, str) else None
