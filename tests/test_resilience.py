"""Fallback chains and circuit breakers, as a client and the recording fake upstream see them.

Failing providers are the same fake upstream told by their `headers:` to fail (503, 429,
a slow answer, a stream cut after two chunks), or a port where nothing listens.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.procs import free_port, start, wait_ready
from gateway.config import ConfigError, parse_config
from tests.conftest import REPO, UPSTREAM_KEY, FakeUpstream, GatewayProcess, start_gateway
from tests.test_policy import error_of, metric, wait_until

HTTP = httpx.Client(timeout=30)
EMAIL = "jane.doe@example.com"


def provider(name: str, url: str, model: str, **extra: str) -> str:
    lines = [f"  {name}:", "    type: openai", f"    base_url: {url}", f"    api_key: {UPSTREAM_KEY}",
             f"    models: [{model}]"]  # fmt: skip
    lines += [f"    {key}: {value}" for key, value in extra.items()]
    return "\n".join(lines)


def resilience_config(fake: FakeUpstream, dead_port: int, revived_port: int) -> str:
    quiet = "{failures: 1000}"  # these providers fail on purpose; the breaker tests are apart
    return "\n".join(
        [
            "providers:",
            provider("openai", fake.base_url, "gpt-4o-mini"),
            provider("flaky", fake.base_url, "flaky-model", headers='{x-fake-status: "503"}',
                     breaker=quiet),
            provider("limited", fake.base_url, "limited-model",
                     headers='{x-fake-status: "429", x-fake-retry-after: "9"}',
                     breaker=quiet),
            provider("slow", fake.base_url, "slow-model", headers='{x-fake-delay-ms: "3000"}',
                     timeouts="{read: 0.5}", breaker=quiet),
            provider("cut", fake.base_url, "cut-model", headers='{x-fake-fail-after: "2"}',
                     breaker=quiet),
            provider("limited2", fake.base_url, "limited2-model", headers='{x-fake-status: "429"}',
                     breaker=quiet),
            provider("dead", f"http://127.0.0.1:{dead_port}/v1", "dead-model", breaker=quiet),
            provider("revived", f"http://127.0.0.1:{revived_port}/v1", "revived-model",
                     breaker="{failures: 2, cooldown_seconds: 4}"),
            "  ollama:",
            "    type: ollama",
            f"    base_url: {fake.url}",
            f"    api_key: {UPSTREAM_KEY}",
            '    models: ["llama3.2:8b"]',
            "  localdead:",
            "    type: ollama",
            f"    base_url: http://127.0.0.1:{dead_port}",
            "    models: [tiny]",
            f"    breaker: {quiet}",
            'aliases: {local: "ollama:llama3.2:8b", cloud: openai:gpt-4o-mini}',
            "routing:",
            "  default_model: cloud",
            "  fallbacks:",
            "    flaky-model: [cloud]",
            "    limited-model: [cloud]",
            "    limited2-model: [limited-model]",
            "    slow-model: [cloud]",
            "    dead-model: [flaky-model, cloud]",
            "    cut-model: [cloud]",
            '    "localdead:tiny": [cloud, local]',
            "  rules:",
            "    - name: flaky-first",
            "      when: {models: [auto], headers: {x-route: flaky}}",
            "      route: flaky-model",
            "      fallback: [local]",
            "    - name: revived-first",
            "      when: {models: [auto], headers: {x-route: revived}}",
            "      route: revived-model",
            "      fallback: [cloud]",
            "privacy: {local_model: local}",
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
def gw(
    fake_upstream: FakeUpstream, workdir: Path, ports: tuple[int, int]
) -> Iterator[GatewayProcess]:
    gateway = start_gateway(resilience_config(fake_upstream, *ports), workdir)
    yield gateway
    gateway.process.stop()


def chat(gw: GatewayProcess, model: str, text: str = "hello", **extra: Any) -> httpx.Response:
    headers = extra.pop("headers", {})
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return HTTP.post(gw.base_url + "/chat/completions", json=body, headers=headers)


def sent_to(fake: FakeUpstream, marker: str) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if marker in str((r.get("body") or {}).get("messages"))]


def served(response: httpx.Response, provider: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-provider"] == provider


@pytest.mark.parametrize(
    ("model", "failed", "reason"),
    [
        ("flaky-model", "flaky:flaky-model", "http_503"),
        ("limited-model", "limited:limited-model", "http_429"),
        ("slow-model", "slow:slow-model", "upstream_timeout"),
        ("dead-model", "dead:dead-model", "provider_unavailable"),
    ],
)
def test_failure_before_the_first_byte_falls_back(
    gw: GatewayProcess, fake_upstream: FakeUpstream, model: str, failed: str, reason: str
) -> None:
    marker = uuid.uuid4().hex
    provider_name = failed.split(":")[0]
    counted = metric(gw, "gateway_fallbacks_total", provider=provider_name)
    for stream in (False, True):
        response = chat(gw, model, marker, stream=stream)
        served(response, "openai")
        tried = response.headers["x-gateway-fallback"].split(", ")
        assert tried[0] == f"{failed}={reason}"
        if stream:
            assert response.text.rstrip().endswith("data: [DONE]")
        else:
            assert response.json()["choices"][0]["message"]["content"]
    if model == "dead-model":  # its chain: flaky first, then the cloud
        assert tried == [f"{failed}={reason}", "flaky:flaky-model=http_503"]
    # Both attempts reached the fake (the failing one first), except a dead port.
    models = [r["body"]["model"] for r in sent_to(fake_upstream, marker)]
    assert models.count("gpt-4o-mini") == 2
    assert metric(gw, "gateway_fallbacks_total", provider=provider_name) == counted + 2


def test_the_last_target_failing_is_what_the_client_sees(gw: GatewayProcess) -> None:
    # flaky-first's chain is [local]; the local model answers. Without a chain: the error.
    response = chat(gw, "auto", headers={"x-route": "flaky"})
    served(response, "ollama")
    assert response.headers["x-gateway-route-rule"] == "flaky-first"
    assert response.headers["x-gateway-fallback"] == "flaky:flaky-model=http_503"
    # A chain that ends on a failing provider: its error, as it sent it.
    response = chat(gw, "limited2-model")
    error = error_of(response, 429, "rate_limit_exceeded")
    assert error["message"]
    assert response.headers["x-gateway-provider"] == "limited"
    assert response.headers["x-gateway-fallback"] == "limited2:limited2-model=http_429"
    assert response.headers["retry-after"] == "9"  # the last upstream's, passed on


def test_no_fallback_after_the_first_byte(gw: GatewayProcess, fake_upstream: FakeUpstream) -> None:
    marker = uuid.uuid4().hex
    response = chat(gw, "cut-model", marker, stream=True)
    assert response.status_code == 200
    assert response.headers["x-gateway-provider"] == "cut"
    assert "x-gateway-fallback" not in response.headers
    assert '"error"' in response.text.strip().splitlines()[-1]
    assert [r["body"]["model"] for r in sent_to(fake_upstream, marker)] == ["cut-model"]


def test_kept_local_never_falls_back_to_the_cloud(
    gw: GatewayProcess, fake_upstream: FakeUpstream
) -> None:
    marker = uuid.uuid4().hex
    # Its chain is [cloud, local]: a request with an address skips the cloud.
    response = chat(gw, "localdead:tiny", f"{marker} mail {EMAIL}")
    served(response, "ollama")
    assert response.headers["x-gateway-fallback"] == "localdead:tiny=provider_unavailable"
    assert all(r["path"] != "/v1/chat/completions" or EMAIL not in r["raw"]
               or r["body"]["model"] == "llama3.2:8b" for r in fake_upstream.requests())  # fmt: skip
    assert [r["body"]["model"] for r in sent_to(fake_upstream, marker)] == ["llama3.2:8b"]
    # A clean one takes the chain in order: the cloud first.
    clean = chat(gw, "localdead:tiny", marker + " clean")
    served(clean, "openai")


def test_check_config_refuses_a_chain_that_would_leak(fake_upstream: FakeUpstream) -> None:
    leaky = resilience_config(fake_upstream, 9, 9).replace(
        "    cut-model: [cloud]", "    cut-model: [cloud]\n    local: [cloud]"
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(leaky, {})
    (error,) = raised.value.errors
    assert error.startswith("routing.fallbacks.local (privacy.local_model): cloud would take")
    assert "keeps local to a cloud provider" in error and "(line " in error


def test_breaker_opens_fails_fast_probes_and_closes(
    gw: GatewayProcess, fake_upstream: FakeUpstream, ports: tuple[int, int], workdir: Path
) -> None:
    """Two failures open it; open, the provider is not called; after the cooldown one probe
    goes through; once the upstream is back, the probe closes it."""
    revived_port = ports[1]
    state = lambda: metric(gw, "gateway_breaker_state", provider="revived")  # noqa: E731
    assert state() == 0
    for _ in range(2):
        error_of(chat(gw, "revived-model"), 503, "provider_unavailable")
    assert state() == 2
    # Through a rule with a chain, an open circuit is passed over at once.
    response = chat(gw, "auto", headers={"x-route": "revived"})
    served(response, "openai")
    assert response.headers["x-gateway-fallback"] == "revived:revived-model=provider_circuit_open"
    # Asked directly (no chain left): a 503 that says so and when to retry; the code alone
    # says the provider was not called (a call would have answered provider_unavailable).
    error = error_of(chat(gw, "revived-model"), 503, "provider_circuit_open")
    assert (
        "circuit breaker is open" in error["message"] and "consecutive failures" in error["message"]
    )
    # The upstream comes back on that port; after the cooldown a probe closes the circuit.
    cmd = [sys.executable, "-m", "tests.fake_upstream", "--require-key", UPSTREAM_KEY,
           "--port", str(revived_port)]  # fmt: skip
    revived = start("revived", cmd, workdir / "revived.log", None, REPO)
    try:
        wait_ready(revived, "127.0.0.1", revived_port, "GET", "/health", None, {}, 30)
        closed = wait_until(
            lambda: (r := chat(gw, "revived-model")).status_code == 200 and r,
            "the probe to close the circuit",
        )
        assert closed.headers["x-gateway-provider"] == "revived"
        assert "x-gateway-fallback" not in closed.headers
        assert state() == 0
        assert (
            metric(gw, "gateway_breaker_transitions_total", provider="revived", state="open") >= 1
        )
        assert (
            metric(gw, "gateway_breaker_transitions_total", provider="revived", state="closed") == 1
        )
        assert "breaker_open" in gw.log() and "breaker_closed" in gw.log()
    finally:
        revived.stop()
