"""Hot reload: the file watched, SIGHUP, POST /admin/reload and `gateway reload`; a bad file
changes nothing; in-flight streams finish on the config they started on; limits, spend,
cached answers and unchanged providers (their breakers, their pools) carry over."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.procs import free_port, start, wait_ready
from tests.conftest import REPO, UPSTREAM_KEY, FakeUpstream, GatewayProcess
from tests.test_policy import error_of, metric, wait_until

ADMIN = "sk-reload-admin"
KEY = "sk-reload-key"
HTTP = httpx.Client(timeout=30)


def config_text(fake: FakeUpstream, dead_port: int, default: str = "cloud", rpm: int = 4) -> str:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    return f"""
auth:
  admin_keys: ["{ADMIN}"]
  keys: [{{name: k, sha256: {digest}, tier: small}}]
tiers: {{small: {{requests_per_minute: {rpm}}}}}
providers:
  openai: {{type: openai, base_url: "{fake.base_url}", api_key: {UPSTREAM_KEY},
           models: [gpt-4o-mini]}}
  dead: {{type: openai, base_url: "http://127.0.0.1:{dead_port}/v1", api_key: sk,
         models: [dead-model], breaker: {{failures: 1, cooldown_seconds: 600}}}}
  mock: {{type: mock, models: [demo]}}
aliases: {{cloud: openai:gpt-4o-mini}}
routing: {{default_model: {default}}}
"""


class Gateway:
    """A gateway process of the test's own: its config file is rewritten by the tests."""

    def __init__(self, path: Path, workdir: Path) -> None:
        self.path = path
        port = free_port()
        cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", str(port)]
        env = {"GATEWAY_API_KEYS": "", "REDIS_URL": "", "GATEWAY_PORT": ""}
        self.process = start("gateway", cmd, workdir / f"reload-{port}.log", env, REPO)
        wait_ready(self.process, "127.0.0.1", port, "GET", "/healthz", None, {}, 30)
        self.url = f"http://127.0.0.1:{port}"
        self.gw = GatewayProcess(self.process, self.url)

    def chat(self, model: str = "auto", **extra: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {KEY}"} | extra.pop("headers", {})
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
        return HTTP.post(self.url + "/v1/chat/completions", json=body, headers=headers)

    def reloads(self, result: str) -> float:
        return metric(self.gw, "gateway_config_reloads_total", result=result)


@pytest.fixture
def gateway(fake_upstream: FakeUpstream, workdir: Path) -> Iterator[Gateway]:
    path = workdir / f"reload-{free_port()}.yaml"
    dead = free_port()
    path.write_text(config_text(fake_upstream, dead))
    gw = Gateway(path, workdir)
    gw.dead_port = dead  # type: ignore[attr-defined]
    yield gw
    gw.process.stop()


def rewrite(gw: Gateway, fake: FakeUpstream, **changes: Any) -> None:
    gw.path.write_text(config_text(fake, gw.dead_port, **changes))  # type: ignore[attr-defined]


def test_a_changed_file_is_picked_up(gateway: Gateway, fake_upstream: FakeUpstream) -> None:
    assert gateway.chat().headers["x-gateway-provider"] == "openai"
    ok = gateway.reloads("ok")
    rewrite(gateway, fake_upstream, default="demo")
    wait_until(lambda: gateway.chat().headers["x-gateway-provider"] == "mock", "the new default")
    assert gateway.reloads("ok") == ok + 1
    assert metric(gateway.gw, "gateway_config_last_reload_success") == 1
    assert '"trigger":"file changed"' in gateway.gw.log()


def test_an_invalid_file_changes_nothing(gateway: Gateway, fake_upstream: FakeUpstream) -> None:
    invalid = gateway.reloads("invalid")
    gateway.path.write_text(gateway.path.read_text().replace("default_model: cloud",
                                                             "default_model: nowhere"))  # fmt: skip
    wait_until(lambda: gateway.reloads("invalid") == invalid + 1, "the refusal")
    assert metric(gateway.gw, "gateway_config_last_reload_success") == 0
    log = gateway.gw.log()
    assert '"event":"config_invalid"' in log and "routing.default_model" in log
    assert "(line " in log
    served = gateway.chat()
    assert served.status_code == 200 and served.headers["x-gateway-provider"] == "openai"
    # Asked directly, the refusal comes back with every error.
    refused = HTTP.post(gateway.url + "/admin/reload", headers={"authorization": f"Bearer {ADMIN}"})
    assert refused.status_code == 400
    assert refused.json()["ok"] is False
    assert any("routing.default_model" in e for e in refused.json()["errors"])


def test_sighup_and_the_cli_reload(gateway: Gateway, fake_upstream: FakeUpstream) -> None:
    rewrite(gateway, fake_upstream, default="demo")
    gateway.process.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: '"trigger":"SIGHUP"' in gateway.gw.log(), "the SIGHUP reload")
    assert gateway.chat().headers["x-gateway-provider"] == "mock"
    rewrite(gateway, fake_upstream, default="cloud")
    cli = [sys.executable, "-m", "gateway", "reload", "--url", gateway.url]
    refused = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "admin" in refused.stderr  # no admin key given
    done = subprocess.run([*cli, "--admin-key", ADMIN], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert gateway.chat().headers["x-gateway-provider"] == "openai"


def test_in_flight_stream_finishes_on_the_old_config(
    gateway: Gateway, fake_upstream: FakeUpstream
) -> None:
    """A slow stream started before a reload arrives whole, from the provider it started on."""
    result: dict[str, Any] = {}

    def slow() -> None:
        headers = {"x-fake-chunks": "20", "x-fake-interval-ms": "100"}
        with HTTP.stream(
            "POST",
            gateway.url + "/v1/chat/completions",
            json={"model": "auto", "stream": True, "messages": [{"role": "user", "content": "x"}]},
            headers={"authorization": f"Bearer {KEY}"} | headers,
        ) as response:
            result["provider"] = response.headers["x-gateway-provider"]
            under_way.set()
            result["body"] = b"".join(response.iter_bytes())

    under_way = threading.Event()
    thread = threading.Thread(target=slow)
    thread.start()
    assert under_way.wait(30), "the stream never started"  # it lasts about 2 s from here
    rewrite(gateway, fake_upstream, default="demo")
    wait_until(lambda: gateway.chat().headers["x-gateway-provider"] == "mock", "the reload")
    thread.join(30)
    assert result["provider"] == "openai"
    events = [e for e in result["body"].split(b"\n\n") if e.startswith(b"data: {")]
    assert len(events) >= 20 and result["body"].rstrip().endswith(b"data: [DONE]")


def test_limits_cache_and_breakers_carry_over(
    gateway: Gateway, fake_upstream: FakeUpstream
) -> None:
    # The breaker of `dead` opens on its first failure (its settings do not change below).
    error_of(gateway.chat("dead-model"), 503, "provider_unavailable")
    assert gateway.chat("dead-model").json()["error"]["code"] == "provider_circuit_open"
    first = gateway.chat()  # the third of four requests a minute; its answer is cached
    assert first.headers["x-gateway-cache"] == "miss"
    ok = gateway.reloads("ok")
    gateway.path.write_text(gateway.path.read_text() + "\n# an edit\n")
    wait_until(lambda: gateway.reloads("ok") > ok, "the reload")
    again = gateway.chat()  # the fourth: the window and the cached answer carried over
    assert again.status_code == 200 and again.headers["x-gateway-cache"] == "hit-exact"
    error_of(gateway.chat(), 429, "rate_limit_exceeded")
    ready = HTTP.get(gateway.url + "/readyz").json()
    assert ready["providers"]["dead"]["breaker"] == "open"  # the same provider object
