"""`gateway serve --workers N`: one metrics directory for all workers, and their supervisor.

uvicorn's own supervisor passes SIGTERM on to its workers up to half a second late, and
keeps its copy of the listening socket open until they have all exited, so the kernel
still queues new connections that no worker will ever accept. This one passes the signal
on at once (each worker drains, gateway/drain.py) and closes its copy, so connections
are refused once the workers have closed theirs.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn
from prometheus_client import multiprocess
from uvicorn.supervisors.multiprocess import Multiprocess

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def metrics_dir() -> Iterator[str]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for the workers (files left from another run would
    add to the counts), removed when the server exits."""
    path = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ[METRICS_DIR] = path
    try:
        yield path
    finally:
        os.environ.pop(METRICS_DIR, None)
        shutil.rmtree(path, ignore_errors=True)


class Supervisor(Multiprocess):
    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        kwargs: dict[str, Any] = {"sockets": sockets}
        if "target" in inspect.signature(Multiprocess.__init__).parameters:  # older uvicorn
            kwargs["target"] = uvicorn.Server(config).run
        super().__init__(config, **kwargs)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        self.signal_queue.append(sig)  # the main loop then stops as uvicorn's does
        for process in list(self.processes):
            if process.pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(process.pid, signal.SIGTERM)

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()

    def keep_subprocess_alive(self) -> None:
        before = {p.pid for p in self.processes}
        super().keep_subprocess_alive()
        path = os.environ.get(METRICS_DIR)
        for pid in before - {p.pid for p in self.processes}:
            if pid is not None and path:
                # A worker that died: its live gauges (requests in flight) go with it.
                multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
