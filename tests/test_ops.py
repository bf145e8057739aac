"""What an operator sees: health, readiness, metrics, logs, and the shipped config."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.conftest import CLIENT_KEY, FakeUpstream, GatewayProcess, run_process, start_gateway

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


def test_healthz_answers_without_upstream_calls(gateway: GatewayProcess) -> None:
    response = httpx.get(gateway.url + "/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


def test_readyz_reports_each_provider(gateway: GatewayProcess, fake_upstream: FakeUpstream) -> None:
    response = httpx.get(gateway.url + "/readyz")
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
        """,
        workdir,
    )
    try:
        response = httpx.get(gw.url + "/readyz")
        assert response.status_code == 503
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
    body = {
        "model": "openai:some-model-nobody-configured",
        "messages": [{"role": "user", "content": "x"}],
    }
    httpx.post(gateway.base_url + "/chat/completions", json=body, headers=headers)
    text = httpx.get(gateway.url + "/metrics").text
    assert (
        'gateway_requests_total{endpoint="chat",model="gpt-4o-mini",provider="openai",status="2xx"}'
        in text
    )
    assert 'model="other"' in text  # unconfigured model names never become labels
    assert "some-model-nobody-configured" not in text
    assert "gateway_request_duration_seconds_bucket" in text
    assert "gateway_time_to_first_byte_seconds_bucket" in text
    assert "gateway_in_flight_requests" in text
    assert 'gateway_tokens_total{model="gpt-4o-mini",provider="openai",type="prompt"}' in text
    assert CLIENT_KEY not in text


def test_upstream_errors_are_counted(gateway: GatewayProcess) -> None:
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    body = {"model": "dead-model", "messages": [{"role": "user", "content": "x"}]}
    assert (
        httpx.post(gateway.base_url + "/chat/completions", json=body, headers=headers).status_code
        == 503
    )
    text = httpx.get(gateway.url + "/metrics").text
    assert 'gateway_upstream_errors_total{kind="provider_unavailable",provider="dead"}' in text


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
        while "console-1" not in gw.log() and time.monotonic() < deadline:
            time.sleep(0.02)
        line = next(line for line in gw.log().splitlines() if "console-1" in line)
        assert "access" in line and not line.startswith("{")
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
        model="auto", messages=[{"role": "user", "content": "ping"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
    assert text == reply.choices[0].message.content
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


def redis_reason() -> str | None:
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        return f"Redis is not answering at 127.0.0.1:6379 ({exc})"
    return None


def test_readyz_checks_redis_when_state_is_shared(workdir: Path) -> None:
    from tests.conftest import require

    require(redis_reason())
    config = """
        state: {redis_url: "${REDIS_URL}"}
        providers: {mock: {type: mock, models: [demo]}}
    """
    up = start_gateway(config, workdir, {"REDIS_URL": "redis://127.0.0.1:6379/0"})
    down = start_gateway(config, workdir, {"REDIS_URL": "redis://:pw@127.0.0.1:9/0"})
    try:
        ok = httpx.get(up.url + "/readyz")
        assert ok.status_code == 200 and ok.json()["redis"] == {"ok": True, "error": None}
        bad = httpx.get(down.url + "/readyz")
        assert bad.status_code == 503
        assert bad.json()["redis"]["ok"] is False and "pw" not in bad.text
    finally:
        up.process.stop()
        down.process.stop()


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
        assert gw.log().count('"event":"started"') == 2  # one per worker process
    finally:
        gw.process.stop()
