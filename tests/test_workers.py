"""`gateway serve --workers N`: /metrics adds up every worker; in-memory limits are refused;
SIGTERM to the supervisor drains every worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import Process, free_port
from tests.conftest import REPO, UPSTREAM_KEY, FakeUpstream, run_process
from tests.test_drain import refuses_connections, stream

DEMO = """
providers: {mock: {type: mock, models: [demo]}}
routing: {default_model: demo}
cache: {enabled: false}
"""
LIMITED = """
providers: {mock: {type: mock, models: [demo]}}
routing: {default_model: demo}
tiers: {standard: {requests_per_minute: 10}}
auth: {default_tier: standard}
"""


def write(tmp: Path, text: str) -> Path:
    path = tmp / f"gateway-{free_port()}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def serve(config: Path, tmp: Path, workers: int = 2) -> tuple[str, Path]:
    """A gateway with several workers; its temporary files (the metrics dir) under `tmp`."""
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(config),
           "--workers", str(workers)]  # fmt: skip
    env = {"TMPDIR": str(tmp), "REDIS_URL": "", "GATEWAY_PORT": ""}
    proc, url = run_process("gateway-workers", cmd, tmp, env, timeout=60)
    _RUNNING.append(proc)
    return url, tmp


_RUNNING: list[Process] = []


def wait_until(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _stop_servers() -> Iterator[None]:
    yield
    while _RUNNING:
        _RUNNING.pop().stop()


def served_by_worker(tmp: Path) -> list[float]:
    """Chat requests counted by each worker, from its own file in the metrics directory:
    only to know that the kernel spread the connections over both."""
    counts = []
    for path in sorted(tmp.glob("gateway-metrics-*/counter_*.db")):
        values = MmapedDict.read_all_values_from_file(str(path))
        counts.append(sum(v for k, v, *_ in values if json.loads(k)[1] == "gateway_requests_total"))
    return counts


def chat_total(metrics_text: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "gateway_requests":
            return sum(
                s.value
                for s in family.samples
                if s.name == "gateway_requests_total" and s.labels["endpoint"] == "chat"
            )
    return 0.0


def chat_once(url: str) -> None:
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=url, timeout=30) as fresh:  # a new connection every time
        assert fresh.post("/v1/chat/completions", json=body).status_code == 200


def test_metrics_add_up_every_worker(tmp_path: Path) -> None:
    url, tmp = serve(write(tmp_path, DEMO), tmp_path)
    sent = 0
    while sent < 40 or min(served_by_worker(tmp), default=0) == 0:
        assert sent < 400, f"one worker took every connection: {served_by_worker(tmp)}"
        chat_once(url)
        sent += 1
    counts = served_by_worker(tmp)
    assert len(counts) == 2 and sum(counts) == sent
    for _ in range(8):  # fresh connections: the scrapes land on either worker
        with httpx.Client(base_url=url, timeout=30) as fresh:
            assert chat_total(fresh.get("/metrics").text) == sent


def test_workers_refused_with_in_memory_limits(tmp_path: Path) -> None:
    config = write(tmp_path, LIMITED)
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--workers", "2",
           "--port", str(free_port())]  # fmt: skip
    env = dict(os.environ, REDIS_URL="")
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert refused.returncode == 1
    assert "tiers.standard" in refused.stderr and "state.redis_url" in refused.stderr

    config.write_text(LIMITED + "server: {workers: 2}\n")
    check = [sys.executable, "-m", "gateway", "check-config", str(config)]
    checked = subprocess.run(check, capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert checked.returncode == 1
    assert "server.workers" in checked.stderr and "state.redis_url" in checked.stderr

    # With Redis named, the limits are shared: the config is valid (nothing connects here).
    config.write_text(LIMITED + "server: {workers: 2}\nstate: {redis_url: redis://127.0.0.1:1}\n")
    checked = subprocess.run(check, capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert checked.returncode == 0, checked.stderr


def test_a_reload_to_in_memory_limits_is_refused_with_workers(tmp_path: Path) -> None:
    config = write(tmp_path, DEMO)
    url, _ = serve(config, tmp_path)
    wait_until(lambda: _RUNNING[-1].log_path.read_text().count('"started"') == 2, 20)
    config.write_text(LIMITED.replace("requests_per_minute: 10", "requests_per_minute: 1"))

    def invalid_reloads() -> float:
        with httpx.Client(base_url=url, timeout=30) as fresh:
            text = fresh.get("/metrics").text
        for family in text_string_to_metric_families(text):
            if family.name == "gateway_config_reloads":
                return sum(s.value for s in family.samples if s.labels["result"] == "invalid")
        return 0.0

    wait_until(lambda: invalid_reloads() == 2, 20)  # each worker watched the file, refused it
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=url, timeout=30) as one_worker:  # one connection, one worker
        statuses = [one_worker.post("/v1/chat/completions", json=body).status_code
                    for _ in range(4)]  # fmt: skip
    assert statuses == [200] * 4  # the old config, without the 1-a-minute limit, still serves


def test_sigterm_to_the_supervisor_drains_every_worker(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    config = f"""
    server: {{drain_delay_seconds: 2.0}}
    providers:
      openai: {{type: openai, base_url: "{fake_upstream.base_url}", api_key: {UPSTREAM_KEY},
               models: [gpt-4o-mini]}}
    routing: {{default_model: gpt-4o-mini}}
    cache: {{enabled: false}}
    """
    url, tmp = serve(write(tmp_path, config), tmp_path)
    gateway = _RUNNING[-1]
    in_flight = stream(url, {"x-fake-chunks": "20", "x-fake-interval-ms": "300"})  # 6 s
    gateway.popen.send_signal(signal.SIGTERM)  # the supervisor only, as Kubernetes does
    # The supervisor passes the signal on; each worker then answers 503 at once.
    wait_until(lambda: httpx.get(url + "/readyz", timeout=5).status_code == 503, 1.5)
    wait_until(lambda: refuses_connections(url), 15)
    assert in_flight.is_alive() and gateway.alive()  # refused by a server still serving
    in_flight.join(60)
    events = in_flight.events()
    assert in_flight.error is None and len(events) >= 16 and events[-1] == "[DONE]"
    assert gateway.popen.wait(timeout=30) == 0
    assert not list(tmp.glob("gateway-metrics-*")), "the metrics directory was left behind"
