"""The Dask side of a batch: which scheduler, connecting to it, and computing lazy inputs safely.

Dask distributed is the engine (``client.map`` + ``as_completed``); there is no scheduler
here. Without a scheduler the files run one after the other in this process: the engine
already uses every core through torch's threads, so in-process parallelism would only
oversubscribe them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask

from napari_unet.scale.batch_types import SchedulerError, one_line

__all__ = [
    "CONNECT_TIMEOUT",
    "SCHEDULER_ENV",
    "Cluster",
    "connect",
    "local_dask",
    "resolve_scheduler",
]

SCHEDULER_ENV = "NAPARI_UNET_SCHEDULER"
CONNECT_TIMEOUT = "10s"  # how long to wait for a scheduler before saying it cannot be reached


def resolve_scheduler(cli_value: str | None) -> str | None:
    """``--scheduler``, else ``$NAPARI_UNET_SCHEDULER``, else in-process (None).

    ``none``/``in-process`` forces in-process (overriding the variable). Dask's own
    ``scheduler-address`` setting is deliberately not used: it is meant for other tools, and a
    batch that silently leaves the machine is surprising.
    """
    value = cli_value if cli_value is not None else os.environ.get(SCHEDULER_ENV) or None
    if value is None or value.strip().lower() in ("", "none", "in-process", "inprocess"):
        return None
    return value.strip()


@dataclass
class Cluster:
    """A Client, the LocalCluster we started for it (if any), and whether the Client is ours."""

    client: Any
    cluster: Any = None
    own_client: bool = True

    def close(self) -> None:
        """Close what we started; a Client the caller gave is left open."""
        if self.own_client:
            with contextlib.suppress(Exception):
                self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


def connect(scheduler: Any) -> Cluster:
    """A Client for ``scheduler``: an existing Client, ``local[:N]``, a scheduler file or an address."""
    try:  # local: distributed takes seconds to import; in-process batches never need it
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - distributed is a dependency
        raise SchedulerError("dask.distributed is not installed") from None
    if not isinstance(scheduler, str):
        return Cluster(scheduler, own_client=False)
    text = scheduler
    m = re.fullmatch(r"local(?::(\d+))?", text.lower())
    if m:
        n = int(m.group(1)) if m.group(1) else max(1, os.cpu_count() or 1)
        if n < 1:
            raise SchedulerError("local:N needs N >= 1 workers")
        try:
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                # its HTTP server (health, metrics) starts anyway: on a free port, not 8787
                scheduler_kwargs={"dashboard_address": ":0"},
                silence_logs=logging.ERROR,
            )
            return Cluster(Client(cluster), cluster)
        except Exception as exc:  # noqa: BLE001 - any start failure is one line
            raise SchedulerError(f"cannot start a local cluster ({one_line(exc)})") from None
    try:
        if text.lower().endswith(".json"):
            if not Path(text).is_file():
                raise SchedulerError("no such scheduler file")
            return Cluster(Client(scheduler_file=text, timeout=CONNECT_TIMEOUT))
        return Cluster(Client(text, timeout=CONNECT_TIMEOUT))
    except SchedulerError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, ValueError for bad addresses
        raise SchedulerError(f"cannot connect ({one_line(exc) or type(exc).__name__})") from None


def _on_dask_worker() -> bool:
    if "distributed" not in sys.modules:  # not imported: this cannot be a worker
        return False
    from distributed import get_worker  # local: distributed takes seconds to import

    try:
        get_worker()
    except ValueError:
        return False
    return True


@contextlib.contextmanager
def local_dask() -> Iterator[None]:
    """Compute lazy inputs here, never on a distributed Client that happens to be around.

    Inside a task, dask would otherwise pick the worker's client and queue the file's chunks
    behind the very tasks that wait for them. One thread on a worker (it has one core's
    share), a thread pool in-process.
    """
    with dask.config.set(scheduler="synchronous" if _on_dask_worker() else "threads"):
        yield
