"""What an operator sees: health, readiness, metrics, logs, and the shipped config."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.conftest import (
    ADMIN_KEY,
    CLIENT_KEY,
    UPSTREAM_KEY,
    FakeUpstream,
    GatewayProcess,
    run_process,
    start_gateway,
)

REPO = Path(__file__).resolve().parent.parent


def access_events(gateway: GatewayProcess) -> list[dict[str, object]]:
    out = []
    for line in gateway.log().splitlines():
        if line.startswith("{"):
            event = orjson.loads(line)
            if event.get("event") == "access":
                out.append(event)
    return out


def wait_for_access(gateway: GatewayProcess, request_id: str) -> dict[str, object]:
    """The access event is written just after the last byte; give the process a moment."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for event in access_events(gateway):
            if event["request_id"] == request_id:
                return event
        time.sleep(0.02)
    raise AssertionError(f"no access event for {request_id}:\n{gateway.log()[-2000:]}")


def sample(text: str, series: str) -> float:
    """The value of one exact series (`name{labels}`) in a /metrics text; 0 if absent."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def wait_for_sample(gateway: GatewayProcess, series: str, expected: float) -> str:
    """/metrics once `series` reached `expected` (metrics are recorded just after the last
    byte, so a client may read them a moment before); then it must be exactly that."""
    deadline = time.monotonic() + 10
    text = httpx.get(gateway.url + "/metrics").text
    while sample(text, series) < expected and time.monotonic() < deadline:
        time.sleep(0.02)
        text = httpx.get(gateway.url + "/metrics").text
    assert sample(text, series) == expected, (series, sample(text, series), expected)
    return text


@dataclass
class Tagged:
    """A gateway whose provider marks every upstream call with a header of its own, so the
    shared fake upstream can count this gateway's calls alone."""

    gateway: GatewayProcess
    run: str
    fake: FakeUpstream

    def calls(self, method: str = "GET", path: str = "/v1/models") -> int:
        """This gateway's calls (of `method` to `path`; empty: any)."""
        return sum(
            1
            for r in self.fake.requests()
            if r["headers"].get("x-test-run") == self.run
            and r["method"] == (method or r["method"])
            and r["path"] == (path or r["path"])
        )


def tagged(fake: FakeUpstream, workdir: Path, readiness_cache_seconds: float) -> Tagged:
    run = uuid.uuid4().hex
    gw = start_gateway(
        f"""
        server: {{readiness_cache_seconds: {readiness_cache_seconds}}}
        providers:
          openai:
            type: openai
            base_url: {fake.base_url}
            api_key: {UPSTREAM_KEY}
            models: [gpt-4o-mini]
            # the probe is slow, so that two /readyz at once overlap
            headers: {{x-test-run: {run}, x-fake-delay-ms: "200"}}
        routing: {{default_model: gpt-4o-mini}}
        """,
        workdir,
    )
    return Tagged(gw, run, fake)


@pytest.fixture(scope="module")
def uncached(fake_upstream: FakeUpstream, workdir: Path) -> Iterator[Tagged]:
    """readiness_cache_seconds: 0, every /readyz probes."""
    t = tagged(fake_upstream, workdir, 0)
    yield t
    t.gateway.process.stop()


def test_healthz_answers_without_upstream_calls(uncached: Tagged) -> None:
    before = uncached.calls(method="", path="")
    for _ in range(3):
        response = httpx.get(uncached.gateway.url + "/healthz")
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        assert response.headers["x-request-id"]
    assert uncached.calls(method="", path="") == before  # no call at all, of any kind
    # The count does move: /readyz, uncached here, probes the provider's GET /models.
    assert httpx.get(uncached.gateway.url + "/readyz").status_code == 200
    assert uncached.calls(method="", path="") == before + 1


def test_readyz_probes_at_most_once_per_readiness_cache_seconds(
    uncached: Tagged, fake_upstream: FakeUpstream, workdir: Path
) -> None:
    cached = tagged(fake_upstream, workdir, 60)
    try:
        assert cached.calls() == 0
        for _ in range(2):
            assert httpx.get(cached.gateway.url + "/readyz").status_code == 200
        with ThreadPoolExecutor(2) as pool:  # two at once share the round in progress
            statuses = pool.map(
                lambda _: httpx.get(cached.gateway.url + "/readyz").status_code, range(2)
            )
            assert list(statuses) == [200, 200]
        assert cached.calls() == 1
    finally:
        cached.gateway.process.stop()
    before = uncached.calls()
    for _ in range(2):
        assert httpx.get(uncached.gateway.url + "/readyz").status_code == 200
    assert uncached.calls() == before + 2  # without the cache, each one probes


ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def test_readyz_reports_each_provider(gateway: GatewayProcess, fake_upstream: FakeUpstream) -> None:
    response = httpx.get(gateway.url + "/readyz", headers=ADMIN)
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "ready"
    providers = report["providers"]
    assert (
        providers["openai"]["ok"] is True
        and providers["openai"]["base_url"] == fake_upstream.base_url
    )
    assert providers["mock"]["ok"] is True
    assert providers["dead"]["ok"] is False and "connection refused" in providers["dead"]["error"]


def test_readyz_is_503_when_no_provider_is_usable(
    workdir: Path, fake_upstream: FakeUpstream
) -> None:
    gw = start_gateway(
        f"""
        providers:
          openai: {{type: openai, base_url: "https://api.openai.com/v1", models: [gpt-4o-mini]}}
          ollama: {{type: ollama, base_url: "http://127.0.0.1:9", models: [llama3.2]}}
          badkey: {{type: openai, base_url: "{fake_upstream.base_url}", api_key: sk-wrong}}
        routing: {{default_model: gpt-4o-mini}}
        auth: {{admin_keys: {ADMIN_KEY}}}
        """,
        workdir,
    )
    try:
        response = httpx.get(gw.url + "/readyz")
        assert response.status_code == 503
        # No detail for anyone: ok or not, and the circuit breaker's state.
        assert response.json()["providers"]["badkey"] == {"ok": False, "breaker": "closed"}
        response = httpx.get(gw.url + "/readyz", headers=ADMIN)
        report = response.json()
        assert report["status"] == "unavailable"
        assert "no api_key" in report["providers"]["openai"]["error"]
        assert report["providers"]["ollama"]["base_url"] == "http://127.0.0.1:9/v1"
        assert report["providers"]["badkey"]["error"] == "GET /models answered HTTP 401"
    finally:
        gw.process.stop()


def test_access_log_has_one_event_per_request_without_prompt_or_key(
    gateway: GatewayProcess,
) -> None:
    prompt = "PURPLE-ELEPHANT-SECRET-PROMPT-42"
    client = openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": prompt}],
        stream=False,
        extra_headers={"x-request-id": "log-check-1"},
    )
    assert raw.http_response.status_code == 200
    event = wait_for_access(gateway, "log-check-1")
    assert event["provider"] == "openai" and event["model"] == "gpt-4o-mini"
    assert event["status"] == 200 and event["key"].startswith("key-")
    assert event["prompt_tokens"] == raw.parse().usage.prompt_tokens
    assert isinstance(event["latency_ms"], float) and isinstance(event["ttfb_ms"], float)
    assert [e["request_id"] for e in access_events(gateway)].count("log-check-1") == 1
    log = gateway.log()
    assert prompt not in log and "Fake reply" not in log
    assert CLIENT_KEY not in log and "sk-upstream-secret" not in log


def test_streamed_usage_reaches_the_access_log(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "count my tokens please"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-request-id": "log-check-stream"},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage][-1]
    event = wait_for_access(gateway, "log-check-stream")
    assert event["stream"] is True
    assert event["completion_tokens"] == usage.completion_tokens
    assert event["prompt_tokens"] == usage.prompt_tokens


def test_metrics_count_requests_with_bounded_labels(gateway: GatewayProcess) -> None:
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    # unconfigured model names never become labels: they are counted as "other"
    requests = 'gateway_requests_total{endpoint="chat",model="other",provider="openai",status="2xx",stream="false"}'
    prompt = 'gateway_tokens_total{model="other",provider="openai",type="prompt"}'
    before = httpx.get(gateway.url + "/metrics").text
    body = {
        "model": "openai:some-model-nobody-configured",
        "messages": [{"role": "user", "content": "three words here"}],
    }
    reply = httpx.post(gateway.base_url + "/chat/completions", json=body, headers=headers)
    assert reply.status_code == 200
    assert reply.json()["usage"]["prompt_tokens"] == 3
    text = wait_for_sample(gateway, requests, sample(before, requests) + 1)
    assert sample(text, prompt) == sample(before, prompt) + 3
    assert "some-model-nobody-configured" not in text
    assert "gateway_request_duration_seconds_bucket" in text
    assert "gateway_time_to_first_byte_seconds_bucket" in text
    assert "gateway_in_flight_requests" in text
    assert CLIENT_KEY not in text


def test_upstream_errors_are_counted(gateway: GatewayProcess) -> None:
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    series = 'gateway_upstream_errors_total{kind="provider_unavailable",provider="dead"}'
    before = sample(httpx.get(gateway.url + "/metrics").text, series)
    body = {"model": "dead-model", "messages": [{"role": "user", "content": "x"}]}
    for count in (1, 2):
        response = httpx.post(gateway.base_url + "/chat/completions", json=body, headers=headers)
        assert response.status_code == 503
        wait_for_sample(gateway, series, before + count)


def test_console_log_format(workdir: Path) -> None:
    gw = start_gateway(
        """
        logging: {format: console}
        providers: {mock: {type: mock, models: [demo]}}
        """,
        workdir,
    )
    try:
        body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        httpx.post(
            gw.base_url + "/chat/completions", json=body, headers={"x-request-id": "console-1"}
        )
        deadline = time.monotonic() + 5
        # The routing_decision line names the request too; the access line comes after it.
        while (
            not any("console-1" in line and "access" in line for line in gw.log().splitlines())
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        lines = [line for line in gw.log().splitlines() if "console-1" in line]
        assert any("access" in line for line in lines)
        assert not any(line.startswith("{") for line in lines)
        assert "auth_disabled" in gw.log()  # the startup warning when no keys are set
    finally:
        gw.process.stop()


@pytest.fixture(scope="module")
def shipped(workdir: Path):
    """The repo's config.yaml, with nothing in the environment: the README's first minute."""
    env = {"OPENAI_API_KEY": "", "GATEWAY_API_KEYS": "", "OLLAMA_HOST": "http://127.0.0.1:9"}
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(REPO / "config.yaml")]
    proc, url = run_process("shipped", cmd, workdir, env)
    yield url
    proc.stop()


def test_shipped_config_serves_the_demo_model_to_the_sdk(shipped: str) -> None:
    client = openai.OpenAI(base_url=shipped + "/v1", api_key="anything", max_retries=0)
    reply = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "ping"}]
    )
    assert reply.choices[0].message.content == "Hello from the gateway's demo model. You said: ping"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens > 0
    pieces = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "ping"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
    assert text == reply.choices[0].message.content
    # `auto` follows the seed's policy: a simple prompt stays local (Ollama is not running).
    simple = httpx.post(
        shipped + "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "ping"}]},
    )
    assert simple.status_code == 503 and "'ollama'" in simple.json()["error"]["message"]
    assert simple.headers["x-gateway-route-rule"] == "default"
    assert float(simple.headers["x-gateway-complexity"]) < 0.65
    assert {m.id for m in client.models.list()} >= {"auto", "demo", "local", "cloud", "gpt-4o-mini"}


def test_shipped_config_names_the_missing_upstreams(shipped: str) -> None:
    client = openai.OpenAI(base_url=shipped + "/v1", api_key="anything", max_retries=0)
    with pytest.raises(openai.InternalServerError) as cloud:
        client.chat.completions.create(model="cloud", messages=[{"role": "user", "content": "x"}])
    assert cloud.value.status_code == 503
    assert "'openai'" in cloud.value.message and "https://api.openai.com/v1" in cloud.value.message
    with pytest.raises(openai.InternalServerError) as local:
        client.chat.completions.create(model="local", messages=[{"role": "user", "content": "x"}])
    assert local.value.status_code == 503
    assert "'ollama'" in local.value.message and "http://127.0.0.1:9/v1" in local.value.message
    # Names nobody listed, claimed by the openai provider's patterns: OpenAI's, not a 404.
    for name in ("gpt-4o-2024-08-06", "gpt-5-nano", "o4-mini"):
        with pytest.raises(openai.InternalServerError) as claimed:
            client.chat.completions.create(model=name, messages=[{"role": "user", "content": "x"}])
        assert claimed.value.status_code == 503 and "'openai'" in claimed.value.message
    with pytest.raises(openai.NotFoundError):  # routing.unknown_model: reject
        client.chat.completions.create(model="llama9", messages=[{"role": "user", "content": "x"}])


def redis_reason() -> str | None:
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        return f"Redis is not answering at 127.0.0.1:6379 ({exc})"
    return None


def test_readyz_follows_what_a_redis_outage_does_to_requests(workdir: Path) -> None:
    """Redis down fails readiness only under on_redis_error: deny, which refuses requests."""
    from tests.conftest import require

    require(redis_reason())
    config = """
        state: {redis_url: "${REDIS_URL}", on_redis_error: "${ON_ERROR}"}
        providers: {mock: {type: mock, models: [demo]}}
        auth: {admin_keys: test-admin-key}
    """
    dead = "redis://:pw@127.0.0.1:9/0"
    up = start_gateway(
        config, workdir, {"REDIS_URL": "redis://127.0.0.1:6379/0", "ON_ERROR": "deny"}
    )
    allow = start_gateway(config, workdir, {"REDIS_URL": dead, "ON_ERROR": "allow"})
    deny = start_gateway(config, workdir, {"REDIS_URL": dead, "ON_ERROR": "deny"})
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    try:
        ok = httpx.get(up.url + "/readyz", headers=ADMIN)
        assert ok.status_code == 200 and ok.json()["redis"] == {"ok": True, "error": None}
        # allow: the gateway still serves, so it stays ready and says Redis is down.
        assert httpx.post(allow.base_url + "/chat/completions", json=body).status_code == 200
        report = httpx.get(allow.url + "/readyz")
        assert report.status_code == 200 and report.json()["redis"] == {"ok": False}
        detail = httpx.get(allow.url + "/readyz", headers=ADMIN)
        assert detail.json()["redis"]["error"] and "pw" not in detail.text
        metrics = httpx.get(allow.url + "/metrics").text
        assert 'gateway_redis_errors_total{op="readiness"}' in metrics
        # deny: requests are refused, so the pod is not ready.
        assert httpx.post(deny.base_url + "/chat/completions", json=body).status_code == 503
        assert httpx.get(deny.url + "/readyz").status_code == 503
    finally:
        for gw in (up, allow, deny):
            gw.process.stop()


def test_readyz_counts_the_mock_only_when_it_is_the_default(workdir: Path) -> None:
    gw = start_gateway(
        """
        providers:
          ollama: {type: ollama, base_url: "http://127.0.0.1:9", models: [llama3.2]}
          mock: {type: mock, models: [demo]}
        aliases: {local: "ollama:llama3.2", demo-alias: demo}
        routing: {default_model: local}
        """,
        workdir,
    )
    try:
        response = httpx.get(gw.url + "/readyz")
        assert response.status_code == 503  # the mock answers, but nothing real is usable
        assert response.json() == {
            "status": "unavailable",
            "providers": {
                "ollama": {"ok": False, "breaker": "closed"},
                "mock": {"ok": True, "breaker": "closed"},
            },
        }
        metrics = httpx.get(gw.url + "/metrics").text
        assert 'gateway_provider_up{provider="ollama"} 0.0' in metrics
        assert 'gateway_provider_up{provider="mock"} 1.0' in metrics
    finally:
        gw.process.stop()


def test_readyz_details_for_admins_or_when_exposed(
    workdir: Path, fake_upstream: FakeUpstream
) -> None:
    config = f"""
        server: {{expose_details: "${{EXPOSE}}"}}
        auth: {{api_keys: {CLIENT_KEY}, admin_keys: {ADMIN_KEY}}}
        providers:
          openai: {{type: openai, base_url: "{fake_upstream.base_url}", api_key: sk-wrong,
                   models: [gpt-4o-mini]}}
        routing: {{default_model: gpt-4o-mini}}
    """
    hidden = start_gateway(config, workdir, {"EXPOSE": "false"})
    shown = start_gateway(config, workdir, {"EXPOSE": "true"})
    try:
        for headers in (
            {},
            {"authorization": f"Bearer {CLIENT_KEY}"},
            {"authorization": "Bearer x"},
        ):
            body = httpx.get(hidden.url + "/readyz", headers=headers)
            assert body.json()["providers"]["openai"] == {"ok": False, "breaker": "closed"}
            assert fake_upstream.base_url not in body.text
        admin = httpx.get(hidden.url + "/readyz", headers=ADMIN).json()
        assert admin["providers"]["openai"]["base_url"] == fake_upstream.base_url
        assert admin["providers"]["openai"]["error"] == "GET /models answered HTTP 401"
        exposed = httpx.get(shown.url + "/readyz").json()
        assert exposed["providers"]["openai"]["error"] == "GET /models answered HTTP 401"
    finally:
        hidden.process.stop()
        shown.process.stop()


def test_metrics_keep_the_process_collectors_and_build_info(gateway: GatewayProcess) -> None:
    text = httpx.get(gateway.url + "/metrics").text
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                   "process_open_fds", "python_gc_collections_total", "python_info"):  # fmt: skip
        assert f"\n{family}" in text, family
    assert 'gateway_build_info{python="' in text and 'version="0.1.0"' in text


def test_metrics_separate_upstream_time_and_label_streams(gateway: GatewayProcess) -> None:
    count = sample
    series = (
        'gateway_upstream_duration_seconds_count{endpoint="chat",provider="openai",stream="true"}'
    )
    requests = 'gateway_requests_total{endpoint="chat",model="gpt-4o-mini",provider="openai",status="2xx",stream="true"}'
    before = httpx.get(gateway.url + "/metrics").text
    client = openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    ))  # fmt: skip
    assert chunks
    after = wait_for_sample(gateway, requests, count(before, requests) + 1)
    assert count(after, series) == count(before, series) + 1
    assert 'le="300.0"' in after  # buckets reach the length of a long local stream


def test_several_worker_processes_serve_the_same_config(workdir: Path) -> None:
    gw = start_gateway(
        """
        server: {workers: 2}
        providers: {mock: {type: mock, models: [demo]}}
        """,
        workdir,
    )
    try:
        body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(4):
            response = httpx.post(gw.base_url + "/chat/completions", json=body)
            assert response.status_code == 200
            assert response.headers["x-gateway-provider"] == "mock"
        # One per worker process; the second may still be starting when the first answers.
        deadline = time.monotonic() + 30  # a bound: it ends once both have started
        while gw.log().count('"event":"started"') < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.log().count('"event":"started"') == 2
    finally:
        gw.process.stop()


def test_streamed_tokens_are_counted_when_the_client_did_not_ask_for_usage(
    gateway: GatewayProcess,
) -> None:
    series = 'gateway_tokens_total{model="gpt-4o-mini",provider="openai",type="completion"}'
    before = sample(httpx.get(gateway.url + "/metrics").text, series)
    client = openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "count me"}], stream=True
    ))  # fmt: skip
    assert all(chunk.usage is None for chunk in chunks)  # the client's stream is unchanged
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Fake reply to: count me"
    wait_for_sample(gateway, series, before + len(text.split()))  # the fake counts words
