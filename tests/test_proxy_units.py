"""The request path in this process: the app create_app builds, driven through ASGI by
httpx, against the one fake upstream process (tests/fake_upstream.py). What a client sees
of ProxyEndpoint (relay, errors, fallbacks), the router's decisions and the parse checks;
fast enough for mutation testing (docs/TESTING.md)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from bench.procs import free_port
from gateway.chain.router import forced_by_env
from tests.conftest import UPSTREAM_KEY, FakeUpstream, in_process

_VOLATILE = re.compile(rb'"(id|created)":("[^"]*"|\d+)')
EMAIL = "jane.doe@example.com"
AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"  # in pieces, for secret scanners
OPEN_KEY = "open-key"  # any model
NARROW = {"authorization": "Bearer narrow-key"}  # cloud, ollama:* and auto only
NARROW_SHA = "cc6a3ad1d53969fb5d3a189f595a99cd34e965a52377c1563174af3f0047448a"
AUTO_ONLY = {"authorization": "Bearer auto-key"}  # `auto` only
AUTO_SHA = "640a49f0549c6b2ecff50a021f2a3020c95d003660c110858dde513b29ee8096"


def normalized(body: bytes) -> bytes:
    return _VOLATILE.sub(rb'"\1":0', body)


def events(body: bytes) -> list[bytes]:
    return [e for e in body.split(b"\n\n") if e.strip()]


def config_text(fake: FakeUpstream, dead_port: int) -> str:
    def provider(name: str, url: str, model: str, headers: str = "{}") -> list[str]:
        return [f"  {name}:", "    type: openai", f"    base_url: {url}",
                f"    api_key: {UPSTREAM_KEY}", f"    models: [{model}]",
                f"    headers: {headers}", "    breaker: {enabled: false}",
                "    timeouts: {connect: 2, read: 3}"]  # fmt: skip

    return "\n".join(
        [
            "providers:",
            *provider("openai", fake.base_url, "gpt-4o-mini"),
            *provider("flaky", fake.base_url, "flaky-model", '{x-fake-status: "503"}'),
            *provider("limited", fake.base_url, "limited-model",
                      '{x-fake-status: "429", x-fake-retry-after: "9"}'),
            *provider("dead", f"http://127.0.0.1:{dead_port}/v1", "dead-model"),
            "  ollama:",
            "    type: ollama",
            f"    base_url: {fake.url}",
            f"    api_key: {UPSTREAM_KEY}",
            '    models: ["llama3.2:8b"]',
            '    capabilities: {"llama3.2:8b": [tools], "*": [tools, vision]}',
            "  mock:",
            "    type: mock",
            "    models: [demo]",
            'aliases: {local: "ollama:llama3.2:8b", cloud: openai:gpt-4o-mini}',
            "routing:",
            "  default_model: cloud",
            "  capability_model: cloud",
            "  fallbacks:",
            "    flaky-model: [cloud]",
            "    limited-model: [cloud]",
            "    dead-model: [flaky-model, cloud]",
            "  rules:",
            "    - name: to-local",
            "      when: {models: [auto], headers: {x-route: local}}",
            "      route: local",
            "    - name: flaky-first",
            "      when: {models: [auto], headers: {x-route: flaky}}",
            "      route: flaky-model",
            "      fallback: [dead-model, local]",
            "    - name: no-way",
            "      when: {models: [auto], headers: {x-route: block}}",
            "      block: Not here.",
            "privacy:",
            "  local_model: local",
            "  actions: {secret: redact, pii: route_local, keyword: route_local}",
            "auth:",
            f"  api_keys: [{OPEN_KEY}]",
            "  keys:",
            f"    - {{name: narrow, sha256: {NARROW_SHA}, models: [cloud, 'ollama:*', auto]}}",
            f"    - {{name: auto-only, sha256: {AUTO_SHA}, models: [auto]}}",
            "pricing: {gpt-4o-mini: {input_per_1m: 150, output_per_1m: 600}}",
            "cache: {enabled: false}",
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def dead_port() -> int:
    return free_port()


def serving(text: str) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    """The app of config `text` in this process, and a client with the open key."""
    return in_process(text, "http://gw/v1", {"authorization": f"Bearer {OPEN_KEY}"})


# One app for the module (on the session's loop): building one costs 0.5 s of TLS contexts.
# What the router reads from the config at start is tested on a `fresh` app per test, so
# that mutation testing counts those tests as reaching the router's constructor.
@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(fake_upstream: FakeUpstream, dead_port: int) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(config_text(fake_upstream, dead_port)) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="session")
async def fresh(fake_upstream: FakeUpstream, dead_port: int) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(config_text(fake_upstream, dead_port)) as c:
        yield c


async def chat(client: httpx.AsyncClient, model: str = "gpt-4o-mini", text: str = "hello",
               headers: dict[str, str] | None = None, **extra: Any) -> httpx.Response:  # fmt: skip
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return await client.post("/chat/completions", json=body, headers=headers or {})


def error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]  # type: ignore[no-any-return]


def direct(fake: FakeUpstream, body: dict[str, Any]) -> httpx.Response:
    auth = {"authorization": f"Bearer {UPSTREAM_KEY}"}
    return httpx.post(fake.base_url + "/chat/completions", json=body, headers=auth)


def marked(fake: FakeUpstream, marker: str) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if marker in orjson.dumps(r.get("body")).decode()]


# ------------------------------------------------------------------------------ relay


async def test_json_is_relayed_byte_for_byte_with_the_decision_headers(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
            "fake": {"seed": 7, "size": 64, "reply_headers": {"openai-version": "2020-10-01",
                                                              "x-secret": "no"}}}  # fmt: skip
    via = await client.post("/chat/completions", json=body)
    want = direct(fake_upstream, body)
    assert via.status_code == 200
    assert via.content == want.content  # seeded: the same id and created
    assert via.headers["content-type"] == "application/json"
    assert via.headers["content-length"] == str(len(via.content))
    assert via.headers["x-gateway-provider"] == "openai"
    assert via.headers["x-gateway-model"] == "gpt-4o-mini"
    assert via.headers["x-gateway-route-rule"] == "explicit"
    assert via.headers["x-gateway-privacy"] == "none"
    assert via.headers["openai-version"] == "2020-10-01"
    assert "x-secret" not in via.headers
    assert "x-gateway-complexity" not in via.headers  # explicit models are not scored
    assert "x-gateway-fallback" not in via.headers
    assert "x-gateway-cache" not in via.headers


async def test_auto_goes_to_the_default_with_a_complexity_score(
    client: httpx.AsyncClient,
) -> None:
    via = await chat(client, "auto")
    assert via.status_code == 200
    assert via.headers["x-gateway-route-rule"] == "default"
    assert via.headers["x-gateway-provider"] == "openai"
    assert re.fullmatch(r"\d\.\d\d", via.headers["x-gateway-complexity"])


async def test_a_rule_routes_auto_and_names_itself(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    via = await chat(client, "auto", "rule-marker-1", headers={"x-route": "local"})
    assert via.status_code == 200, via.text
    assert via.headers["x-gateway-route-rule"] == "to-local"
    assert (via.headers["x-gateway-provider"], via.headers["x-gateway-model"]) == (
        "ollama", "llama3.2:8b")  # fmt: skip
    (seen,) = marked(fake_upstream, "rule-marker-1")
    assert seen["body"]["model"] == "llama3.2:8b"


async def test_a_block_rule_answers_its_message(client: httpx.AsyncClient) -> None:
    via = await chat(client, "auto", headers={"x-route": "block"})
    assert via.status_code == 403
    assert error(via)["message"] == "Not here."


async def test_an_sse_stream_is_relayed_as_sent(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "s"}],
            "stream": True, "stream_options": {"include_usage": True},
            "fake": {"reply_headers": {"retry-after-ms": "5"}}}  # fmt: skip
    via = await client.post("/chat/completions", json=body)
    want = direct(fake_upstream, body)
    assert via.status_code == 200
    assert via.headers["content-type"].startswith("text/event-stream")
    assert via.headers.get_list("cache-control") == ["no-cache"]
    assert via.headers["x-accel-buffering"] == "no"
    assert via.headers["retry-after-ms"] == "5"
    assert via.headers["x-gateway-provider"] == "openai"
    assert normalized(via.content) == normalized(want.content)
    assert events(via.content)[-1] == b"data: [DONE]"
    assert b'"usage":{' in via.content


async def test_a_stream_without_usage_asked_reaches_the_client_without_it(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "usage-m"}],
            "stream": True}  # fmt: skip
    via = await client.post("/chat/completions", json=body)
    want = direct(fake_upstream, body)
    assert normalized(via.content) == normalized(want.content)
    seen = marked(fake_upstream, "usage-m")[0]  # the gateway's, before the direct one
    assert seen["body"]["stream_options"] == {"include_usage": True}  # asked for the limits


@pytest.mark.parametrize(
    ("fake", "code"),
    [({"chunks": 4, "no_done": 1}, "upstream_stream_incomplete"),
     ({"chunks": 8, "fail_after": 3}, "upstream_error"),
     ({"garbage": 1}, "upstream_error")],
    ids=["no-done", "reset", "garbage"],
)  # fmt: skip
async def test_a_cut_stream_ends_with_an_error_event(
    client: httpx.AsyncClient, fake: dict[str, int], code: str | None
) -> None:
    via = await chat(client, stream=True, fake=fake)
    assert via.status_code == 200
    parts = events(via.content)
    assert b"data: [DONE]" not in parts
    assert all(p.startswith(b"data: {") for p in parts)
    last = orjson.loads(parts[-1].removeprefix(b"data: "))
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert last["error"]["type"] == "server_error"
    assert "'openai'" in last["error"]["message"]
    if code:
        assert last["error"]["code"] == code
    if "garbage" in fake:
        assert b"<html>" not in via.content and len(parts) == 1
        assert last["error"]["message"].endswith("sent a stream event that is not JSON.")
    else:
        assert len(parts) > 1 and b"error" not in b"".join(parts[:-1])


async def test_a_body_that_is_not_json_is_a_502(client: httpx.AsyncClient) -> None:
    via = await chat(client, fake={"garbage": 1})
    assert via.status_code == 502
    err = error(via)
    assert err["code"] == "upstream_error"
    assert "'openai'" in err["message"] and "not JSON" in err["message"]
    assert "HTTP 200" in err["message"]
    assert via.headers["x-gateway-provider"] == "openai"


@pytest.mark.parametrize("status", [400, 404, 422, 500, 429])
async def test_an_upstream_error_passes_with_its_status_and_headers(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream, status: int
) -> None:
    fake = {"status": status, "retry_after": "3",
            "reply_headers": {"openai-processing-ms": "12", "x-other": "no"}}  # fmt: skip
    want = direct(fake_upstream, {"model": "m", "messages": [], "fake": fake}).json()["error"]
    for stream in (False, True):
        via = await chat(client, stream=stream, fake=fake)
        assert via.status_code == status
        assert via.headers["content-type"] == "application/json"
        assert via.headers["retry-after"] == "3"
        assert via.headers["openai-processing-ms"] == "12"
        assert "x-other" not in via.headers
        assert via.headers["x-gateway-provider"] == "openai"
        assert "x-gateway-fallback" not in via.headers
        err = error(via)
        assert set(err) == {"message", "type", "param", "code"}
        assert err["message"] == want["message"]  # the upstream's own words
        assert err["type"] == ("server_error" if status >= 500 else
                               "requests" if status == 429 else "invalid_request_error")  # fmt: skip


async def test_an_upstream_error_that_is_not_json_is_wrapped(client: httpx.AsyncClient) -> None:
    via = await chat(client, fake={"status": 418, "error_body": "I am a teapot"})
    assert via.status_code == 418
    assert via.headers["content-type"] == "application/json"
    assert "I am a teapot" in error(via)["message"]
    via = await chat(client, fake={"status": 418, "error_body": ""})
    assert error(via)["message"] == "Provider openai answered HTTP 418 with an empty body."


@pytest.mark.parametrize("status", [401, 403])
async def test_the_upstream_refusing_the_gateways_key_is_a_502(
    client: httpx.AsyncClient, status: int
) -> None:
    via = await chat(client, fake={"status": status})
    assert via.status_code == 502
    err = error(via)
    assert (err["type"], err["code"]) == ("server_error", "upstream_auth_failed")
    assert f"HTTP {status}" in err["message"] and "'openai'" in err["message"]
    assert fake_url_in(err["message"])


def fake_url_in(message: str) -> bool:
    return "http://127.0.0.1:" in message


# --------------------------------------------------------------------------- fallbacks


@pytest.mark.parametrize(
    ("model", "tried"),
    [("flaky-model", "flaky:flaky-model=http_503"),
     ("limited-model", "limited:limited-model=http_429"),
     ("dead-model", "dead:dead-model=provider_unavailable, flaky:flaky-model=http_503")],
)  # fmt: skip
@pytest.mark.parametrize("stream", [False, True])
async def test_failures_before_the_first_byte_fall_back(
    client: httpx.AsyncClient, model: str, tried: str, stream: bool
) -> None:
    via = await chat(client, model, stream=stream)
    assert via.status_code == 200, via.text
    assert via.headers["x-gateway-fallback"] == tried
    assert (via.headers["x-gateway-provider"], via.headers["x-gateway-model"]) == (
        "openai", "gpt-4o-mini")  # fmt: skip
    assert via.headers["x-gateway-route-rule"] == "explicit"
    if stream:
        assert events(via.content)[-1] == b"data: [DONE]"
    else:
        assert via.json()["object"] == "chat.completion"


async def test_the_last_target_failing_is_what_the_client_sees(
    client: httpx.AsyncClient,
) -> None:
    via = await chat(client, "dead-model", fake={"status": 500})  # the body's wins
    assert via.status_code == 500
    assert via.headers["x-gateway-fallback"] == (
        "dead:dead-model=provider_unavailable, flaky:flaky-model=http_500")  # fmt: skip
    assert via.headers["x-gateway-provider"] == "openai"


async def test_a_dead_last_target_is_its_503(client: httpx.AsyncClient) -> None:
    via = await chat(client, "auto", headers={"x-route": "flaky", "x-fake-status": "503"})
    # flaky 503 -> dead (refused) -> local (the fake, 503 by the header): the last answers
    assert via.status_code == 503
    assert via.headers["x-gateway-fallback"] == (
        "flaky:flaky-model=http_503, dead:dead-model=provider_unavailable")  # fmt: skip
    assert via.headers["x-gateway-route-rule"] == "flaky-first"
    assert via.headers["x-gateway-provider"] == "ollama"


async def test_a_refused_connection_without_fallback_is_503_naming_the_provider(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream, dead_port: int
) -> None:
    via = await chat(client, "dead:dead-model", fake={"status": 500})
    # dead-model's chain is the model's: it applies to an explicit provider:model too
    assert via.headers["x-gateway-fallback"].startswith("dead:dead-model=provider_unavailable")
    via = await chat(client, "dead-model", headers={"x-fake-status": "500"})
    assert via.status_code == 500


# ----------------------------------------------------------------------------- privacy


async def test_a_kept_local_request_never_reaches_the_cloud(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    text = f"write to {EMAIL} marker-kl"
    for model in ("gpt-4o-mini", "auto", "flaky-model"):
        via = await chat(client, model, text)
        assert via.status_code == 200, via.text
        assert via.headers["x-gateway-route-rule"] == "privacy"
        assert via.headers["x-gateway-privacy"] == "pii"
        assert via.headers["x-gateway-provider"] == "ollama"
    seen = marked(fake_upstream, "marker-kl")
    assert [r["body"]["model"] for r in seen] == ["llama3.2:8b"] * 3


async def test_a_kept_local_request_whose_local_provider_fails_stays_local(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    text = f"mail {EMAIL} marker-kf"
    via = await chat(client, "flaky-model", text, headers={"x-fake-status": "503"})
    assert via.status_code == 503
    assert via.headers["x-gateway-provider"] == "ollama"
    assert "x-gateway-fallback" not in via.headers
    assert [r["body"]["model"] for r in marked(fake_upstream, "marker-kf")] == ["llama3.2:8b"]


# ------------------------------------------------------------------------------- parse


@pytest.mark.parametrize(
    ("body", "param"),
    [(b"{not json", None),
     (b"[]", None),
     (b'{"messages": []}', "model"),
     (b'{"model": 5, "messages": []}', "model"),
     (b'{"model": "gpt-4o-mini"}', "messages"),
     (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": 5}]}',
      "messages[0].content")],
)  # fmt: skip
async def test_bad_bodies_are_400_naming_the_param(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream, body: bytes, param: str | None
) -> None:
    before = len(fake_upstream.requests())
    via = await client.post("/chat/completions", content=body)
    assert via.status_code == 400
    err = error(via)
    assert err["type"] == "invalid_request_error"
    if param:
        assert err["param"] == param
    assert "x-gateway-provider" not in via.headers
    assert len(fake_upstream.requests()) == before


async def test_an_unknown_model_is_404_model_not_found(client: httpx.AsyncClient) -> None:
    via = await chat(client, "no-such-model")
    assert via.status_code == 404
    err = error(via)
    assert (err["code"], err["param"]) == ("model_not_found", "model")
    assert "'no-such-model'" in err["message"] and "/v1/models" in err["message"]


async def test_force_provider_picks_or_contradicts(client: httpx.AsyncClient) -> None:
    via = await chat(client, "auto", routing_preferences={"force_provider": "ollama"})
    assert via.status_code == 200
    assert via.headers["x-gateway-route-rule"] == "force_provider"
    assert via.headers["x-gateway-provider"] == "ollama"
    via = await chat(client, "gpt-4o-mini", routing_preferences={"force_provider": "ollama"})
    assert via.status_code == 400
    err = error(via)
    assert (err["param"], err["code"]) == ("routing_preferences.force_provider", "invalid_value")
    assert "'ollama'" in err["message"] and "'openai'" in err["message"]


async def test_routing_preferences_never_reach_the_upstream(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    via = await chat(client, "gpt-4o-mini", "rp-marker", routing_preferences={})
    assert via.status_code == 200
    (seen,) = marked(fake_upstream, "rp-marker")
    assert "routing_preferences" not in seen["body"]


async def test_embeddings_and_the_demo_model(client: httpx.AsyncClient) -> None:
    via = await client.post("/embeddings", json={"model": "gpt-4o-mini", "input": "x"})
    assert via.status_code == 200, via.text
    via = await chat(client, "demo", stream=True)
    assert via.status_code == 200
    assert events(via.content)[-1] == b"data: [DONE]"


# ------------------------------------------------------------ capabilities, keys, redact


async def test_a_model_without_a_needed_capability_gives_way(client: httpx.AsyncClient) -> None:
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    via = await client.post("/chat/completions", json={
        "model": "local", "messages": [{"role": "user", "content": image}]})  # fmt: skip
    assert via.status_code == 200, via.text
    assert via.headers["x-gateway-route-rule"] == "capability"
    assert via.headers["x-gateway-provider"] == "openai"
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    via = await chat(client, "local", tools=tools)  # ollama has tools
    assert via.headers["x-gateway-route-rule"] == "explicit"
    assert via.headers["x-gateway-provider"] == "ollama"


ALLOWED = {
    "cloud": True,
    "gpt-4o-mini": True,
    "local": True,
    "ollama:llama3.2:8b": True,
    "auto": True,
    "openai:gpt-4o-mini": True,
    "demo": False,
    "flaky-model": False,
}


async def test_a_keys_allow_list(fresh: httpx.AsyncClient) -> None:
    """On a fresh app: the key's list is compiled on its first request."""
    for model, allowed in ALLOWED.items():
        via = await chat(fresh, model, headers=NARROW)
        if allowed:
            assert via.status_code == 200, (model, via.text)
            continue
        assert via.status_code == 403, model
        err = error(via)
        assert (err["code"], err["param"]) == ("model_not_allowed", "model")
        assert "'narrow'" in err["message"] and f"'{model}'" in err["message"]
        assert "cloud, ollama:*, auto" in err["message"]
    assert (await chat(fresh, "demo")).status_code == 200  # the open key: any model
    # `auto` allows model "auto", not its default target by name (docs/CONFIG.md)
    assert (await chat(fresh, "auto", headers=AUTO_ONLY)).status_code == 200
    for model in ("gpt-4o-mini", "cloud", "openai:gpt-4o-mini"):
        assert (await chat(fresh, model, headers=AUTO_ONLY)).status_code == 403, model


async def test_a_keys_allow_list_trims_the_fallback_chain(fresh: httpx.AsyncClient) -> None:
    """`auto` admits the rule's own target; its chain loses dead-model, not in the list."""
    via = await chat(fresh, "auto", headers={"x-route": "flaky", **NARROW})
    assert via.status_code == 200, via.text
    assert via.headers["x-gateway-fallback"] == "flaky:flaky-model=http_503"
    assert via.headers["x-gateway-provider"] == "ollama"
    via = await chat(fresh, "dead-model", headers=NARROW)
    assert via.status_code == 403


async def test_a_secret_is_redacted_before_the_cloud_and_restored(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    text = f"note {AWS_KEY_ID} marker-rd"
    for stream in (False, True):
        via = await chat(client, "gpt-4o-mini", text, stream=stream)
        assert via.status_code == 200, via.text
        assert via.headers["x-gateway-privacy"] == "secret"
        assert via.headers["x-gateway-provider"] == "openai"
        assert AWS_KEY_ID in via.text  # the echo, restored
    seen = marked(fake_upstream, "marker-rd")
    assert len(seen) == 2 and all(AWS_KEY_ID not in orjson.dumps(r).decode() for r in seen)
    via = await chat(client, "local", text + "-local")  # a local route is not redacted
    (local,) = marked(fake_upstream, "marker-rd-local")
    assert AWS_KEY_ID in orjson.dumps(local["body"]).decode()


# ----------------------------------------------------------------- what operators see


async def counter(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    """One sample of GET /metrics (0 when absent)."""
    text = (await client.get("http://gw/metrics")).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # as exposed
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize(
    ("model", "fake", "counted"),
    [("gpt-4o-mini", {"garbage": 1}, [("openai", "invalid_response", None)]),
     ("gpt-4o-mini", {"garbage": 1, "stream": 1}, [("openai", "invalid_response", None)]),
     ("gpt-4o-mini", {"status": 400}, [("openai", "http_4xx", None)]),
     ("gpt-4o-mini", {"fail_after": 2, "stream": 1}, [("openai", "upstream_error", None)]),
     ("gpt-4o-mini", {"status": 401}, [("openai", "http_5xx", None)]),  # said as a 502
     ("flaky-model", {}, [("flaky", "http_5xx", "http_5xx")]),
     ("limited-model", {}, [("limited", "http_429", "http_429")]),
     ("dead-model", {}, [("dead", "provider_unavailable", "provider_unavailable"),
                         ("flaky", "http_5xx", "http_5xx")])],
)  # fmt: skip
async def test_upstream_errors_and_fallbacks_are_counted_by_kind(
    client: httpx.AsyncClient, model: str, fake: dict[str, int], counted: list[Any]
) -> None:
    before = {}
    for provider, kind, reason in counted:
        before[provider] = (
            await counter(client, "gateway_upstream_errors_total", provider=provider, kind=kind),
            await counter(client, "gateway_fallbacks_total", provider=provider, reason=reason),
        )
    stream = bool(fake.pop("stream", 0))
    await chat(client, model, stream=stream, fake=fake)
    for provider, kind, reason in counted:
        errors = await counter(
            client, "gateway_upstream_errors_total", provider=provider, kind=kind
        )
        assert errors == before[provider][0] + 1, (provider, kind)
        fell = await counter(client, "gateway_fallbacks_total", provider=provider, reason=reason)
        assert fell == before[provider][1] + (1 if reason else 0), (provider, reason)


@pytest.mark.parametrize(
    ("variable", "value", "forced"),
    [("FORCE_OLLAMA", "1", "ollama"), ("FORCE_OLLAMA", " TRUE ", "ollama"),
     ("FORCE_OLLAMA", "yes", "ollama"), ("FORCE_OLLAMA", "on", "ollama"),
     ("FORCE_OLLAMA", "0", ""), ("FORCE_OPENAI", "1", "openai"), ("FORCE_OPENAI", "off", "")],
)  # fmt: skip
def test_the_force_switches_of_the_environment(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, forced: str
) -> None:
    monkeypatch.delenv("FORCE_OLLAMA", raising=False)
    monkeypatch.delenv("FORCE_OPENAI", raising=False)
    monkeypatch.setenv(variable, value)
    assert forced_by_env({"ollama": 1, "openai": 2}) == forced
    assert forced_by_env({"mock": 1}) == ""  # only a provider that exists
    monkeypatch.setenv("FORCE_OPENAI", "1")
    assert forced_by_env({"openai": 1}) == "openai"


# ------------------------------------------------- the router's start-up, on a fresh app


async def test_fresh_auto_default_force_and_capability(fresh: httpx.AsyncClient) -> None:
    via = await chat(fresh, "auto")
    assert (via.status_code, via.headers["x-gateway-route-rule"]) == (200, "default")
    assert via.headers["x-gateway-model"] == "gpt-4o-mini"
    via = await chat(fresh, "auto", routing_preferences={"force_provider": "ollama"})
    assert via.headers["x-gateway-route-rule"] == "force_provider"
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    via = await fresh.post("/chat/completions", json={
        "model": "local", "messages": [{"role": "user", "content": image}]})  # fmt: skip
    assert (via.headers["x-gateway-route-rule"], via.headers["x-gateway-provider"]) == (
        "capability", "openai")  # fmt: skip


async def test_fresh_fallbacks_privacy_and_redact(
    fresh: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    via = await chat(fresh, "dead-model")
    assert via.headers["x-gateway-fallback"] == (
        "dead:dead-model=provider_unavailable, flaky:flaky-model=http_503")  # fmt: skip
    via = await chat(fresh, "gpt-4o-mini", f"to {EMAIL} marker-fp")
    assert (via.headers["x-gateway-route-rule"], via.headers["x-gateway-model"]) == (
        "privacy", "llama3.2:8b")  # fmt: skip
    via = await chat(fresh, "gpt-4o-mini", f"note {AWS_KEY_ID} marker-fr")
    assert AWS_KEY_ID in via.text  # restored
    (seen,) = marked(fake_upstream, "marker-fr")
    assert AWS_KEY_ID not in orjson.dumps(seen["body"]).decode()


@pytest.mark.parametrize("force", ["", "ollama"])
async def test_without_a_local_model_the_first_real_local_provider_serves(
    fake_upstream: FakeUpstream, dead_port: int, force: str
) -> None:
    """privacy.local_model unset: the first model of the first local provider, a real
    one before the built-in mock even when the mock is listed first (docs/ROUTING.md)."""
    text = config_text(fake_upstream, dead_port)
    text = text.replace("  local_model: local\n", "")
    mock = "  mock:\n    type: mock\n    models: [demo]\n"
    text = text.replace(mock, "").replace("providers:\n", "providers:\n" + mock)
    if force:
        text = text.replace("  capability_model: cloud\n", f"  force_provider: {force}\n")
    assert "local_model" not in text and text.startswith("providers:\n" + mock)
    async with serving(text) as c:
        via = await chat(c, "gpt-4o-mini", f"to {EMAIL} marker-lt")
        assert via.status_code == 200, via.text
        assert (via.headers["x-gateway-route-rule"], via.headers["x-gateway-provider"]) == (
            "privacy", "ollama")  # fmt: skip
        via = await chat(c, "auto")
        assert via.headers["x-gateway-route-rule"] == ("force_provider" if force else "default")


async def test_the_cost_of_a_response(client: httpx.AsyncClient) -> None:
    """From `pricing:` and the usage the fake reports (1 prompt, 9 completion tokens)."""
    via = await chat(client, "gpt-4o-mini", "hi")
    assert via.json()["usage"]["prompt_tokens"] == 1
    completion = via.json()["usage"]["completion_tokens"]
    want = f"{(150 + completion * 600) / 1e6:.9f}".rstrip("0").rstrip(".")
    assert via.headers["x-gateway-cost-usd"] == want
    via = await chat(client, "local", "hi")
    assert via.headers["x-gateway-cost-usd"] == "0"  # a local provider costs nothing
    via = await chat(client, "gpt-4o-mini", "hi", stream=True)
    assert "x-gateway-cost-usd" not in via.headers  # a stream's usage comes after its head
    no_usage = {"status": 200, "error_body": '{"choices": []}'}
    via = await chat(client, "gpt-4o-mini", "hi", fake=no_usage)
    assert via.status_code == 200
    assert "x-gateway-cost-usd" not in via.headers  # priced, no usage: the cost is not known
    via = await chat(client, "local", "hi", fake=no_usage)
    assert via.headers["x-gateway-cost-usd"] == "0"  # local: free whatever it reports


async def test_a_kept_local_request_whose_local_provider_is_down_is_503_kept_local(
    fake_upstream: FakeUpstream, dead_port: int
) -> None:
    text = config_text(fake_upstream, dead_port)
    text = text.replace(
        f"    base_url: {fake_upstream.url}\n", f"    base_url: http://127.0.0.1:{dead_port}\n"
    )
    assert f"127.0.0.1:{dead_port}\n" in text
    async with serving(text) as c:
        for stream in (False, True):
            via = await chat(c, "gpt-4o-mini", f"to {EMAIL} marker-kd", stream=stream)
            assert via.status_code == 503
            err = error(via)
            assert err["code"] == "kept_local"
            assert "kept local" in err["message"] and "pii" in err["message"]
            assert "'ollama'" in err["message"]
            assert via.headers["x-gateway-provider"] == "ollama"
        via = await chat(c, "gpt-4o-mini", "clean marker-kc")
        assert via.status_code == 200  # the cloud still serves what is not kept local
        via = await chat(c, "local", "not kept marker-kn")
        assert via.status_code == 503  # no privacy finding: the provider's own error
        assert error(via)["code"] == "provider_unavailable"
    assert marked(fake_upstream, "marker-kd") == []


async def test_unknown_model_auto_routes_an_unlisted_name_through_the_rules(
    fake_upstream: FakeUpstream, dead_port: int
) -> None:
    text = config_text(fake_upstream, dead_port)
    text = text.replace(
        "  default_model: cloud\n", "  default_model: cloud\n  unknown_model: auto\n"
    )
    async with serving(text) as c:
        via = await chat(c, "no-such-model")
        assert via.status_code == 200, via.text
        assert via.headers["x-gateway-route-rule"] == "default"
        via = await chat(c, "no-such-model", headers={"x-route": "local"})
        assert via.headers["x-gateway-route-rule"] == "to-local"
        via = await chat(c, "gpt-4o-mini")
        assert via.headers["x-gateway-route-rule"] == "explicit"  # a listed name stays


# ----------------------------------------------- gaps the mutation run of 2026-11-29 showed


def samples(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`, from /metrics."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        inside, value = line[len(name) + 1 :].rsplit("} ", 1)
        have = dict(re.findall(r'(\w+)="([^"]*)"', inside))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


async def metrics_text(client: httpx.AsyncClient) -> str:
    return (await client.get("http://gw/metrics")).text


def cached_config(fake: FakeUpstream, dead_port: int) -> str:
    text = config_text(fake, dead_port)
    on = "cache: {enabled: true, semantic: {enabled: false}}"
    assert "cache: {enabled: false}" in text
    return text.replace("cache: {enabled: false}", on)


async def test_a_cache_hit_is_replayed_without_the_upstream_and_spends_nothing(
    fake_upstream: FakeUpstream, dead_port: int, capfd: pytest.CaptureFixture[str]
) -> None:
    text = cached_config(fake_upstream, dead_port)
    text = text.replace("\nauth:\n", "\nauth:\n  admin_keys: [admin-key]\n")
    async with serving(text) as c:
        first = await chat(c, "gpt-4o-mini", "marker-hit-body")
        assert (first.status_code, first.headers["x-gateway-cache"]) == (200, "miss")
        assert first.headers["x-gateway-cost-usd"] != "0"
        before = await metrics_text(c)
        capfd.readouterr()
        hit = await chat(c, "gpt-4o-mini", "marker-hit-body")
        (log,) = access_lines(capfd.readouterr().out)
        after = await metrics_text(c)
        admin = {"authorization": "Bearer admin-key"}
        feed = (await c.get("http://gw/admin/decisions", headers=admin)).json()["data"]
        assert (feed[0]["cache"], feed[0]["total_tokens"]) == ("hit_exact", 0)
        assert (feed[0]["status"], feed[0]["cost_usd"]) == (200, 0.0)
        assert (log["status"], log["cost_usd"], log["cache"]) == (200, 0.0, "hit_exact")
        assert (log["prompt_tokens"], log["completion_tokens"]) == (0, 0)
        assert log["ttfb_ms"] is not None
        assert hit.status_code == 200
        assert hit.headers["x-gateway-cache"] == "hit-exact"
        assert hit.headers["content-type"] == "application/json"
        assert hit.headers["x-gateway-cost-usd"] == "0"
        assert (hit.headers["x-gateway-provider"], hit.headers["x-gateway-model"]) == (
            "openai", "gpt-4o-mini")  # fmt: skip
        assert "cache-control" not in hit.headers
        got, want = hit.json(), first.json()
        assert got["object"] == "chat.completion" and got["id"] != want["id"]
        assert got["choices"][0]["message"] == want["choices"][0]["message"]
        assert got["usage"] == want["usage"]  # what it saved, said as the upstream said it
        assert len(marked(fake_upstream, "marker-hit-body")) == 1
        labels = {"provider": "openai", "stream": "false"}
        for name, more in [("gateway_requests_total", {"status": "2xx"}),
                           ("gateway_time_to_first_byte_seconds_count", {})]:  # fmt: skip
            assert samples(after, name, **labels, **more) == samples(
                before, name, **labels, **more) + 1, name  # fmt: skip
        assert samples(after, "gateway_tokens_total") == samples(before, "gateway_tokens_total")
        assert samples(after, "gateway_upstream_duration_seconds_count") == samples(
            before, "gateway_upstream_duration_seconds_count")  # fmt: skip


async def test_a_streamed_cache_hit_is_a_stream_with_usage_only_when_asked(
    fake_upstream: FakeUpstream, dead_port: int
) -> None:
    async with serving(cached_config(fake_upstream, dead_port)) as c:
        first = await chat(c, "gpt-4o-mini", "marker-hit-stream", stream=True)
        assert first.headers["x-gateway-cache"] == "miss"
        assert b'"usage":{' not in first.content  # asked by the gateway, removed
        for asked, options in ((False, None), (True, {"include_usage": True}), (False, "on")):
            extra = {} if options is None else {"stream_options": options}
            before = await metrics_text(c)
            hit = await chat(c, "gpt-4o-mini", "marker-hit-stream", stream=True, **extra)
            after = await metrics_text(c)
            assert hit.status_code == 200
            assert hit.headers["x-gateway-cache"] == "hit-exact"
            assert hit.headers["content-type"] == "text/event-stream"
            assert hit.headers.get_list("cache-control") == ["no-cache"]
            assert hit.headers["x-accel-buffering"] == "no"
            assert hit.headers["x-gateway-cost-usd"] == "0"
            parts = events(hit.content)
            assert parts[-1] == b"data: [DONE]"
            assert (b'"usage":{' in hit.content) is asked
            assert (b'"usage":null' in hit.content) is asked
            text = "".join(
                (orjson.loads(p[6:])["choices"] or [{}])[0].get("delta", {}).get("content", "")
                for p in parts[:-1]
            )
            assert "marker-hit-stream" in text
            labels = {"provider": "openai", "stream": "true", "status": "2xx"}
            assert samples(after, "gateway_requests_total", **labels) == samples(
                before, "gateway_requests_total", **labels) + 1  # fmt: skip
            assert samples(after, "gateway_tokens_total") == samples(
                before, "gateway_tokens_total")  # fmt: skip
        assert len(marked(fake_upstream, "marker-hit-stream")) == 1


@pytest.mark.parametrize(
    ("headers", "stream"),
    [({"x-fake-status": "500"}, False), ({"x-fake-status": "400"}, False),
     ({"x-fake-no-done": "1"}, True), ({"x-fake-fail-after": "2"}, True)],
    ids=["500", "400", "no-done", "reset"],
)  # fmt: skip
async def test_an_error_or_a_cut_stream_is_never_stored(
    fake_upstream: FakeUpstream, dead_port: int, headers: dict[str, str], stream: bool
) -> None:
    marker = f"marker-ns-{next(iter(headers.values()))}-{stream}"
    async with serving(cached_config(fake_upstream, dead_port)) as c:
        bad = await chat(c, "gpt-4o-mini", marker, headers=headers, stream=stream)
        assert bad.headers["x-gateway-cache"] == "miss"
        good = await chat(c, "gpt-4o-mini", marker, stream=stream)
        assert (good.status_code, good.headers["x-gateway-cache"]) == (200, "miss")
        again = await chat(c, "gpt-4o-mini", marker, stream=stream)
        assert again.headers["x-gateway-cache"] == "hit-exact"  # the good one was stored
    assert len(marked(fake_upstream, marker)) == 2


async def test_an_answer_of_a_fallback_is_not_stored_under_the_first_targets_key(
    fake_upstream: FakeUpstream, dead_port: int
) -> None:
    async with serving(cached_config(fake_upstream, dead_port)) as c:
        for _ in range(2):
            via = await chat(c, "flaky-model", "marker-fb-cache")
            assert via.status_code == 200
            assert via.headers["x-gateway-fallback"] == "flaky:flaky-model=http_503"
            assert via.headers["x-gateway-cache"] == "miss"
    seen = marked(fake_upstream, "marker-fb-cache")
    assert [r["body"]["model"] for r in seen] == ["flaky-model", "gpt-4o-mini"] * 2


async def test_the_gateways_own_errors_are_json(client: httpx.AsyncClient) -> None:
    for via in (
        await client.post("/chat/completions", content=b"{not json"),
        await chat(client, "no-such-model"),
        await chat(client, "auto", headers={"x-route": "block"}),
        await chat(client, fake={"garbage": 1}),
    ):
        assert via.status_code >= 400
        assert via.headers["content-type"] == "application/json"
        assert via.headers["content-length"] == str(len(via.content))
        assert set(error(via)) == {"message", "type", "param", "code"}


async def test_an_upstream_error_body_is_read_up_to_1_mib(client: httpx.AsyncClient) -> None:
    """A JSON error body over 1 MiB is cut at the bound: no longer JSON, so its first 500
    characters are the message (a body under the bound gives its own message)."""
    pad = "x" * (3 << 19)  # 1.5 MiB
    big = orjson.dumps({"error": {"message": "big body", "type": "t"}, "pad": pad}).decode()
    via = await chat(client, fake={"status": 500, "error_body": big})
    assert via.status_code == 500
    message = error(via)["message"]
    assert message.startswith('{"error":{"message":"big body"') and len(message) == 500
    small = orjson.dumps(
        {"error": {"message": "small body", "type": "t"}, "pad": pad[: (1 << 20) - 100]}
    )
    via = await chat(client, fake={"status": 500, "error_body": small.decode()})
    assert error(via)["message"] == "small body"


async def test_a_body_cut_after_its_head_is_a_502_naming_the_provider(
    client: httpx.AsyncClient,
) -> None:
    before = await metrics_text(client)
    via = await chat(client, fake={"fail_after": 0})
    after = await metrics_text(client)
    assert via.status_code == 502
    err = error(via)
    assert (err["type"], err["code"]) == ("server_error", "upstream_error")
    assert err["message"].startswith("provider 'openai' at http://127.0.0.1:")
    assert " failed: " in err["message"] and not err["message"].endswith("None.")
    assert via.headers["content-type"] == "application/json"
    assert via.headers["x-gateway-provider"] == "openai"
    labels = {"provider": "openai", "kind": "upstream_error"}
    assert samples(after, "gateway_upstream_errors_total", **labels) == samples(
        before, "gateway_upstream_errors_total", **labels) + 1  # fmt: skip
    assert samples(after, "gateway_upstream_errors_total", kind="invalid_response") == samples(
        before, "gateway_upstream_errors_total", kind="invalid_response")  # fmt: skip


@pytest.mark.parametrize("cut", [0, 2, 20])
async def test_a_stream_cut_mid_event_gets_a_blank_line_before_its_error_event(
    client: httpx.AsyncClient, fake_upstream: FakeUpstream, cut: int
) -> None:
    """Only then: a stream that ends between events gets its error event right away."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "cut"}],
            "stream": True, "stream_options": {"include_usage": True},
            "fake": {"chunks": 3, "no_done": 1, "cut_bytes": cut}}  # fmt: skip
    via = await client.post("/chat/completions", json=body)
    sent = direct(fake_upstream, body).content
    assert sent.endswith(b"}\n\n") if cut == 0 else not sent.endswith(b"\n")
    assert via.status_code == 200
    got = normalized(via.content)
    head = normalized(sent) + (b"\n\n" if cut else b"")
    assert got.startswith(head + b"data: {")  # as sent, a blank line if cut, the error
    last = orjson.loads(got.removeprefix(head).removeprefix(b"data: "))
    assert last["error"]["code"] == "upstream_stream_incomplete"
    assert got.endswith(b"}\n\n")


@pytest.mark.parametrize(
    ("extra", "text"),
    [({}, "plain"), ({"stream_options": {"include_usage": True}}, "asked"),
     ({}, f"note {AWS_KEY_ID} restored"),
     ({"stream_options": {"include_usage": True}}, f"note {AWS_KEY_ID} restored")],
    ids=["stripped", "asked", "restored", "restored-asked"],
)  # fmt: skip
async def test_a_last_done_without_its_blank_line_still_ends_the_stream(
    client: httpx.AsyncClient, extra: dict[str, Any], text: str
) -> None:
    """`data: [DONE]` cut of its closing blank line: held back by the usage stripper or the
    placeholder restorer until the end, then passed on; no error event."""
    via = await chat(client, "gpt-4o-mini", text, stream=True, fake={"cut_bytes": 2}, **extra)
    assert via.status_code == 200
    assert via.content.endswith(b"}\n\ndata: [DONE]")
    assert b'"error"' not in via.content
    assert (b'"usage":{' in via.content) is ("stream_options" in extra)
    if "restored" in text:
        assert AWS_KEY_ID in via.text


async def test_an_open_circuit_on_the_local_provider_is_kept_local_with_its_retry_after(
    fake_upstream: FakeUpstream, dead_port: int
) -> None:
    text = config_text(fake_upstream, dead_port)
    down = f"    base_url: http://127.0.0.1:{dead_port}\n"
    text = text.replace(f"    base_url: {fake_upstream.url}\n", down)
    one = "    breaker: {failures: 1, cooldown_seconds: 60}\n  mock:\n"
    text = text.replace("  mock:\n", one)
    assert one in text and down in text
    async with serving(text) as c:
        via = await chat(c, "gpt-4o-mini", f"to {EMAIL} marker-co")
        assert (via.status_code, error(via)["code"]) == (503, "kept_local")
        assert "retry-after" not in via.headers  # refused: nothing to wait for
        for _ in range(2):  # the circuit is open now: no upstream call
            via = await chat(c, "gpt-4o-mini", f"to {EMAIL} marker-co")
            assert via.status_code == 503
            err = error(via)
            assert err["code"] == "kept_local"
            assert err["message"].startswith(
                "This request was kept local (pii found at privacy level standard), and the "
                "local provider 'ollama' could not serve it: Provider 'ollama' is failing fast"
            )  # fmt: skip
            assert err["message"].endswith("it is tried again in 60 s.")
            assert via.headers["retry-after"] == "60"
            assert via.headers["content-type"] == "application/json"
        via = await chat(c, "local", "not kept marker-co")  # the provider's own error
        assert via.status_code == 503
        err = error(via)
        assert err["code"] == "provider_circuit_open"
        assert err["message"].startswith("Provider 'ollama' is failing fast: its circuit")
        assert err["message"].endswith("it is tried again in 60 s.")
        assert via.headers["retry-after"] == "60"
        assert via.headers["x-gateway-provider"] == "ollama"
        text = await metrics_text(c)
        assert samples(text, "gateway_upstream_errors_total", kind="provider_circuit_open") == 0
        assert samples(text, "gateway_upstream_errors_total", provider="ollama") == 1


def access_lines(out: str) -> list[dict[str, Any]]:
    lines = [orjson.loads(x) for x in out.splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("event") == "access"]


async def test_the_access_log_says_what_happened(
    fake_upstream: FakeUpstream, dead_port: int, capfd: pytest.CaptureFixture[str]
) -> None:
    text = (
        config_text(fake_upstream, dead_port).replace(
            "{name: narrow, sha256:", "{name: narrow, team: blue, tier: gold, sha256:"
        )
        + "\ntiers: {gold: {requests_per_minute: 50}}\nteams: {blue: {}}\n"
    )
    assert "team: blue" in text
    async with serving(text) as c:
        before = await metrics_text(c)
        capfd.readouterr()
        via = await chat(c, "auto", "marker-al", headers={"x-route": "flaky", **NARROW},
                         stream=True)  # fmt: skip
        assert via.status_code == 200
        after = await metrics_text(c)
        assert via.headers["x-ratelimit-limit-requests"] == "50"  # the key's tier's
        assert via.headers["x-ratelimit-remaining-requests"] == "49"
        (log,) = access_lines(capfd.readouterr().out)
        assert log["request_id"] == via.headers["x-request-id"]
        assert log["key"] == "narrow"
        assert (log["endpoint"], log["provider"], log["model"]) == (
            "chat", "ollama", "llama3.2:8b")  # fmt: skip
        assert (log["requested_model"], log["stream"], log["status"]) == ("auto", True, 200)
        assert (log["error"], log["rule"], log["tier"], log["team"]) == (
            None, "flaky-first", "gold", "blue")  # fmt: skip
        assert log["fallback"] == [{"target": "flaky:flaky-model", "reason": "http_503"}]
        assert 0 < log["ttfb_ms"] <= log["latency_ms"]
        assert isinstance(log["ttfb_ms"], float) and isinstance(log["latency_ms"], float)
        where = {"endpoint": "chat", "provider": "ollama", "stream": "true"}
        for field, histogram in (("latency_ms", "gateway_request_duration_seconds_sum"),
                                 ("ttfb_ms", "gateway_time_to_first_byte_seconds_sum")):  # fmt: skip
            seconds = samples(after, histogram, **where) - samples(before, histogram, **where)
            assert abs(seconds * 1000 - log[field]) < 0.01, field  # the same clock readings
        assert log["prompt_tokens"] == 1 and log["completion_tokens"] > 0
        assert log["cost_usd"] == 0.0  # local
        assert isinstance(log["complexity"], float) and 0 <= log["complexity"] < 1
        assert abs(log["complexity"] - float(via.headers["x-gateway-complexity"])) <= 0.005
        assert log["complexity"] == round(log["complexity"], 3)
        assert (log["privacy"], log["cache"]) == ([], None)

        via = await chat(c, "m" * 200)
        (log,) = access_lines(capfd.readouterr().out)
        assert (log["status"], log["error"]) == (404, "model_not_found")
        assert log["requested_model"] == "m" * 128
        assert (log["provider"], log["model"], log["ttfb_ms"], log["rule"]) == (
            None, None, None, None)  # fmt: skip
        assert (log["prompt_tokens"], log["completion_tokens"], log["fallback"]) == (
            None, None, None)  # fmt: skip
        assert (log["key"], log["tier"], log["team"], log["stream"]) == (
            log["key"], "unlimited", None, False)  # fmt: skip
        assert re.fullmatch("key-[0-9a-f]{8}", log["key"])

        via = await chat(c, "gpt-4o-mini", f"to {EMAIL}")
        (log,) = access_lines(capfd.readouterr().out)
        assert (log["privacy"], log["rule"], log["complexity"]) == (["pii"], "privacy", None)

        via = await chat(c, headers={"authorization": "Bearer wrong-key"})
        assert via.status_code == 401
        (log,) = access_lines(capfd.readouterr().out)
        assert (log["status"], log["key"], log["tier"], log["team"]) == (401, "-", None, None)


@pytest.mark.parametrize("answer", ["[1, 2]", '"text"', '{"usage": "lots", "choices": []}'])
async def test_a_200_whose_json_is_odd_is_relayed_as_is_without_usage(
    client: httpx.AsyncClient, answer: str
) -> None:
    before = await metrics_text(client)
    via = await chat(client, fake={"status": 200, "error_body": answer})
    after = await metrics_text(client)
    assert (via.status_code, via.text) == (200, answer)
    assert via.headers["content-type"] == "application/json"
    assert via.headers["x-gateway-provider"] == "openai"
    assert samples(after, "gateway_tokens_total") == samples(before, "gateway_tokens_total")
    ok = {"provider": "openai", "stream": "false", "status": "2xx"}
    assert samples(after, "gateway_requests_total", **ok) == samples(
        before, "gateway_requests_total", **ok) + 1  # fmt: skip
    ttfb = {"provider": "openai", "stream": "false"}
    assert samples(after, "gateway_time_to_first_byte_seconds_count", **ttfb) == samples(
        before, "gateway_time_to_first_byte_seconds_count", **ttfb) + 1  # fmt: skip


@pytest.mark.parametrize("asked", [False, True])
async def test_a_streams_tokens_are_counted_whether_or_not_the_client_asked(
    client: httpx.AsyncClient, asked: bool
) -> None:
    extra = {"stream_options": {"include_usage": True}} if asked else {}
    labels = {"provider": "openai", "model": "gpt-4o-mini"}
    before = await metrics_text(client)
    via = await chat(client, "gpt-4o-mini", "count me", stream=True, **extra)
    after = await metrics_text(client)
    assert events(via.content)[-1] == b"data: [DONE]"
    for kind, least in (("prompt", 1), ("completion", 2)):
        grew = samples(after, "gateway_tokens_total", type=kind, **labels) - samples(
            before, "gateway_tokens_total", type=kind, **labels)  # fmt: skip
        assert grew >= least, kind
    stream = {"provider": "openai", "stream": "true"}
    assert samples(after, "gateway_time_to_first_byte_seconds_count", **stream) == samples(
        before, "gateway_time_to_first_byte_seconds_count", **stream) + 1  # fmt: skip


async def test_the_access_log_names_what_failed(
    fake_upstream: FakeUpstream, dead_port: int, capfd: pytest.CaptureFixture[str]
) -> None:
    coded = '{"error": {"message": "slow down", "type": "requests", "code": "rate_limited"}}'
    asked = {"stream_options": {"include_usage": True}}
    cases: list[tuple[dict[str, Any], bool, int, str]] = [
        ({"status": 429, "error_body": coded}, False, 429, "rate_limited"),
        ({"status": 500}, False, 500, "upstream_error"),
        ({"status": 401}, False, 502, "upstream_auth_failed"),
        ({"fail_after": 2}, True, 200, "upstream_error"),
        ({"no_done": 1}, True, 200, "upstream_stream_incomplete"),
        ({"garbage": 1}, True, 200, "upstream_error"),
    ]
    async with serving(config_text(fake_upstream, dead_port)) as c:
        for fake, stream, status, code in cases:
            capfd.readouterr()
            extra = asked if stream else {}
            via = await chat(c, stream=stream, fake=fake, **extra)
            assert via.status_code == status
            (log,) = access_lines(capfd.readouterr().out)
            assert (log["status"], log["error"], log["provider"]) == (status, code, "openai")
            if "fail_after" in fake:
                last = orjson.loads(events(via.content)[-1].removeprefix(b"data: "))
                message = last["error"]["message"]
                assert message.startswith("provider 'openai' at http://127.0.0.1:")
                assert " failed: " in message and not message.endswith("None.")


async def test_the_upstreams_own_content_type_is_passed_on(client: httpx.AsyncClient) -> None:
    utf8 = {"reply_headers": {"content-type": "application/json; charset=utf-8"}}
    via = await chat(client, fake=utf8)
    assert via.status_code == 200
    assert "charset=utf-8" in via.headers["content-type"]
    via = await chat(client, stream=True, fake={
        "reply_headers": {"content-type": "text/event-stream; charset=utf-8"}})  # fmt: skip
    assert events(via.content)[-1] == b"data: [DONE]"
    assert "charset=utf-8" in via.headers["content-type"]


async def test_a_kept_local_request_falls_back_to_another_local_target(
    fake_upstream: FakeUpstream, dead_port: int
) -> None:
    text = config_text(fake_upstream, dead_port)
    text = text.replace(
        f"    base_url: {fake_upstream.url}\n", f"    base_url: http://127.0.0.1:{dead_port}\n"
    )
    text = text.replace("  fallbacks:\n", "  fallbacks:\n    llama3.2:8b: [demo]\n")
    assert "llama3.2:8b: [demo]" in text
    async with serving(text) as c:
        via = await chat(c, "gpt-4o-mini", f"to {EMAIL} marker-kl2")
        assert via.status_code == 200, via.text
        assert (via.headers["x-gateway-provider"], via.headers["x-gateway-model"]) == (
            "mock", "demo")  # fmt: skip
        assert via.headers["x-gateway-fallback"] == "ollama:llama3.2:8b=provider_unavailable"
        assert via.headers["x-gateway-route-rule"] == "privacy"
    assert marked(fake_upstream, "marker-kl2") == []


def with_breaker(text: str, provider: str) -> str:
    """`provider`'s breaker opens at its first failure, for a minute."""
    start = text.index(f"\n  {provider}:\n")
    at = text.index("breaker: {enabled: false}", start)
    return text[:at] + "breaker: {failures: 1, cooldown_seconds: 60}" + text[at + 25 :]


def breaker_logs(out: str) -> list[dict[str, Any]]:
    lines = [orjson.loads(x) for x in out.splitlines() if x.startswith("{")]
    return [x for x in lines if str(x.get("event", "")).startswith("breaker_")]


@pytest.mark.parametrize(
    ("fake", "stream", "why"),
    [({"status": 500}, False, "upstream_error"),
     ({"status": 503, "error_body": '{"error": {"message": "m", "code": "overloaded"}}'},
      False, "overloaded"),
     ({"status": 401}, False, "upstream_auth_failed"),
     ({"garbage": 1}, False, "upstream_error"),
     ({"fail_after": 0}, False, "upstream_error"),
     ({"no_done": 1}, True, "upstream_stream_incomplete"),
     ({"garbage": 1}, True, "upstream_error"),
     ({"status": 400}, False, None),
     ({"status": 429}, False, None),
     ({"status": 404}, True, None),
     ({}, False, None),
     ({}, True, None)],
)  # fmt: skip
async def test_what_counts_as_a_failure_for_the_breaker(
    fake_upstream: FakeUpstream,
    dead_port: int,
    capfd: pytest.CaptureFixture[str],
    fake: dict[str, Any],
    stream: bool,
    why: str | None,
) -> None:
    """A 5xx, a broken or garbled answer, or a stream that ends badly opens it; the
    client's own mistakes, a 429 and a clean answer do not."""
    text = with_breaker(config_text(fake_upstream, dead_port), "openai")
    async with serving(text) as c:
        capfd.readouterr()
        await chat(c, stream=stream, fake=fake)
        opened = breaker_logs(capfd.readouterr().out)
        via = await chat(c)
        if why is None:
            assert opened == []
            assert via.status_code == 200
            return
        assert [(x["event"], x["provider"]) for x in opened] == [("breaker_open", "openai")]
        assert opened[0]["reason"] == f"1 consecutive failures, the last: {why}"
        assert via.status_code == 503
        err = error(via)
        assert err["code"] == "provider_circuit_open"
        assert f"the last: {why})" in err["message"]


@pytest.mark.parametrize(
    ("model", "provider", "status", "why", "tried"),
    [("flaky-model", "flaky", None, "HTTP 503", "flaky:flaky-model=http_503"),
     ("flaky-model", "flaky", 500, "HTTP 500", "flaky:flaky-model=http_500"),
     ("dead-model", "dead", None, "provider_unavailable", "dead:dead-model=provider_unavailable"),
     ("limited-model", "limited", None, None, "limited:limited-model=http_429")],
)  # fmt: skip
async def test_a_target_passed_over_feeds_its_breaker(
    fake_upstream: FakeUpstream,
    dead_port: int,
    capfd: pytest.CaptureFixture[str],
    model: str,
    provider: str,
    status: int | None,
    why: str | None,
    tried: str,
) -> None:
    """(A 500 in the body reaches the fallback too: the first answer is a 500.)"""
    text = with_breaker(config_text(fake_upstream, dead_port), provider)
    async with serving(text) as c:
        capfd.readouterr()
        via = await chat(c, model, fake={"status": status} if status else {})
        assert via.headers["x-gateway-fallback"].startswith(tried)
        opened = breaker_logs(capfd.readouterr().out)
        via = await chat(c, model)
        assert via.status_code == 200
        if why is None:  # a 429 is no failure of the provider
            assert opened == []
            assert via.headers["x-gateway-fallback"].startswith(tried)
            return
        assert [x["reason"] for x in opened] == [f"1 consecutive failures, the last: {why}"]
        assert via.headers["x-gateway-fallback"].startswith(
            f"{provider}:{model}=provider_circuit_open")  # fmt: skip


async def test_every_privacy_category_found_is_named(client: httpx.AsyncClient) -> None:
    via = await chat(client, "gpt-4o-mini", f"mail {EMAIL} with {AWS_KEY_ID} marker-pc")
    assert via.status_code == 200
    assert sorted(via.headers["x-gateway-privacy"].split(",")) == ["pii", "secret"]
    assert via.headers["x-gateway-route-rule"] == "privacy"


async def test_a_semantic_hit_says_how_similar(fake_upstream: FakeUpstream, dead_port: int) -> None:
    text = config_text(fake_upstream, dead_port).replace(
        "cache: {enabled: false}", "cache: {enabled: true, semantic: {threshold: 0.5}}"
    )
    async with serving(text) as c:
        first = await chat(c, "gpt-4o-mini", "How do I bake sourdough bread at home?")
        assert first.headers["x-gateway-cache"] == "miss"
        via = await chat(c, "gpt-4o-mini", "how do i bake sourdough bread at home")
        assert via.headers["x-gateway-cache"] == "hit-semantic"
        assert re.fullmatch(r"[01]\.\d{4}", via.headers["x-gateway-cache-similarity"])
        assert 0.5 <= float(via.headers["x-gateway-cache-similarity"]) <= 1
        assert "x-gateway-cache-similarity" not in first.headers


@pytest.mark.parametrize(
    ("fake", "says"),
    [({"garbage": 1}, "answered HTTP 200 with a body that is not JSON."),
     ({"fail_after": 0}, " failed: ")],
)  # fmt: skip
async def test_a_kept_local_request_whose_local_provider_breaks_is_kept_local(
    client: httpx.AsyncClient, fake: dict[str, int], says: str
) -> None:
    """A 502 of the local provider, said as kept local (503) like its 503 and 504."""
    via = await chat(client, "gpt-4o-mini", f"to {EMAIL}", fake=fake)
    assert via.status_code == 503
    err = error(via)
    assert err["code"] == "kept_local"
    assert err["message"].startswith("This request was kept local (pii")
    assert "the local provider 'ollama' could not serve it: " in err["message"]
    assert says in err["message"]
    via = await chat(client, "local", "not kept", fake=fake)  # the provider's own 502
    assert (via.status_code, error(via)["code"]) == (502, "upstream_error")


async def test_a_kept_local_request_whose_local_provider_times_out_is_kept_local(
    fake_upstream: FakeUpstream, dead_port: int
) -> None:
    text = config_text(fake_upstream, dead_port)
    quick = '    models: ["llama3.2:8b"]\n    timeouts: {connect: 2, read: 0.2}\n'
    text = text.replace('    models: ["llama3.2:8b"]\n', quick)
    assert quick in text
    async with serving(text) as c:
        via = await chat(c, "gpt-4o-mini", f"to {EMAIL}", fake={"delay_ms": 2000})
        assert (via.status_code, error(via)["code"]) == (503, "kept_local")
        assert "timed out" in error(via)["message"]
        via = await chat(c, "local", "not kept", fake={"delay_ms": 2000})
        assert (via.status_code, error(via)["code"]) == (504, "upstream_timeout")
