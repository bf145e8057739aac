"""bench/soak.py's load checks at CI size, with the same bounds.

- a soak of 3,000 requests at concurrency 32 (mixed stream and non-stream, client
  hang-ups mid-stream, upstream 500s and 429s): RSS after warm-up grows under 10 %, open
  fds and upstream connections come back to their warm-up level, and none outlives the
  pool's keep-alive; no 500 of the gateway's own, every answer the expected one;
- 1,000 concurrent streams of seeded content: every byte the upstream sent arrives, in
  order (digests), and the gateway's RSS stays under 200 MB.

Each on a fresh gateway in front of a fake upstream of this module's own.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.soak import (
    EXPIRY_IDLE_S,
    digest_streams,
    gateway_config,
    has_traceback,
    raise_fd_limit,
    soak,
)
from tests.conftest import FakeUpstream, GatewayProcess, run_process, start_gateway


@pytest.fixture(scope="module")
def upstream(workdir: Path) -> Iterator[FakeUpstream]:
    raise_fd_limit()  # before any process starts: 1,000 streams need ~2,000 fds each side
    cmd = [sys.executable, "-m", "tests.fake_upstream"]
    proc, url = run_process("fake-soak", cmd, workdir, ready_path="/health")
    yield FakeUpstream(proc, url)
    proc.stop()


@pytest.fixture
def fresh_gateway(upstream: FakeUpstream, workdir: Path) -> Iterator[GatewayProcess]:
    gw = start_gateway(gateway_config(upstream.url), workdir)
    yield gw
    gw.process.stop()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_soak_leaks_nothing_and_answers_no_500(
    fresh_gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    gateway_port, upstream_port = port_of(fresh_gateway.url), port_of(upstream.url)
    pid = fresh_gateway.process.pid
    job = soak("127.0.0.1", gateway_port, pid, upstream_port, requests=3000, concurrency=32,
               expiry_idle_s=EXPIRY_IDLE_S, log=lambda _: None)  # fmt: skip
    result = asyncio.run(job)
    result.traceback = has_traceback(fresh_gateway.log())
    assert not result.problems(), result.table()
    assert all(result.kinds[k] > 0 for k in ("plain", "stream", "hangup", "e500", "e429"))
    assert result.warm.upstream > 0 and result.expired is not None  # the counts saw something
    assert result.statuses[500] == result.kinds["e500"]  # each one the upstream's, passed on


def test_1000_concurrent_streams_arrive_whole(fresh_gateway: GatewayProcess) -> None:
    result = asyncio.run(
        digest_streams("127.0.0.1", port_of(fresh_gateway.url), fresh_gateway.process.pid)
    )
    assert not result.problems(), result.table()
    assert result.ok == result.count == 1000
    assert not has_traceback(fresh_gateway.log())
