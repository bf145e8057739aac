"""The console's JSON: /admin/overview, /admin/decisions and /admin/config, as an operator's
tool sees them; and GET /console itself. The page in a browser: tests/test_console_browser.py."""

from __future__ import annotations

import hashlib
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
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

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
ADMIN_PATHS = ("/admin/overview", "/admin/decisions", "/admin/config")


def feed_entry(gateway: GatewayProcess, request_id: str) -> dict[str, Any]:
    """The feed is written just after the last byte; give the process a moment."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        feed = httpx.get(gateway.url + "/admin/decisions?limit=200", headers=ADMIN).json()
        found = [e for e in feed["data"] if e["request_id"] == request_id]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"{request_id} never reached the feed")


def wait_for_metric(gateway: GatewayProcess, line: str) -> None:
    deadline = time.monotonic() + 5
    while line not in httpx.get(gateway.url + "/metrics").text:
        assert time.monotonic() < deadline, f"/metrics never showed {line!r}"
        time.sleep(0.05)


@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_admin_data_needs_an_admin_key(gateway: GatewayProcess, path: str) -> None:
    cases = [
        ({}, 401, "invalid_api_key"),
        ({"authorization": "Bearer not-the-admin-key"}, 401, "invalid_api_key"),
        ({"api-key": "not-the-admin-key"}, 401, "invalid_api_key"),
        ({"authorization": f"Bearer {CLIENT_KEY}"}, 403, "admin_key_required"),
    ]
    for headers, status, code in cases:
        response = httpx.get(gateway.url + path, headers=headers)
        assert response.status_code == status, (path, headers, response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["code"]) == ("invalid_request_error", code)  # as OpenAI
    assert httpx.get(gateway.url + path, headers={"api-key": ADMIN_KEY}).status_code == 200


def test_feed_shows_a_request_just_sent_without_its_prompt(gateway: GatewayProcess) -> None:
    prompt = "CONSOLE-FEED-PROMPT-" + uuid.uuid4().hex
    request_id = "console-feed-" + uuid.uuid4().hex[:12]
    client = openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": prompt}],
        extra_headers={"x-request-id": request_id},
    )
    entry = feed_entry(gateway, request_id)
    assert entry["key"] == "key-" + hashlib.sha256(CLIENT_KEY.encode()).hexdigest()[:8]
    assert entry["provider"] == "openai" and entry["model"] == "gpt-4o-mini"
    assert entry["rule"] == "explicit" and entry["requested_model"] == "gpt-4o-mini"
    assert entry["status"] == 200 and entry["error"] is None and entry["stream"] is False
    assert entry["privacy"] == [] and entry["endpoint"] == "chat"
    assert entry["total_tokens"] == reply.usage.total_tokens if reply.usage else False
    assert entry["latency_ms"] > 0 and abs(entry["time"] - time.time()) < 60
    feed = httpx.get(gateway.url + "/admin/decisions?limit=200", headers=ADMIN)
    assert prompt not in feed.text and (reply.choices[0].message.content or "x") not in feed.text
    body = feed.json()
    assert body["object"] == "list" and body["capacity"] == 200
    seqs = [e["seq"] for e in body["data"]]
    assert seqs == sorted(seqs, reverse=True) and body["recorded"] >= seqs[0]
    # `after` returns only what is newer: a poller's next page.
    newer = httpx.get(gateway.url + f"/admin/decisions?after={entry['seq']}", headers=ADMIN).json()[
        "data"
    ]
    assert all(e["seq"] > entry["seq"] for e in newer)
    one = httpx.get(gateway.url + "/admin/decisions?limit=1", headers=ADMIN).json()["data"]
    assert len(one) == 1


def test_feed_shows_refused_requests_too(gateway: GatewayProcess) -> None:
    request_id = "console-refused-" + uuid.uuid4().hex[:12]
    response = httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": "Bearer wrong-key", "x-request-id": request_id},
    )
    assert response.status_code == 401
    entry = feed_entry(gateway, request_id)
    assert entry["status"] == 401 and entry["error"] == "invalid_api_key"
    assert entry["provider"] is None and entry["key"] == "-"


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=ten", "after=-1"])
def test_decisions_query_is_checked(gateway: GatewayProcess, query: str) -> None:
    response = httpx.get(gateway.url + "/admin/decisions?" + query, headers=ADMIN)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == query.split("=")[0]


def test_overview_reports_providers_routes_cache_spend_and_rejections(
    gateway: GatewayProcess,
) -> None:
    first = httpx.get(gateway.url + "/admin/overview", headers=ADMIN)
    assert first.status_code == 200
    client = openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    for _ in range(3):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "overview please"}]
        )
    httpx.post(gateway.base_url + "/chat/completions", json={}, headers={"api-key": "nope"})
    time.sleep(0.2)  # the last request's metrics are recorded after its last byte
    overview = httpx.get(gateway.url + "/admin/overview", headers=ADMIN).json()
    assert overview["object"] == "overview" and overview["status"] == "ready"
    assert overview["workers"] == 1 and isinstance(overview["pid"], int)
    providers = {p["name"]: p for p in overview["providers"]}
    assert set(providers) == {"openai", "ollama", "mock", "dead"}
    openai_row = providers["openai"]
    assert openai_row["ready"] is True and openai_row["breaker"] == "closed"
    assert openai_row["type"] == "openai" and openai_row["local"] is False
    assert openai_row["requests"] >= 3
    # Rates and percentiles over the window since the first call, which saw these requests.
    assert overview["window_seconds"] > 0
    assert openai_row["requests_per_second"] > 0
    assert openai_row["error_rate"] is not None and 0 <= openai_row["error_rate"] <= 1
    latency = openai_row["latency_ms"]
    assert latency is not None and 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert providers["dead"]["ready"] is False and providers["dead"]["probe_error"]
    routes = {(r["rule"], r["provider"]): r for r in overview["routes"]}
    assert routes[("explicit", "openai")]["requests"] >= 3
    assert routes[("explicit", "openai")]["requests_per_second"] > 0
    assert overview["rejections"]["invalid_api_key"] >= 1
    assert set(overview["rejections"]) == {
        "invalid_api_key", "model_not_allowed", "rate_limited", "budget_exceeded",
        "state_unavailable",
    }  # fmt: skip
    cache = overview["cache"]
    assert set(cache["lookups"]) == {"hit_exact", "hit_semantic", "miss", "bypass"}
    assert set(cache["saved_tokens"]) == {"prompt", "completion"} and cache["saved_usd"] >= 0
    usage = overview["usage"]
    assert usage["object"] == "usage" and {k["name"] for k in usage["keys"]} >= {
        "key-" + hashlib.sha256(CLIENT_KEY.encode()).hexdigest()[:8]
    }
    assert overview["in_flight"] >= 0
    assert overview["reload"]["started_at"] <= overview["at"]


def test_cache_savings_and_budgets_in_the_overview(
    workdir: Path, fake_upstream: FakeUpstream
) -> None:
    alice = "alice-console-key"
    gw = start_gateway(
        f"""
        auth:
          admin_keys: {ADMIN_KEY}
          keys:
            - {{name: alice, sha256: {hashlib.sha256(alice.encode()).hexdigest()},
               team: research, monthly_budget_usd: 5}}
        teams: {{research: {{monthly_budget_usd: 50}}}}
        providers:
          openai: {{type: openai, base_url: "{fake_upstream.base_url}", api_key: {UPSTREAM_KEY},
                   models: [gpt-4o-mini]}}
        pricing: {{gpt-4o-mini: {{input_per_1m: 1000, output_per_1m: 2000}}}}
        routing: {{default_model: gpt-4o-mini}}
        cache: {{enabled: true}}
        """,
        workdir,
    )
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key=alice, max_retries=0)
        for i in range(2):  # the second is an exact hit
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "cache me please"}]
            )
            if i == 0:  # the answer is stored just after its last byte
                wait_for_metric(gw, "gateway_cache_stores_total 1.0")
        time.sleep(0.2)
        overview = httpx.get(gw.url + "/admin/overview", headers=ADMIN).json()
        cache = overview["cache"]
        assert overview["cache_enabled"] is True
        assert cache["lookups"]["hit_exact"] == 1 and cache["lookups"]["miss"] == 1
        assert cache["hit_rate"] == 0.5 and cache["saved_usd"] > 0
        assert cache["saved_tokens"]["prompt"] > 0
        (key,) = overview["usage"]["keys"]
        assert key["name"] == "alice" and key["team"] == "research"
        assert key["monthly_budget_usd"] == 5 and 0 < key["spend_usd"] < 5
        assert key["budget_left_usd"] == pytest.approx(5 - key["spend_usd"])
        (team,) = overview["usage"]["teams"]
        assert team["name"] == "research" and team["budget_left_usd"] < 50
    finally:
        gw.process.stop()


def test_config_is_resolved_with_secrets_masked_and_shows_the_last_reload(
    workdir: Path, fake_upstream: FakeUpstream
) -> None:
    alice = "alice-secret-key-123"
    digest = hashlib.sha256(alice.encode()).hexdigest()
    secrets = [UPSTREAM_KEY, "hunter2-redis-pw", digest, ADMIN_KEY, CLIENT_KEY, "hdr-secret-77"]
    config = f"""
        auth:
          api_keys: {CLIENT_KEY}
          admin_keys: {ADMIN_KEY}
          keys: [{{name: alice, sha256: {digest}, team: research}}]
        state: {{redis_url: "redis://:hunter2-redis-pw@127.0.0.1:1/0"}}
        providers:
          openai:
            type: openai
            base_url: "{fake_upstream.base_url}"
            api_key: {UPSTREAM_KEY}
            headers: {{X-Api-Key: hdr-secret-77, X-Team: console}}
            models: [gpt-4o-mini]
        routing: {{default_model: gpt-4o-mini}}
    """
    gw = start_gateway(config, workdir)
    try:
        response = httpx.get(gw.url + "/admin/config", headers=ADMIN)
        assert response.status_code == 200
        for secret in secrets:
            assert secret not in response.text, secret
        body = response.json()
        assert body["object"] == "config" and body["workers"] == 1
        resolved = body["config"]
        assert resolved["state"]["redis_url"] == "redis://***@127.0.0.1:1/0"
        provider = resolved["providers"]["openai"]
        assert provider["api_key"].endswith("***")
        assert provider["headers"] == {"X-Api-Key": "hdr***", "X-Team": "console"}
        assert resolved["auth"]["keys"][0]["name"] == "alice"
        assert resolved["routing"]["default_model"] == "gpt-4o-mini"
        assert body["reload"]["at"] is None and body["reload"]["started_at"] > 0
        # The overview says Redis is down and why usage is missing, and still answers.
        overview = httpx.get(gw.url + "/admin/overview", headers=ADMIN).json()
        assert overview["redis"] == {"ok": False}
        assert overview["usage"]["error"]["code"] == "state_unavailable"
        for secret in secrets:
            assert secret not in str(overview), secret

        # A refused reload, then an applied one: the time, trigger and result.
        path = Path(body["path"])
        good = path.read_text()
        path.write_text(good + "\nrouting: {default_model: 12: :}\n")
        assert httpx.post(gw.url + "/admin/reload", headers=ADMIN).status_code == 400
        reload = httpx.get(gw.url + "/admin/config", headers=ADMIN).json()["reload"]
        assert reload["ok"] is False and reload["trigger"] == "admin" and reload["errors"]
        assert abs(reload["at"] - time.time()) < 60
        path.write_text(good.replace("X-Team: console", "X-Team: console-2"))
        assert httpx.post(gw.url + "/admin/reload", headers=ADMIN).status_code == 200
        after = httpx.get(gw.url + "/admin/config", headers=ADMIN).json()
        assert after["reload"]["ok"] is True and after["reload"]["errors"] == []
        assert after["config"]["providers"]["openai"]["headers"]["X-Team"] == "console-2"
    finally:
        gw.process.stop()


def test_console_page_is_served_without_a_key_and_loads_nothing_from_elsewhere(
    gateway: GatewayProcess,
) -> None:
    page = httpx.get(gateway.url + "/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    for asset, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
        response = httpx.get(gateway.url + "/console/" + asset)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert "https://" not in response.text
    missing = httpx.get(gateway.url + "/console/../config.yaml")
    assert missing.status_code == 404
    assert httpx.get(gateway.url + "/console/index.htm").status_code == 404


def test_with_several_workers_totals_are_the_servers_and_the_feed_is_one_workers(
    tmp_path: Path,
) -> None:
    """What docs/OPERATIONS.md promises: the overview adds every worker up (the metrics'
    multiprocess files), the feed of decisions is the answering worker's own."""
    config = tmp_path / "workers.yaml"
    config.write_text(
        textwrap.dedent(f"""
        auth: {{admin_keys: {ADMIN_KEY}}}
        providers: {{mock: {{type: mock, models: [demo]}}}}
        routing: {{default_model: demo}}
        cache: {{enabled: false}}
        """)
    )
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--workers", "2"]
    env = {"TMPDIR": str(tmp_path), "REDIS_URL": "", "GATEWAY_PORT": ""}
    proc, url = run_process("gateway-workers", cmd, tmp_path, env, timeout=60)
    try:
        body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        feeds: dict[int, int] = {}  # pid -> requests its feed recorded
        sent = 0
        while sum(1 for n in feeds.values() if n) < 2 or sum(feeds.values()) < sent:
            assert sent < 400, f"one worker took every connection: {feeds}"
            with httpx.Client(base_url=url, timeout=30) as fresh:  # a new connection each
                assert fresh.post("/v1/chat/completions", json=body).status_code == 200
            sent += 1
            for _ in range(2):
                with httpx.Client(base_url=url, timeout=30, headers=ADMIN) as fresh:
                    feed = fresh.get("/admin/decisions?limit=200").json()
                feeds[feed["pid"]] = feed["recorded"]
        # Each worker's feed holds only its own requests; together, all of them.
        assert len(feeds) == 2 and all(0 < n < sent for n in feeds.values())
        for _ in range(6):  # whichever worker answers, the totals are the server's
            with httpx.Client(base_url=url, timeout=30, headers=ADMIN) as fresh:
                overview = fresh.get("/admin/overview").json()
            assert overview["workers"] == 2 and overview["pid"] in feeds
            (mock,) = overview["providers"]
            assert mock["requests"] == sent
            assert overview["routes"] == [
                {"rule": "explicit", "provider": "mock", "requests": sent,
                 "requests_per_second": overview["routes"][0]["requests_per_second"]}
            ]  # fmt: skip
    finally:
        proc.stop()
