"""Policy as a client sees it: keys, allow-lists, limits and their headers, budgets, admin.

One gateway (in-memory state) serves most tests; each test has a virtual key of its own,
so the limits and spend of one test never touch another's. What needs Redis lives in
tests/test_redis_limits.py and reuses the helpers here.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from bench.procs import free_port
from tests.conftest import (
    REPO,
    UPSTREAM_KEY,
    FakeUpstream,
    GatewayProcess,
    run_process,
    start_gateway,
)

ADMIN_KEY = "sk-policy-admin"
PLAIN_KEY = "sk-policy-plain"
KEYS = {
    name: f"sk-policy-{name}"
    for name in (
        "basic", "allow", "hourly", "tokens", "budget", "r1", "r2", "serial", "unpriced",
        "strict", "broke", "hashed", "burst", "hangup", "leaver",
    )
}  # fmt: skip
PROMPT = "one two three four"  # 4 prompt tokens at the fake upstream (it counts words)
REPLY = "a b c d e f"  # 6 completion tokens, via x-fake-content
# One client for the whole module: a new httpx client costs ~60 ms (its TLS context).
HTTP = httpx.Client(timeout=30)
# Priced at 1000 USD per 1M tokens in and out: one such request costs 10 tokens = $0.01.
REQUEST_COST = 0.01


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def chat_body(model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], **extra}


def post_chat(
    gw: GatewayProcess,
    key: str | None,
    model: str = "gpt-4o-mini",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    """One chat call with REPLY as the fake upstream's answer; the body is sent as bytes."""
    sent = {"x-fake-content": REPLY, "content-type": "application/json"}
    sent |= (bearer(key) if key else {}) | (headers or {})
    raw = orjson.dumps(chat_body(model, **extra))
    return HTTP.post(gw.base_url + "/chat/completions", content=raw, headers=sent, timeout=30)


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The OpenAI error envelope, checked: status, all four fields, the code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return error


# ------------------------------------------------------------------ metrics and logs


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def metric(gw: GatewayProcess, family: str, /, **labels: str) -> float:
    """The sum of the samples of `family` whose labels include `labels` (0 if none)."""
    total = 0.0
    for line in HTTP.get(gw.url + "/metrics").text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != family:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def rejections(gw: GatewayProcess, reason: str) -> float:
    return metric(gw, "gateway_rejections_total", reason=reason)


def expect_rejections(gw: GatewayProcess, reason: str, expected: float) -> None:
    """The counter reaches `expected` (it is counted just after the last byte) and stops there."""
    wait_until(lambda: rejections(gw, reason) >= expected, f"{expected} {reason} rejections")
    assert rejections(gw, reason) == expected


def log_events(gw: GatewayProcess, event: str) -> list[dict[str, Any]]:
    out = []
    for line in gw.log().splitlines():
        if line.startswith("{"):
            data = orjson.loads(line)
            if data.get("event") == event:
                out.append(data)
    return out


def wait_until(check: Any, what: str, timeout: float = 10.0) -> Any:
    """Poll `check()` until it returns something truthy (settlement runs after the last byte)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def admin_usage(gw: GatewayProcess, admin_key: str = ADMIN_KEY) -> dict[str, Any]:
    response = HTTP.get(gw.url + "/admin/usage", headers=bearer(admin_key))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def key_usage(gw: GatewayProcess, name: str, admin_key: str = ADMIN_KEY) -> dict[str, Any]:
    rows = [k for k in admin_usage(gw, admin_key)["keys"] if k["name"] == name]
    assert len(rows) == 1, rows
    return rows[0]


def wait_settled(gw: GatewayProcess, name: str, requests: int, admin: str = ADMIN_KEY) -> dict:
    """Usage (and with it the token settlement, the same store step) of `requests` calls."""
    return wait_until(  # type: ignore[no-any-return]
        lambda: (row := key_usage(gw, name, admin))["requests"] >= requests and row,
        f"{requests} settled requests for key {name!r}",
    )


# -------------------------------------------------------------------------- gateway


def policy_config(upstream: FakeUpstream, state: str = "", default_model: str = "demo") -> str:
    keys = {
        "basic": "{}",
        "allow": '{models: [local-alias, "openai:*"]}',
        "hourly": "{tier: hourly}",
        "tokens": "{tier: tokens}",
        "budget": "{monthly_budget_usd: 0.024}",
        "r1": "{team: research}",
        "r2": "{team: research}",
        "serial": "{tier: serial}",
        "unpriced": "{}",
        "strict": "{tier: strict}",
        "broke": "{monthly_budget_usd: 0.000001}",
        "hashed": "{}",
        "burst": "{tier: burst}",
        "hangup": "{tier: serial}",
        "leaver": "{monthly_budget_usd: 0.5}",
    }
    entries = "\n".join(
        f"        - {{name: {name}, sha256: {sha(KEYS[name])}, {opts[1:-1]}}}"
        for name, opts in keys.items()
    )
    return f"""
    auth:
      api_keys: ["{PLAIN_KEY}"]
      admin_keys: ["{ADMIN_KEY}"]
      keys:
{entries}
    tiers:
      hourly: {{requests_per_minute: 100, requests_per_hour: 5}}
      tokens: {{tokens_per_minute: 20000}}
      serial: {{max_concurrent: 1}}
      strict: {{requests_per_minute: 1}}
      burst: {{requests_per_minute: 50}}
    teams:
      research: {{monthly_budget_usd: 0.015}}
    {state}
    logging: {{level: info, format: json}}
    providers:
      openai:
        type: openai
        base_url: {upstream.base_url}
        api_key: {UPSTREAM_KEY}
        models: [gpt-4o-mini]
      cloud2:
        type: openai
        base_url: {upstream.base_url}
        api_key: {UPSTREAM_KEY}
        models: [fake-model]
      mock: {{type: mock, models: [demo]}}
      metered: {{type: mock, models: [metered-demo]}}
    provider_limits:
      metered: {{requests_per_minute: 2}}
    aliases:
      local-alias: mock:demo
    routing: {{default_model: {default_model}}}
    pricing:
      gpt-4o-mini: {{input_per_1m: 1000, output_per_1m: 1000}}
    """


@pytest.fixture(scope="module")
def gw(fake_upstream: FakeUpstream, workdir: Path) -> Iterator[GatewayProcess]:
    gateway = start_gateway(policy_config(fake_upstream), workdir)
    yield gateway
    gateway.process.stop()


# ----------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("value", "says"),
    [
        pytest.param(KEYS["basic"].encode(), "Malformed Authorization header", id="no-scheme"),
        pytest.param(b"Basic dXNlcjpwYXNz", "Unsupported Authorization scheme", id="basic"),
        pytest.param(b"", "Empty Authorization header", id="empty"),
        pytest.param(b"Bearer", "Malformed Authorization header", id="bearer-only"),
        pytest.param(b"Bearer " + b"k" * 65536, "Invalid API key", id="64kb"),
        pytest.param(
            b"Bearer \x80\xfe\xff" + KEYS["basic"].encode(), "Invalid API key", id="binary"
        ),
        pytest.param(b"Bearer sk-not-a-key", "Invalid API key", id="unknown"),
    ],
)
def test_bad_authorization_is_a_clear_401(gw: GatewayProcess, value: bytes, says: str) -> None:
    response = HTTP.post(
        gw.base_url + "/chat/completions",
        content=orjson.dumps(chat_body("demo")),
        headers=[(b"authorization", value), (b"content-type", b"application/json")],
    )
    error = error_of(response, 401, "invalid_api_key")
    assert error["type"] == "invalid_request_error"  # OpenAI's type for its 401
    assert says in error["message"]
    assert "k" * 100 not in error["message"]  # never echoes what was sent


def test_missing_key_is_401(gw: GatewayProcess) -> None:
    error = error_of(post_chat(gw, None, "demo"), 401, "invalid_api_key")
    assert "Missing API key" in error["message"] and "api-key" in error["message"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("authorization", f" Bearer \t {KEYS['basic']} \t ", id="whitespace"),
        pytest.param("authorization", f"bearer {KEYS['basic']}", id="lowercase-scheme"),
        pytest.param("api-key", KEYS["basic"], id="api-key-header"),
        pytest.param("api-key", f"  {PLAIN_KEY} ", id="api-key-plain-key"),
    ],
)
def test_key_forms_that_authenticate(gw: GatewayProcess, name: str, value: str) -> None:
    # http.client sends header values as given (httpx refuses surrounding whitespace).
    conn = http.client.HTTPConnection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]), timeout=30)
    try:
        conn.putrequest("POST", "/v1/chat/completions")
        body = orjson.dumps(chat_body("demo"))
        for header, sent in ((name, value), ("content-type", "application/json"),
                             ("content-length", str(len(body)))):  # fmt: skip
            conn.putheader(header, sent)
        conn.endheaders(body)
        response = conn.getresponse()
        answer = orjson.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200, answer
    assert answer["object"] == "chat.completion"


def test_sdk_sees_authentication_error(gw: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"


def test_hash_key_cli_digest_authenticates(gw: GatewayProcess, fake_upstream: FakeUpstream) -> None:
    key = KEYS["hashed"]
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "hash-key"],
        input=key + "\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    digest = done.stdout.strip()
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    # The module's gateway knows key 'hashed' by exactly this digest.
    assert f"{{name: hashed, sha256: {digest}," in policy_config(fake_upstream)
    client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
    reply = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content
    empty = subprocess.run(
        [sys.executable, "-m", "gateway", "hash-key"],
        input="",
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert empty.returncode == 1 and "no key on stdin" in empty.stderr


# ----------------------------------------------------------------------- allow-list


def test_allow_list(gw: GatewayProcess) -> None:
    key = KEYS["allow"]
    for model in ("local-alias", "demo", "gpt-4o-mini", "openai:gpt-4o-mini"):
        response = post_chat(gw, key, model)
        assert response.status_code == 200, (model, response.text)
    refused = post_chat(gw, key, "fake-model")
    error = error_of(refused, 403, "model_not_allowed")
    assert error["type"] == "invalid_request_error" and error["param"] == "model"
    assert "'allow'" in error["message"] and "'fake-model'" in error["message"]
    client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model="cloud2:fake-model", messages=[{"role": "user", "content": "x"}])  # fmt: skip
    assert info.value.code == "model_not_allowed"


# ------------------------------------------------------------------ rate-limit headers


def test_ratelimit_headers_report_the_tightest_window(gw: GatewayProcess) -> None:
    key = KEYS["hourly"]  # 100 per minute, 5 per hour: the hour is the tighter
    first = post_chat(gw, key, "demo")
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "5"
    assert first.headers["x-ratelimit-remaining-requests"] == "4"
    assert re.fullmatch(r"(1h)?\d+m\d+s", first.headers["x-ratelimit-reset-requests"])
    assert "x-ratelimit-limit-tokens" not in first.headers  # no token limit in this tier
    with HTTP.stream(
        "POST",
        gw.base_url + "/chat/completions",
        json=chat_body("demo", stream=True),
        headers=bearer(key),
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["x-ratelimit-limit-requests"] == "5"
        assert stream.headers["x-ratelimit-remaining-requests"] == "3"
        stream.read()
    for remaining in ("2", "1", "0"):
        response = post_chat(gw, key, "demo")
        assert response.headers["x-ratelimit-remaining-requests"] == remaining
    refused = post_chat(gw, key, "demo")
    error = error_of(refused, 429, "rate_limit_exceeded")
    assert error["type"] == "requests"
    assert "5 requests per hour" in error["message"] and "'hourly'" in error["message"]
    assert 3500 < int(refused.headers["retry-after"]) <= 3600
    assert int(refused.headers["retry-after-ms"]) > 3_500_000
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    # A Retry-After over two minutes: the SDK does not wait an hour, it raises at once.
    client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=2)
    raw_before = rejections(gw, "rate_limited")
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
    expect_rejections(gw, "rate_limited", raw_before + 1)


def check_token_settlement(
    gw: GatewayProcess,
    fake: FakeUpstream,
    key: str,
    name: str,
    other: GatewayProcess | None = None,
) -> None:
    """A big reservation settles to the real (small) usage, non-streamed and streamed.

    The key's tier allows 20000 tokens a minute. The remaining tokens a response reports
    are limit - (settled usage so far) - (this request's reservation), and a reservation
    is len(body) // 4 + max_tokens. With `other` (a second replica on the same Redis),
    every check after a settlement is made there.
    """
    limit = 20000
    other = other or gw

    def call(max_tokens: int, via: GatewayProcess = other) -> tuple[httpx.Response, int]:
        body = chat_body("gpt-4o-mini", max_tokens=max_tokens)
        response = post_chat(via, key, "gpt-4o-mini", max_tokens=max_tokens)
        return response, len(orjson.dumps(body)) // 4 + max_tokens

    big, big_reserved = call(8000, gw)
    assert big.status_code == 200, big.text
    assert big.headers["x-ratelimit-limit-tokens"] == str(limit)
    assert big.headers["x-ratelimit-remaining-tokens"] == str(limit - big_reserved)
    assert re.fullmatch(r"[\d.]+m?s|\d+m\d+s", big.headers["x-ratelimit-reset-tokens"])
    assert "x-ratelimit-limit-requests" not in big.headers  # no request window in this tier
    used = big.json()["usage"]["total_tokens"]
    assert used == 10
    wait_settled(gw, name, 1)
    small, small_reserved = call(10)
    assert small.headers["x-ratelimit-remaining-tokens"] == str(limit - used - small_reserved)
    used += small.json()["usage"]["total_tokens"]
    wait_settled(gw, name, 2)

    # Streamed, the client not asking for usage: the gateway asks, settles and strips it.
    fake.clear()
    raw_body = orjson.dumps(chat_body("gpt-4o-mini", max_tokens=8000, stream=True))
    reserved = len(raw_body) // 4 + 8000
    headers = bearer(key) | {"x-fake-content": REPLY, "content-type": "application/json"}
    with HTTP.stream(
        "POST", other.base_url + "/chat/completions", content=raw_body, headers=headers
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["x-ratelimit-remaining-tokens"] == str(limit - used - reserved)
        raw = stream.read()
    sent = [r for r in fake.requests() if r["path"] == "/v1/chat/completions"][-1]["body"]
    assert sent["stream_options"] == {"include_usage": True}  # asked for by the gateway
    assert b'"usage"' not in raw, raw  # neither "usage":null nor the usage chunk
    assert raw.rstrip().endswith(b"data: [DONE]")
    events = [orjson.loads(e[6:]) for e in raw.split(b"\n\n") if e.startswith(b"data: {")]
    assert events and all(e["choices"] for e in events)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert text == REPLY
    row = wait_settled(gw, name, 3)
    assert row["total_tokens"] == used + 10  # the stripped usage was counted
    used += 10
    after, after_reserved = call(10)
    assert after.headers["x-ratelimit-remaining-tokens"] == str(limit - used - after_reserved)

    # A client that asks for usage itself gets it, untouched.
    with HTTP.stream(
        "POST",
        gw.base_url + "/chat/completions",
        json=chat_body("gpt-4o-mini", stream=True, stream_options={"include_usage": True}),
        headers=headers,
    ) as stream:
        raw = stream.read()
    assert b'"usage":null' in raw and b'"usage":{"prompt_tokens":4' in raw


def test_token_limits_settle_to_real_usage(gw: GatewayProcess, fake_upstream: FakeUpstream) -> None:
    check_token_settlement(gw, fake_upstream, KEYS["tokens"], "tokens")


def test_request_larger_than_the_token_limit(gw: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=KEYS["tokens"], max_retries=2)
    before = rejections(gw, "rate_limited")
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], max_tokens=50000
        )
    assert "Request too large" in info.value.message and "max_tokens" in info.value.message
    # It can never pass, so the SDK is told not to retry it.
    assert info.value.response.headers["x-should-retry"] == "false"
    expect_rejections(gw, "rate_limited", before + 1)


# -------------------------------------------------------------------- SDK and retries


def test_sdk_retry_honours_retry_after(gw: GatewayProcess) -> None:
    """max_concurrent 1: a second call waits out Retry-After (1 s) and then succeeds."""
    key = KEYS["serial"]
    before = rejections(gw, "rate_limited")
    slow = bearer(key) | {"x-fake-interval-ms": "100"}  # about 1 s of streaming
    body = chat_body("gpt-4o-mini", stream=True)
    with httpx.stream(
        "POST", gw.base_url + "/chat/completions", json=body, headers=slow, timeout=30
    ) as held:
        assert held.status_code == 200
        chunks = held.iter_bytes()
        next(chunks)  # the stream has begun: its lease is held
        probe = post_chat(gw, key, "demo")
        error = error_of(probe, 429, "rate_limit_exceeded")
        assert "Concurrency limit" in error["message"] and "1 request at a time" in error["message"]
        assert probe.headers["retry-after"] == "1" and probe.headers["retry-after-ms"] == "1000"
        drained = threading.Thread(target=lambda: b"".join(chunks))
        drained.start()
        client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=2)
        raw = client.chat.completions.with_raw_response.create(
            model="demo", messages=[{"role": "user", "content": "hello"}]
        )
        drained.join(timeout=30)
    assert raw.parse().choices[0].message.content.startswith("Hello from the gateway")
    assert raw.retries_taken >= 1
    # The probe and each of the SDK's refused attempts.
    expect_rejections(gw, "rate_limited", before + 1 + raw.retries_taken)


def test_client_hang_up_gives_the_lease_back(gw: GatewayProcess) -> None:
    """max_concurrent 1: a client that leaves mid-stream does not hold the key's only slot."""
    slow = bearer(KEYS["hangup"]) | {"x-fake-interval-ms": "300"}  # about 3 s of streaming
    with HTTP.stream(
        "POST",
        gw.base_url + "/chat/completions",
        json=chat_body("gpt-4o-mini", stream=True),
        headers=slow,
    ) as held:
        assert held.status_code == 200
        chunks = held.iter_bytes()  # kept: dropping the iterator would close the stream
        next(chunks)
        error_of(post_chat(gw, KEYS["hangup"], "demo"), 429, "rate_limit_exceeded")
    # The gateway notices the hang-up, cancels the upstream call and settles.
    wait_until(
        lambda: post_chat(gw, KEYS["hangup"], "demo").status_code == 200,
        "the lease of the abandoned stream to be given back",
    )


def test_provider_limit_applies_to_every_key(gw: GatewayProcess) -> None:
    for key in ("basic", "hashed"):
        response = post_chat(gw, KEYS[key], "metered-demo")
        assert response.status_code == 200
    assert response.headers["x-ratelimit-limit-requests"] == "2"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    error = error_of(post_chat(gw, PLAIN_KEY, "metered-demo"), 429, "rate_limit_exceeded")
    assert "provider 'metered'" in error["message"] and "2 requests per minute" in error["message"]
    assert post_chat(gw, KEYS["basic"], "demo").status_code == 200  # other providers are open


# -------------------------------------------------------------------------- budgets


def check_budget(gw: GatewayProcess, key: str, name: str, admin: str = ADMIN_KEY) -> None:
    """$0.024 a month at $0.01 a request: three requests pass (the third crosses), then 429."""
    for n in range(1, 4):
        response = post_chat(gw, key)
        assert response.status_code == 200, response.text
        assert float(response.headers["x-gateway-cost-usd"]) == pytest.approx(REQUEST_COST)
        wait_settled(gw, name, n, admin)
    refused = post_chat(gw, key)
    error = error_of(refused, 429, "insufficient_quota")
    assert error["type"] == "insufficient_quota"
    assert f"key '{name}'" in error["message"] and "$0.024 " in error["message"]
    assert refused.headers["x-should-retry"] == "false"
    row = key_usage(gw, name, admin)
    assert row["requests"] == 3  # the refused one was not served, so not counted
    assert row["spend_usd"] == pytest.approx(3 * REQUEST_COST)
    assert row["monthly_budget_usd"] == 0.024 and row["budget_left_usd"] == 0


def test_key_budget(gw: GatewayProcess) -> None:
    before = rejections(gw, "budget_exceeded")
    check_budget(gw, KEYS["budget"], "budget")
    expect_rejections(gw, "budget_exceeded", before + 1)
    warnings = [e for e in log_events(gw, "budget_warning") if e["scope"] == "key:budget"]
    exhausted = [e for e in log_events(gw, "budget_exhausted") if e["scope"] == "key:budget"]
    assert len(warnings) == 1 and warnings[0]["budget_usd"] == 0.024
    assert len(exhausted) == 1
    assert metric(gw, "gateway_budget_used_ratio", scope="key", name="budget") == pytest.approx(
        0.03 / 0.024
    )
    assert metric(gw, "gateway_spend_usd_total", key="budget") == pytest.approx(0.03)
    # The SDK is told not to retry: one call, one refusal.
    client = openai.OpenAI(base_url=gw.base_url, api_key=KEYS["budget"], max_retries=2)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])  # fmt: skip
    assert info.value.code == "insufficient_quota"
    expect_rejections(gw, "budget_exceeded", before + 2)


def test_team_budget_refuses_every_key_of_the_team(gw: GatewayProcess) -> None:
    for n in (1, 2):  # $0.015 for the team: the second request passes it
        assert post_chat(gw, KEYS["r1"]).status_code == 200
        wait_settled(gw, "r1", n)
    for key in (KEYS["r1"], KEYS["r2"]):
        error = error_of(post_chat(gw, key), 429, "insufficient_quota")
        assert "team 'research'" in error["message"]
    # A local (free) model is refused too: the budget is spent, whatever the model.
    error_of(post_chat(gw, KEYS["r2"], "demo"), 429, "insufficient_quota")
    usage = admin_usage(gw)
    team = next(t for t in usage["teams"] if t["name"] == "research")
    assert team["requests"] == 2 and team["spend_usd"] == pytest.approx(0.02)
    assert team["monthly_budget_usd"] == 0.015 and team["budget_left_usd"] == 0
    r2 = next(k for k in usage["keys"] if k["name"] == "r2")
    assert r2["team"] == "research" and r2["requests"] == 0
    assert metric(gw, "gateway_budget_used_ratio", scope="team", name="research") > 1


def test_hanging_up_before_the_usage_event_is_not_free(gw: GatewayProcess) -> None:
    """The whole answer, then a hang-up before the usage event: the estimate is charged."""
    raw = orjson.dumps(chat_body("gpt-4o-mini", stream=True))  # no max_tokens: 1024 allowed
    headers = bearer(KEYS["leaver"]) | {
        "x-fake-interval-ms": "100",
        "x-fake-content": REPLY,
        "content-type": "application/json",
    }
    with HTTP.stream("POST", gw.base_url + "/chat/completions", content=raw, headers=headers) as r:
        seen = b""
        for chunk in r.iter_bytes():
            seen += chunk
            if b'"finish_reason":"stop"' in seen:
                break  # every content chunk is in; leave before the usage event
    row = wait_settled(gw, "leaver", 1)
    estimate = (len(raw) // 4 + 1024) * 1000 / 1_000_000  # prompt bytes / 4 + the allowance
    assert row["spend_usd"] == pytest.approx(estimate) and row["unpriced_requests"] == 0
    assert row["total_tokens"] == 0  # no usage was reported, so no tokens are claimed
    error = error_of(post_chat(gw, KEYS["leaver"]), 429, "insufficient_quota")
    assert "key 'leaver'" in error["message"]
    access = [e for e in log_events(gw, "access") if e["key"] == "leaver"]
    assert access[0]["status"] == 499 and access[0]["cost_usd"] == pytest.approx(estimate)


def test_unpriced_cloud_model_is_never_free(gw: GatewayProcess) -> None:
    before = metric(gw, "gateway_unpriced_requests_total", provider="cloud2")
    for n in (1, 2):
        response = post_chat(gw, KEYS["unpriced"], "fake-model")
        assert response.status_code == 200
        assert "x-gateway-cost-usd" not in response.headers
        wait_settled(gw, "unpriced", n)
    assert metric(gw, "gateway_unpriced_requests_total", provider="cloud2") == before + 2
    logged = [e for e in log_events(gw, "unpriced_model") if e["provider"] == "cloud2"]
    assert len(logged) == 1 and logged[0]["model"] == "fake-model"
    row = key_usage(gw, "unpriced")
    assert row["unpriced_requests"] == 2 and row["spend_usd"] == 0
    # The local demo model is free: a cost of 0, not unknown.
    demo = post_chat(gw, KEYS["unpriced"], "demo")
    assert demo.headers["x-gateway-cost-usd"] == "0"


# ---------------------------------------------------------------------------- admin


def test_admin_usage(gw: GatewayProcess) -> None:
    response = HTTP.get(gw.url + "/admin/usage", headers={"api-key": ADMIN_KEY})
    assert response.status_code == 200
    usage = response.json()
    assert usage["object"] == "usage" and re.fullmatch(r"\d{4}-\d{2}", usage["month"])
    names = {k["name"] for k in usage["keys"]}
    assert set(KEYS) <= names and "key-" + sha(PLAIN_KEY)[:8] in names
    assert all(PLAIN_KEY not in str(k) for k in usage["keys"])
    row = next(k for k in usage["keys"] if k["name"] == "budget")
    fields = {"requests", "prompt_tokens", "completion_tokens", "total_tokens", "spend_usd",
              "monthly_budget_usd", "budget_left_usd", "unpriced_requests", "tier", "team"}  # fmt: skip
    assert fields <= set(row)
    assert {t["name"] for t in usage["teams"]} == {"research"}

    client = error_of(HTTP.get(gw.url + "/admin/usage", headers=bearer(KEYS["basic"])), 403,
                      "admin_key_required")  # fmt: skip
    assert client["type"] == "invalid_request_error"
    error_of(HTTP.get(gw.url + "/admin/usage"), 401, "invalid_api_key")
    error_of(HTTP.get(gw.url + "/admin/usage", headers=bearer("sk-nope")), 401, "invalid_api_key")
    # An admin key is not a client key.
    error_of(post_chat(gw, ADMIN_KEY, "demo"), 401, "invalid_api_key")


# ----------------------------------------------------------------------- rejections


def test_rejections_are_counted_by_reason(gw: GatewayProcess) -> None:
    reasons = ("invalid_api_key", "model_not_allowed", "rate_limited", "budget_exceeded")
    before = {r: rejections(gw, r) for r in reasons}
    error_of(post_chat(gw, "sk-wrong", "demo"), 401, "invalid_api_key")
    error_of(post_chat(gw, KEYS["allow"], "fake-model"), 403, "model_not_allowed")
    assert post_chat(gw, KEYS["strict"], "demo").status_code == 200
    error_of(post_chat(gw, KEYS["strict"], "demo"), 429, "rate_limit_exceeded")
    assert post_chat(gw, KEYS["broke"]).status_code == 200  # $0.01 against $0.000001
    wait_settled(gw, "broke", 1)
    error_of(post_chat(gw, KEYS["broke"]), 429, "insufficient_quota")
    for reason in reasons:
        expect_rejections(gw, reason, before[reason] + 1)


# --------------------------------------------------------------------- start and config


def test_auth_off_on_a_network_address_warns_once(workdir: Path) -> None:
    path = workdir / "auth-off.yaml"
    path.write_text("providers: {mock: {type: mock, models: [demo]}}\n")
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--host", "0.0.0.0"]
    env = {"GATEWAY_API_KEYS": "", "GATEWAY_PORT": ""}
    proc, _ = run_process("auth-off", cmd, workdir, env)
    try:
        lines = [
            line for line in proc.log_path.read_text().splitlines() if "auth_off_on_network" in line
        ]
        assert len(lines) == 1, proc.log_tail()
        event = orjson.loads(lines[0])
        assert event["level"] == "warning" and "0.0.0.0" in event["message"]
    finally:
        proc.stop()


_BASE = """
providers: {mock: {type: mock, models: [demo]}}
tiers: {gold: {requests_per_minute: 10}}
auth:
  api_keys: [plain-key]
  keys:
"""


def config_errors(keys: str, extra: str = "") -> list[str]:
    from gateway.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as info:
        parse_config(_BASE + keys + extra, env={})
    return info.value.errors


def test_config_duplicate_digest_names_both_entries() -> None:
    digest = sha("alice-key")
    errors = config_errors(
        f"""
    - {{name: alice, sha256: {digest}}}
    - {{name: bob, sha256: "{digest.upper()}"}}
    - {{name: carol, sha256: {sha("plain-key")}}}
"""
    )
    assert any(
        e.startswith("auth.keys[1].sha256:") and "'bob'" in e and "auth.keys[0] ('alice')" in e
        for e in errors
    ), errors
    assert any(
        e.startswith("auth.keys[2].sha256:") and "'carol'" in e and "auth.api_keys" in e
        for e in errors
    ), errors
    assert all("(line " in e for e in errors)


def test_config_unknown_tier_and_bad_digest() -> None:
    errors = config_errors(
        f"""
    - {{name: dave, sha256: {sha("d")}, tier: platinum}}
    - {{name: erin, sha256: not-a-digest}}
    - {{name: frank, sha256: {sha("f")[:-1]}}}
"""
    )
    assert any(
        e.startswith("auth.keys[0].tier:") and "'dave'" in e and "'platinum'" in e for e in errors
    ), errors
    assert any(e.startswith("auth.keys[1].sha256:") and "'erin'" in e for e in errors), errors
    assert any(e.startswith("auth.keys[2].sha256:") and "'frank'" in e for e in errors), errors
    assert any("hash-key" in e for e in errors)


def test_config_other_policy_errors() -> None:
    errors = config_errors(
        f"""
    - {{name: gina, sha256: {sha("g")}, monthly_budget_usd: 0}}
    - {{name: gina, sha256: {sha("h")}}}
    - {{name: "", sha256: {sha("i")}}}
""",
        """
tiers_extra: 1
""",
    )
    assert any(e.startswith("auth.keys[0].monthly_budget_usd:") for e in errors), errors
    assert any(e.startswith("auth.keys[1].name:") and "'gina'" in e for e in errors), errors
    assert any(e.startswith("tiers_extra: unknown key") for e in errors), errors
    from gateway.config import ConfigError, parse_config

    for bad, where in [
        ("auth: {default_tier: silver}", "auth.default_tier"),
        ("tiers: {t: {requests_per_minute: 0}}", "tiers.t.requests_per_minute"),
        ("teams: {t: {monthly_budget_usd: -1}}", "teams.t.monthly_budget_usd"),
        ("provider_limits: {nope: {requests_per_minute: 5}}", "provider_limits.nope"),
        ("pricing: {m: {input_per_1m: -1}}", "pricing.m"),
        ("state: {on_redis_error: maybe}", "state.on_redis_error"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config("providers: {mock: {type: mock, models: [demo]}}\n" + bad, env={})
        assert any(e.startswith(where) for e in info.value.errors), (bad, info.value.errors)


def test_check_config_cli_reports_a_policy_error(workdir: Path) -> None:
    path = workdir / f"bad-policy-{free_port()}.yaml"
    path.write_text(
        _BASE
        + f"    - {{name: alice, sha256: {sha('plain-key')}}}\n"
        + "    - {name: bob, sha256: 1234, tier: nope}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert done.returncode == 1
    assert "invalid config" in done.stderr
    assert "auth.keys[0].sha256" in done.stderr and "'alice'" in done.stderr
    assert "auth.keys[1].sha256" in done.stderr and "auth.keys[1].tier" in done.stderr
    assert "plain-key" not in done.stderr.replace("auth.api_keys", "")
