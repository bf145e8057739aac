"""Routing decisions as clients and upstreams see them: the keep-local invariant, privacy
levels and actions (block, redact with restore, allow), the complexity score on `auto`,
ordered rules, capabilities, decision headers, logs and metrics, explain, and message
checks.

Two fake upstreams run in their own processes and record every request: `cloud` (type
openai) and `local` (type ollama), so the cloud's recording holds only what reached the
cloud. Its raw bodies are searched for the values that must never get there.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.procs import free_port
from gateway.complexity import FACTORS
from gateway.config import ConfigError, parse_config
from tests import llm_server
from tests.conftest import (
    ADMIN_KEY,
    CLIENT_KEY,
    REPO,
    UPSTREAM_KEY,
    FakeUpstream,
    GatewayProcess,
    run_process,
    start_gateway,
)
from tests.test_policy import error_of, log_events, metric, wait_until

HTTP = httpx.Client(timeout=30)

# Values that must never reach the cloud. Secret-looking ones are assembled from pieces so
# that secret scanners reading this file do not take them for real credentials.
OPENAI_KEY = "sk-" + "proj-Q7w3Xk9LmN2pR5tV8yB1cD4fG6hJ0kZa_x-Y"
AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
PEM_LINE = "MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun"
PEM = "-----BEGIN RSA " + f"PRIVATE KEY-----\n{PEM_LINE}\n{PEM_LINE}\n-----END RSA PRIVATE KEY-----"
EMAIL = "maria.garcia@northwind-example.com"
CARD = "4111 1111 1111 1111"  # Luhn-valid
IBAN = "GB82 WEST 1234 5698 7654 32"  # mod-97 valid
SSN = "536-22-1234"
SENSITIVE = {
    "openai_key": ("secret", OPENAI_KEY),
    "aws_access_key": ("secret", AWS_KEY_ID),
    "private_key": ("secret", PEM),
    "email": ("pii", EMAIL),
    "card": ("pii", CARD),
    "iban": ("pii", IBAN),
    "ssn": ("pii", SSN),
}
# What to look for in a raw JSON body: the PEM's newlines are escaped there.
NEEDLES = [PEM_LINE if value == PEM else value for _, value in SENSITIVE.values()]

THREE_QUESTIONS = (
    "What is machine learning? How does it differ from traditional programming? "
    "What are its main applications?"
)


def _industrial() -> str:
    rows = (REPO / "tests/data/complexity_prompts.jsonl").read_text().splitlines()
    prompts = [json.loads(row)["prompt"] for row in rows if row.strip()]
    return next(p for p in prompts if p.startswith("Provide a detailed analysis of the econ"))


INDUSTRIAL = _industrial()  # the seed design's golden complex prompt

KEYS = {name: f"sk-routing-{name}" for name in ("high", "vault", "vaulted", "alice", "bob",
                                                "carol", "mallory")}  # fmt: skip


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


# ------------------------------------------------------------------------- processes


def start_fake(workdir: Path, key: str | None) -> FakeUpstream:
    cmd = [sys.executable, "-m", "tests.fake_upstream"] + (["--require-key", key] if key else [])
    proc, url = run_process("fake-upstream", cmd, workdir, ready_path="/health")
    return FakeUpstream(proc, url)


@pytest.fixture(scope="module")
def cloud(workdir: Path) -> Iterator[FakeUpstream]:
    """The cloud (type openai): its recording must never hold a kept-local value."""
    fake = start_fake(workdir, UPSTREAM_KEY)
    yield fake
    fake.process.stop()


@pytest.fixture(scope="module")
def local(workdir: Path) -> Iterator[FakeUpstream]:
    """The local provider (type ollama; the gateway calls <root>/v1)."""
    fake = start_fake(workdir, None)
    yield fake
    fake.process.stop()


def providers(cloud: FakeUpstream, local_url: str, local_models: str = '["llama3.2"]') -> str:
    return f"""
    providers:
      openai:
        type: openai
        base_url: {cloud.base_url}
        api_key: {UPSTREAM_KEY}
        models: [gpt-4o-mini, text-embedding-3-small]
      ollama:
        type: ollama
        base_url: {local_url}
        models: {local_models}
        capabilities: {{"*": [tools]}}
        timeouts: {{connect: 2, read: 10}}
    aliases: {{local: "ollama:llama3.2", cloud: "openai:gpt-4o-mini"}}
    logging: {{level: info, format: json}}
    """


def main_config(cloud: FakeUpstream, local: FakeUpstream) -> str:
    """The shipped policy: complex `auto` to the cloud, the rest local, privacy keeps local."""
    return f"""
    server: {{max_body_bytes: 4194304}}
    auth:
      api_keys: ["{CLIENT_KEY}"]
      admin_keys: ["{ADMIN_KEY}"]
      keys:
        - {{name: high, sha256: {sha(KEYS["high"])}, privacy_level: high}}
        - {{name: vault, sha256: {sha(KEYS["vault"])}, privacy_level: max}}
        - {{name: vaulted, sha256: {sha(KEYS["vaulted"])}, tier: vault}}
    tiers:
      vault: {{privacy_level: max}}
    {providers(cloud, local.url)}
    routing:
      default_model: local
      capability_model: cloud
      rules:
        - name: complex-to-cloud
          when: {{models: [auto], complexity_above: 0.65}}
          route: cloud
    privacy:
      level: standard
      actions: {{secret: route_local, pii: route_local, keyword: route_local}}
      local_model: local
    """


def redact_config(cloud: FakeUpstream, local: FakeUpstream, restore: bool = True) -> str:
    return f"""
    auth: {{api_keys: ["{CLIENT_KEY}"]}}
    {providers(cloud, local.url)}
    routing: {{default_model: cloud}}
    privacy:
      actions: {{secret: block, pii: redact, keyword: route_local, project: allow,
                default: redact}}
      restore: {"true" if restore else "false"}
      detectors:
        - {{name: employee_id, regex: 'EMP-[0-9]{{6}}', category: hr}}
        - {{name: codename, regex: 'PROJECT-[A-Z]{{5}}', category: project}}
        - {{name: ticket, regex: 'TCK"[0-9]{{4}}', category: hr}}
    """


def rules_config(cloud: FakeUpstream, local: FakeUpstream) -> str:
    """Every rule condition, each probe gated by its own header so that they do not mix."""
    keys = "\n".join(
        f"        - {{name: {name}, sha256: {sha(KEYS[name])}{extra}}}"
        for name, extra in (("alice", ", team: legal"), ("bob", ", tier: premium"),
                            ("carol", ""), ("mallory", ""))
    )  # fmt: skip
    return f"""
    auth:
      api_keys: ["{CLIENT_KEY}"]
      keys:
{keys}
    tiers:
      premium: {{}}
    {providers(cloud, local.url, '["llama3.2", "qwen2.5-coder"]')}
    privacy:
      actions: {{secret: allow, pii: allow, keyword: allow}}
    routing:
      default_model: local
      rules:
        - name: legal-stays-local
          when: {{teams: [legal]}}
          route: local
        - name: no-mallory
          when: {{keys: [mallory]}}
          block: "Mallory's key may not use automatic routing."
        - name: order-first
          when: {{headers: {{x-order: both}}, latency_preference: [quality]}}
          route: "ollama:qwen2.5-coder"
        - name: order-second
          when: {{headers: {{x-order: both}}}}
          route: cloud
        - name: code
          when: {{models: [auto], headers: {{x-task: code}}}}
          route: "ollama:qwen2.5-coder"
        - name: carol-cloud
          when: {{keys: [carol]}}
          route: cloud
        - name: premium-cloud
          when: {{models: [auto], tiers: [premium], complexity_above: 0.4}}
          route: cloud
        - name: p-secret
          when: {{headers: {{x-probe: privacy}}, privacy: [secret]}}
          route: local
        - name: p-any
          when: {{headers: {{x-probe: privacy}}, privacy: [any]}}
          route: "ollama:qwen2.5-coder"
        - name: p-none
          when: {{headers: {{x-probe: privacy}}, privacy: [none]}}
          route: cloud
        - name: p-tools
          when: {{headers: {{x-probe: tools}}, tools: true}}
          route: local
        - name: p-no-tools
          when: {{headers: {{x-probe: tools}}, tools: false}}
          route: cloud
        - name: p-small
          when: {{headers: {{x-probe: tokens}}, prompt_tokens_below: 40}}
          route: local
        - name: p-large
          when: {{headers: {{x-probe: tokens}}, prompt_tokens_above: 2000}}
          route: cloud
        - name: p-simple
          when: {{headers: {{x-probe: complexity}}, complexity_below: 0.2}}
          route: local
        - name: p-speed
          when: {{latency_preference: [speed]}}
          route: local
        - name: complex-to-cloud
          when: {{models: [auto], complexity_above: 0.65}}
          route: cloud
    """


def down_config(cloud: FakeUpstream, dead_url: str) -> str:
    """The local provider is down: what it would serve must not go to the cloud instead."""
    return f"""
    auth: {{api_keys: ["{CLIENT_KEY}"]}}
    {providers(cloud, dead_url)}
    routing: {{default_model: local}}
    """


def max_config(cloud: FakeUpstream, local: FakeUpstream) -> str:
    return f"""
    auth: {{api_keys: ["{CLIENT_KEY}"]}}
    {providers(cloud, local.url)}
    routing:
      default_model: cloud
    privacy: {{level: max}}
    """


def cloud_only_config(cloud: FakeUpstream) -> str:
    return f"""
    auth: {{api_keys: ["{CLIENT_KEY}"]}}
    providers:
      openai:
        type: openai
        base_url: {cloud.base_url}
        api_key: {UPSTREAM_KEY}
        models: [gpt-4o-mini]
    routing: {{default_model: gpt-4o-mini}}
    """


def deny_config(cloud: FakeUpstream, local: FakeUpstream) -> str:
    """Redis down under `deny`: a kept-local request gets that error, not a local failure."""
    return f"""
    auth: {{api_keys: ["{CLIENT_KEY}"]}}
    state: {{redis_url: "redis://127.0.0.1:{free_port()}/0", on_redis_error: deny}}
    {providers(cloud, local.url)}
    routing: {{default_model: local}}
    """


@pytest.fixture(scope="module")
def gws(cloud: FakeUpstream, local: FakeUpstream, workdir: Path) -> Iterator[dict[str, Any]]:
    """All of this module's gateways, started side by side (each takes about a second)."""
    dead = f"http://127.0.0.1:{free_port()}"
    configs = {
        "main": main_config(cloud, local),
        "redact": redact_config(cloud, local),
        "no_restore": redact_config(cloud, local, restore=False),
        "rules": rules_config(cloud, local),
        "down": down_config(cloud, dead),
        "max": max_config(cloud, local),
        "deny": deny_config(cloud, local),
        "cloud_only": cloud_only_config(cloud),
    }
    with ThreadPoolExecutor(len(configs)) as pool:
        futures = {
            name: pool.submit(start_gateway, text, workdir) for name, text in configs.items()
        }
        started = {name: future.result() for name, future in futures.items()}
    yield started | {"configs": configs}
    for gateway in started.values():
        gateway.process.stop()


@pytest.fixture(scope="module")
def gw(gws: dict[str, Any]) -> GatewayProcess:
    return gws["main"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- helpers


def post(
    gw: GatewayProcess,
    body: dict[str, Any],
    path: str = "/chat/completions",
    key: str | None = CLIENT_KEY,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = (bearer(key) if key else {}) | (headers or {})
    return HTTP.post(gw.base_url + path, json=body, headers=sent)


def user(content: Any, model: str = "auto", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def routed(response: httpx.Response, provider: str, rule: str) -> httpx.Response:
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-provider"] == provider, (
        response.headers.get("x-gateway-route-rule"),
        response.headers.get("x-gateway-privacy"),
    )
    assert response.headers["x-gateway-route-rule"] == rule
    return response


def answer(response: httpx.Response) -> str:
    """The text a client reads: a whole body's, or a stream's pieces joined."""
    if response.headers["content-type"].startswith("text/event-stream"):
        pieces = []
        for line in response.text.splitlines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    piece = choice["delta"].get("content") if "delta" in choice else choice["text"]
                    pieces.append(piece or "")
        return "".join(pieces)
    choice = response.json()["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]  # type: ignore[no-any-return]


def recorded(fake: FakeUpstream) -> list[dict[str, Any]]:
    """What the fake received (FakeUpstream.requests() opens a new client: ~60 ms a call)."""
    return HTTP.get(fake.url + "/_fake/requests").json()  # type: ignore[no-any-return]


def forget(fake: FakeUpstream) -> None:
    HTTP.delete(fake.url + "/_fake/requests")


def cloud_raw(cloud: FakeUpstream) -> str:
    return "\n".join(r["raw"] for r in recorded(cloud))


def assert_cloud_clean(cloud: FakeUpstream, needles: list[str] = NEEDLES) -> None:
    raw = cloud_raw(cloud)
    leaked = [needle for needle in needles if needle in raw]
    assert not leaked, f"reached the cloud: {leaked}"


# ---------------------------------------------------------------- 1. the invariant

# Where a value can sit in a request: (endpoint path, body without model).
Place = Callable[[str], tuple[str, dict[str, Any]]]


def _tool(description: str = "Looks up a record.") -> dict[str, Any]:
    params = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    return {"type": "function", "function": {"name": "lookup", "description": description,
                                             "parameters": params}}  # fmt: skip


def _call(arguments: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": arguments}}
    ]}  # fmt: skip


PLACES: dict[str, Place] = {
    "content": lambda v: ("/chat/completions", {"messages": [
        {"role": "user", "content": f"{THREE_QUESTIONS} Reference: {v}"}]}),
    "content-part": lambda v: ("/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": THREE_QUESTIONS}, {"type": "text", "text": f"Ref: {v}"}]}]}),
    "name": lambda v: ("/chat/completions", {"messages": [
        {"role": "user", "name": v, "content": THREE_QUESTIONS}]}),
    "tool-call-arguments": lambda v: ("/chat/completions", {"messages": [
        {"role": "user", "content": "Look it up."}, _call(json.dumps({"q": v})),
        {"role": "tool", "tool_call_id": "call_1", "content": "found"},
        {"role": "user", "content": THREE_QUESTIONS}], "tools": [_tool()]}),
    "tool-result": lambda v: ("/chat/completions", {"messages": [
        {"role": "user", "content": "Look it up."}, _call('{"q": "maria"}'),
        {"role": "tool", "tool_call_id": "call_1", "content": f"record: {v}"},
        {"role": "user", "content": THREE_QUESTIONS}], "tools": [_tool()]}),
    "tool-description": lambda v: ("/chat/completions", {"messages": [
        {"role": "user", "content": THREE_QUESTIONS}], "tools": [_tool(f"Looks up {v}.")]}),
    # Fields the cloud receives besides the prompt: the model sees the first four.
    "prediction": lambda v: ("/chat/completions", {"messages": [
        {"role": "user", "content": THREE_QUESTIONS}],
        "prediction": {"type": "content", "content": f"Ref: {v}"}}),
    "response-schema": lambda v: ("/chat/completions", {"messages": [
        {"role": "user", "content": THREE_QUESTIONS}], "response_format": {
            "type": "json_schema", "json_schema": {"name": "answer", "schema": {
                "type": "object", "properties": {"ref": {"type": "string", "enum": [v]}}}}}}),
    "tool-parameter-enum": lambda v: ("/chat/completions", {"messages": [
        {"role": "user", "content": THREE_QUESTIONS}], "tools": [{"type": "function",
            "function": {"name": "lookup", "parameters": {"type": "object", "properties": {
                "q": {"type": "string", "enum": ["x", v]}}}}}]}),
    "stop": lambda v: ("/chat/completions", {"messages": [
        {"role": "user", "content": THREE_QUESTIONS}], "stop": ["END", v]}),
    "user-field": lambda v: ("/chat/completions", {"messages": [
        {"role": "user", "content": THREE_QUESTIONS}], "user": v}),
    "metadata": lambda v: ("/chat/completions", {"messages": [
        {"role": "user", "content": THREE_QUESTIONS}], "metadata": {"owner": v}}),
    "completions-prompt": lambda v: ("/completions", {"prompt": f"{THREE_QUESTIONS} Ref: {v}"}),
    "embeddings-input": lambda v: ("/embeddings", {"input": ["first", f"Ref: {v}"]}),
}  # fmt: skip


def modes(path: str) -> list[tuple[str, dict[str, Any], str]]:
    """(model, extra body fields, the rule expected) for one endpoint."""
    if path == "/embeddings":
        # No score for embeddings: `auto` means the default, already local.
        return [("auto", {}, "default"),
                ("openai:text-embedding-3-small", {}, "privacy"),
                ("text-embedding-3-small", {}, "privacy"),
                ("auto", {"routing_preferences": {"force_provider": "openai"}}, "privacy")]  # fmt: skip
    # The text is complex: `auto` alone would have gone to the cloud.
    return [("auto", {}, "privacy"),
            ("openai:gpt-4o-mini", {}, "privacy"),
            ("cloud", {}, "privacy"),
            ("cloud", {"stream": True}, "privacy"),
            ("auto", {"routing_preferences": {"force_provider": "openai"}}, "privacy")]  # fmt: skip


@pytest.mark.parametrize("place", list(PLACES))
def test_kept_local_values_never_reach_the_cloud(
    gw: GatewayProcess, cloud: FakeUpstream, local: FakeUpstream, place: str
) -> None:
    forget(cloud)
    for detector, (category, value) in SENSITIVE.items():
        path, body = PLACES[place](value)
        for model, extra, rule in modes(path):
            forget(local)
            response = routed(post(gw, {"model": model, **body, **extra}, path), "ollama", rule)
            assert category in response.headers["x-gateway-privacy"].split(","), detector
            got = recorded(local)
            assert len(got) == 1 and got[0]["path"] == "/v1" + path
            assert (PEM_LINE if value == PEM else value) in got[0]["raw"], (detector, model)
            assert "routing_preferences" not in got[0]["raw"]
    assert_cloud_clean(cloud)
    assert recorded(cloud) == []


def test_a_clean_request_does_reach_the_cloud(gw: GatewayProcess, cloud: FakeUpstream) -> None:
    """The recording works: what may go to the cloud is there."""
    forget(cloud)
    routed(post(gw, user("Say hello to Maria.", "cloud")), "openai", "explicit")
    routed(post(gw, user(THREE_QUESTIONS)), "openai", "complex-to-cloud")
    assert [r["body"]["model"] for r in recorded(cloud)] == ["gpt-4o-mini", "gpt-4o-mini"]


@pytest.mark.parametrize(
    ("where", "message", "param"),
    [
        pytest.param("arguments", _call({"q": EMAIL}),  # type: ignore[arg-type]
                     "messages[0].tool_calls[0].function.arguments", id="arguments-object"),
        pytest.param("text", {"role": "user", "content": [{"type": "text", "text": {"v": EMAIL}}]},
                     "messages[0].content[0].text", id="text-part-object"),
        pytest.param("name", {"role": "user", "name": [EMAIL], "content": "hi"},
                     "messages[0].name", id="name-list"),
    ],
)  # fmt: skip
def test_shapes_the_scan_cannot_read_are_refused_before_any_upstream(
    gw: GatewayProcess, cloud: FakeUpstream, where: str, message: dict[str, Any], param: str
) -> None:
    """A value in a field OpenAI requires to be a string, sent as something else."""
    forget(cloud)
    response = post(gw, {"model": "cloud", "messages": [message]})
    error = error_of(response, 400, "invalid_type")
    assert error["param"] == param
    assert EMAIL not in response.text
    assert recorded(cloud) == []


def test_embedding_input_of_nested_strings_is_refused(
    gw: GatewayProcess, cloud: FakeUpstream
) -> None:
    forget(cloud)
    for field, path in (("input", "/embeddings"), ("prompt", "/completions")):
        model = "text-embedding-3-small" if field == "input" else "cloud"
        response = post(gw, {"model": model, field: [["Ref", EMAIL]]}, path)
        error = error_of(response, 400, "invalid_type")
        assert error["param"] == f"{field}[0]"
    tools = [{"type": "function", "function": {"name": "f", "description": {"x": EMAIL}}}]
    response = post(gw, user("hi", "cloud", tools=tools))
    assert error_of(response, 400, "invalid_type")["param"] == "tools[0].function.description"
    assert recorded(cloud) == []


def test_local_provider_down_is_503_kept_local(gws: dict[str, Any], cloud: FakeUpstream) -> None:
    down = gws["down"]
    forget(cloud)
    for value, category in ((EMAIL, "pii"), (OPENAI_KEY, "secret"), (CARD, "pii")):
        body = user(f"{THREE_QUESTIONS} Ref: {value}")
        for model, extra in (("auto", {}), ("cloud", {}), ("openai:gpt-4o-mini", {"stream": True}),
                             ("auto", {"routing_preferences": {"force_provider": "openai"}})):  # fmt: skip
            response = post(down, body | {"model": model} | extra)
            error = error_of(response, 503, "kept_local")
            assert "kept local" in error["message"] and category in error["message"]
            assert "'ollama'" in error["message"]
            # Unreachable, and after five such failures its circuit breaker fails fast.
            assert "not reachable" in error["message"] or "breaker is open" in error["message"]
            assert value not in response.text
            assert response.headers["x-gateway-provider"] == "ollama"
    # A clean request that defaults to the dead local provider: its plain error, not kept_local.
    error = error_of(post(down, user("What time is it?")), 503, "provider_circuit_open")
    assert "'ollama'" in error["message"] and "provider_unavailable" in error["message"]
    assert recorded(cloud) == []
    routed(post(down, user("What time is it?", "cloud")), "openai", "explicit")
    assert len(recorded(cloud)) == 1
    assert_cloud_clean(cloud)


def test_no_local_provider_at_all_is_503_kept_local(
    gws: dict[str, Any], cloud: FakeUpstream
) -> None:
    forget(cloud)
    for model in ("auto", "gpt-4o-mini"):
        response = post(gws["cloud_only"], user(f"Mail {EMAIL}", model))
        error = error_of(response, 503, "kept_local")
        assert "pii" in error["message"] and "no local provider" in error["message"]
    routed(post(gws["cloud_only"], user("Say hello.")), "openai", "default")
    assert len(recorded(cloud)) == 1
    assert_cloud_clean(cloud)


def test_a_state_error_on_a_kept_local_request_is_not_called_a_local_failure(
    gws: dict[str, Any], cloud: FakeUpstream, local: FakeUpstream
) -> None:
    forget(cloud)
    forget(local)
    response = post(gws["deny"], user(f"Write to {EMAIL}", "cloud"))
    error = error_of(response, 503, "state_unavailable")
    assert "Redis" in error["message"]
    assert recorded(cloud) == [] and recorded(local) == []


# ------------------------------------------------------------------- privacy levels


def test_privacy_level_max_keeps_even_clean_requests_local(
    gws: dict[str, Any], cloud: FakeUpstream
) -> None:
    gw = gws["main"]
    clean = user("Say hello.", "cloud")
    forget(cloud)
    routed(post(gw, clean), "openai", "explicit")  # the control: standard goes to the cloud
    assert len(recorded(cloud)) == 1
    cases = [
        (gws["max"], clean, CLIENT_KEY, {}),  # config
        (gws["max"], user(THREE_QUESTIONS, "openai:gpt-4o-mini", stream=True), CLIENT_KEY, {}),
        (gw, clean, KEYS["vault"], {}),  # the key's privacy_level
        (gw, clean, KEYS["vaulted"], {}),  # the key's tier's privacy_level
        (gw, clean | {"routing_preferences": {"privacy_level": "max"}}, CLIENT_KEY, {}),
        (gw, clean, CLIENT_KEY, {"x-gateway-privacy-level": "max"}),
        (gw, clean, CLIENT_KEY, {"X-Gateway-Privacy-Level": "MAX"}),
        # A request may not lower its key's level.
        (gw, clean | {"routing_preferences": {"privacy_level": "standard"}}, KEYS["vault"], {}),
        (gw, clean, KEYS["vault"], {"x-gateway-privacy-level": "standard"}),
    ]
    for target, body, key, headers in cases:
        response = routed(post(target, body, key=key, headers=headers), "ollama", "privacy")
        assert response.headers["x-gateway-privacy"] == "none"
        assert response.headers["x-gateway-model"] == "llama3.2"
    assert len(recorded(cloud)) == 1


def test_keywords_act_from_level_high(gw: GatewayProcess, cloud: FakeUpstream) -> None:
    forget(cloud)
    high = {"x-gateway-privacy-level": "high"}
    for word in ("password", "secret"):
        text = f"What is a good {word} policy for our team?"
        # standard: found, but keywords do not act
        response = routed(post(gw, user(text, "cloud")), "openai", "explicit")
        assert response.headers["x-gateway-privacy"] == "keyword"
        routed(post(gw, user(text, "cloud"), headers=high), "ollama", "privacy")
        routed(post(gw, user(text, "cloud"), key=KEYS["high"]), "ollama", "privacy")
        # the key says high: a request asking for standard still acts on keywords
        lower = {"x-gateway-privacy-level": "standard"}
        routed(post(gw, user(text, "cloud"), key=KEYS["high"], headers=lower), "ollama", "privacy")
        prefs = {"routing_preferences": {"privacy_level": "standard"}}
        routed(post(gw, user(text, "cloud") | prefs, key=KEYS["high"]), "ollama", "privacy")
    for text in ("My keyboard is broken.", "Which tokenizer does it use?"):
        response = routed(post(gw, user(text, "cloud"), headers=high), "openai", "explicit")
        assert response.headers["x-gateway-privacy"] == "none"
    sent = cloud_raw(cloud)
    assert "password policy" in sent and "keyboard" in sent and "tokenizer" in sent


def test_an_unknown_privacy_level_is_400_naming_the_levels(gw: GatewayProcess) -> None:
    response = post(gw, user("hi"), headers={"x-gateway-privacy-level": "paranoid"})
    error = error_of(response, 400, "invalid_value")
    assert error["param"] == "x-gateway-privacy-level"
    assert "standard, high, max" in error["message"]
    response = post(gw, user("hi") | {"routing_preferences": {"privacy_level": "paranoid"}})
    error = error_of(response, 400, "invalid_value")
    assert error["param"] == "routing_preferences.privacy_level"
    assert "'standard', 'high', 'max'" in error["message"]


# -------------------------------------------------------------------------- 2. actions


def test_block_is_400_naming_the_category_not_the_value(
    gws: dict[str, Any], cloud: FakeUpstream
) -> None:
    forget(cloud)
    for value in (OPENAI_KEY, AWS_KEY_ID, PEM):
        response = post(gws["redact"], user(f"Deploy with {value} and mail {EMAIL}"))
        error = error_of(response, 400, "privacy_blocked")
        assert "secret" in error["message"]
        assert value not in response.text and PEM_LINE not in response.text
        assert EMAIL not in response.text
    assert recorded(cloud) == []


def test_redact_sends_placeholders_and_restores_the_answer(
    gws: dict[str, Any], cloud: FakeUpstream
) -> None:
    redact_gw = gws["redact"]
    text = f"Mail {EMAIL} or {EMAIL}, card {CARD}, IBAN {IBAN}, number {SSN}, id EMP-123456."
    placeholders = ("[EMAIL_1]", "[CARD_1]", "[IBAN_1]", "[SSN_1]", "[EMPLOYEE_ID_1]")
    for stream in (False, True):
        forget(cloud)
        response = post(redact_gw, user(text, stream=stream), headers={"x-fake-chunks": "300"})
        routed(response, "openai", "default")
        assert response.headers["x-gateway-privacy"] == "hr,pii"
        assert answer(response) == f"Fake reply to: {text}"
        assert not any(p in response.text for p in placeholders)
        [sent] = recorded(cloud)
        content = sent["body"]["messages"][0]["content"]
        assert content == ("Mail [EMAIL_1] or [EMAIL_1], card [CARD_1], IBAN [IBAN_1], "
                           "number [SSN_1], id [EMPLOYEE_ID_1].")  # fmt: skip
        assert_cloud_clean(cloud, [EMAIL, CARD, IBAN, SSN, "EMP-123456"])


@pytest.mark.parametrize("chunks", ["1", "3", "7", "300"])
def test_a_placeholder_split_across_stream_chunks_is_restored(
    gws: dict[str, Any], cloud: FakeUpstream, chunks: str
) -> None:
    """The fake cuts its reply into `chunks` events: with many, each placeholder is split."""
    text = f"Write to {EMAIL} today."
    response = post(gws["redact"], user(text, stream=True), headers={"x-fake-chunks": chunks})
    routed(response, "openai", "default")
    assert answer(response) == f"Fake reply to: {text}"
    assert "[EMAIL_" not in response.text
    assert response.text.rstrip().endswith("data: [DONE]")


def test_redacted_completions_are_restored(gws: dict[str, Any], cloud: FakeUpstream) -> None:
    for stream in (False, True):
        forget(cloud)
        prompt = f"Summarize the mail from {EMAIL}:"
        body = {"model": "auto", "prompt": prompt, "stream": stream}
        response = post(gws["redact"], body, "/completions", headers={"x-fake-chunks": "50"})
        routed(response, "openai", "default")
        assert answer(response) == f"Fake reply to: {prompt}"
        assert recorded(cloud)[-1]["body"]["prompt"] == "Summarize the mail from [EMAIL_1]:"


def tool_call_arguments(response: httpx.Response) -> str:
    if not response.headers["content-type"].startswith("text/event-stream"):
        return response.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]  # type: ignore[no-any-return]
    pieces = []
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                for call in choice["delta"].get("tool_calls") or []:
                    pieces.append(call["function"].get("arguments") or "")
    return "".join(pieces)


@pytest.mark.parametrize("stream", [False, True])
def test_placeholders_in_tool_call_arguments_are_restored(
    gws: dict[str, Any], cloud: FakeUpstream, stream: bool
) -> None:
    """An agent's tool must receive the real address the model was only shown as [EMAIL_1]."""
    forget(cloud)
    tool = _tool("Sends a mail.")
    ticket = 'TCK"1234'  # a value with a quote: escaped twice inside the arguments' JSON
    body = user(f"Send ticket {ticket} to {EMAIL}.", tools=[tool], stream=stream)
    # The fake model answers with a tool call on the placeholders, cut into 40 pieces.
    arguments = '{"to": "[EMAIL_1]", "cc": "[EMAIL_1]", "ticket": "[TICKET_1]"}'
    fake = {"x-fake-arguments": arguments, "x-fake-chunks": "40"}
    response = routed(post(gws["redact"], body, headers=fake), "openai", "default")
    assert json.loads(tool_call_arguments(response)) == {"to": EMAIL, "cc": EMAIL, "ticket": ticket}
    assert "[EMAIL_1]" not in response.text and "[TICKET_1]" not in response.text
    sent = recorded(cloud)[-1]["body"]["messages"][0]["content"]
    assert sent == "Send ticket [TICKET_1] to [EMAIL_1]."
    assert_cloud_clean(cloud, [EMAIL, "1234"])


def test_a_held_back_tail_that_is_no_placeholder_still_arrives(gws: dict[str, Any]) -> None:
    """The answer ends on what could have been the start of a placeholder (say, max_tokens)."""
    redact_gw = gws["redact"]
    fake = {"x-fake-content": "Reply to [EMAIL_1] or [EMAIL_", "x-fake-chunks": "30"}
    for path, body in (
        ("/chat/completions", user(f"Mail {EMAIL}", stream=True)),
        ("/completions", {"model": "auto", "prompt": f"Mail {EMAIL}", "stream": True}),
    ):
        response = routed(post(redact_gw, body, path, headers=fake), "openai", "default")
        assert answer(response) == f"Reply to {EMAIL} or [EMAIL_"
    fake = {"x-fake-arguments": '{"to": "[EMAIL_1]", "cc": "[EMAIL_', "x-fake-chunks": "30"}
    body = user(f"Mail {EMAIL}", tools=[_tool()], stream=True)
    response = routed(post(redact_gw, body, headers=fake), "openai", "default")
    assert tool_call_arguments(response) == f'{{"to": "{EMAIL}", "cc": "[EMAIL_'


def test_a_placeholder_the_client_wrote_is_not_restored_into_a_value(
    gws: dict[str, Any], cloud: FakeUpstream
) -> None:
    forget(cloud)
    text = f"Template [EMAIL_1] becomes {EMAIL}."
    response = routed(post(gws["redact"], user(text)), "openai", "default")
    assert answer(response) == f"Fake reply to: {text}"
    assert recorded(cloud)[-1]["body"]["messages"][0]["content"] == (
        "Template [EMAIL_1] becomes [EMAIL_2]."
    )


def test_fields_beside_the_prompt_are_redacted_too(
    gws: dict[str, Any], cloud: FakeUpstream
) -> None:
    forget(cloud)
    tools = [{"type": "function", "function": {"name": "mail", "parameters": {
        "type": "object", "properties": {"to": {"type": "string", "enum": [EMAIL]}}}}}]  # fmt: skip
    body = user("Say hello.", tools=tools, user=EMAIL, metadata={"owner": EMAIL})
    response = routed(post(gws["redact"], body), "openai", "default")
    assert response.headers["x-gateway-privacy"] == "pii"
    sent = recorded(cloud)[-1]["body"]
    assert sent["user"] == "[EMAIL_1]" and sent["metadata"] == {"owner": "[EMAIL_1]"}
    assert sent["tools"][0]["function"]["parameters"]["properties"]["to"]["enum"] == ["[EMAIL_1]"]
    assert_cloud_clean(cloud)


def test_without_restore_the_client_sees_the_placeholders(
    gws: dict[str, Any], cloud: FakeUpstream
) -> None:
    forget(cloud)
    response = routed(post(gws["no_restore"], user(f"Mail {EMAIL}")), "openai", "default")
    assert answer(response) == "Fake reply to: Mail [EMAIL_1]"
    assert_cloud_clean(cloud)


def test_allow_goes_to_the_cloud_and_a_local_route_is_not_redacted(
    gws: dict[str, Any], cloud: FakeUpstream, local: FakeUpstream
) -> None:
    forget(cloud)
    response = routed(post(gws["redact"], user("Status of PROJECT-ALPHA?")), "openai", "default")
    assert response.headers["x-gateway-privacy"] == "project"
    assert "PROJECT-ALPHA" in recorded(cloud)[-1]["raw"]
    forget(local)
    routed(post(gws["redact"], user(f"Mail {EMAIL}", "local")), "ollama", "explicit")
    assert EMAIL in recorded(local)[-1]["raw"]
    assert "PROJECT-ALPHA" in cloud_raw(cloud) and EMAIL not in cloud_raw(cloud)


# ----------------------------------------------------------------------- 3. complexity


def test_complexity_routes_auto(gw: GatewayProcess) -> None:
    cases = [
        ("What time is it?", "ollama", "default"),
        (INDUSTRIAL, "openai", "complex-to-cloud"),
        (THREE_QUESTIONS, "openai", "complex-to-cloud"),
    ]
    for text, provider, rule in cases:
        response = routed(post(gw, user(text)), provider, rule)
        score = response.headers["x-gateway-complexity"]
        assert re.fullmatch(r"[01]\.\d\d", score), score
        assert (float(score) > 0.65) == (provider == "openai"), (text, score)
        assert response.headers["x-gateway-privacy"] == "none"


def test_hi_after_a_huge_system_prompt_and_tool_history_stays_local(gw: GatewayProcess) -> None:
    system = {"role": "system", "content": "You are a detailed, comprehensive analyst. " * 500}
    assert len(system["content"].split()) >= 3000
    history: list[dict[str, Any]] = []
    for i in range(10):
        history.append(_call(json.dumps({"q": f"design analysis {i}"})))
        history[-1]["tool_calls"][0]["id"] = f"call_{i}"
        result = "Detailed technical analysis: compare, evaluate and optimize the design. " * 20
        history.append({"role": "tool", "tool_call_id": f"call_{i}", "content": result})
    body = {"model": "auto", "messages": [system, *history, {"role": "user", "content": "hi"}],
            "tools": [_tool()]}  # fmt: skip
    response = routed(post(gw, body), "ollama", "default")
    assert float(response.headers["x-gateway-complexity"]) < 0.3


def test_an_explicit_model_is_not_scored_but_still_scanned(gw: GatewayProcess) -> None:
    response = routed(post(gw, user(INDUSTRIAL, "cloud")), "openai", "explicit")
    assert "x-gateway-complexity" not in response.headers
    assert response.headers["x-gateway-privacy"] == "none"
    response = routed(post(gw, user(f"{INDUSTRIAL} {EMAIL}", "cloud")), "ollama", "privacy")
    assert "x-gateway-complexity" not in response.headers
    assert response.headers["x-gateway-privacy"] == "pii"


# ---------------------------------------------------------------------------- 4. rules


def test_rules_first_match_wins_and_every_condition(gws: dict[str, Any]) -> None:
    rules = gws["rules"]
    coder = "qwen2.5-coder"

    def decide(body: dict[str, Any], key: str = CLIENT_KEY, **headers: str) -> tuple[str, str]:
        sent = {k.replace("_", "-"): v for k, v in headers.items()}
        response = post(rules, body, key=key, headers=sent)
        assert response.status_code == 200, response.text
        return response.headers["x-gateway-route-rule"], response.headers["x-gateway-model"]

    hi = user("hi")
    quality = {"routing_preferences": {"latency_preference": "quality"}}
    speed = {"routing_preferences": {"latency_preference": "speed"}}
    tools = {"tools": [_tool()]}
    # Order: both match, the first listed wins; without its extra condition, the second.
    assert decide(hi | quality, x_order="both") == ("order-first", coder)
    assert decide(hi, x_order="both") == ("order-second", "gpt-4o-mini")
    # Cookbook: a team pinned local (even a complex ask), a tier allowed the cloud, code.
    assert decide(user(INDUSTRIAL), KEYS["alice"]) == ("legal-stays-local", "llama3.2")
    assert decide(user(INDUSTRIAL)) == ("complex-to-cloud", "gpt-4o-mini")
    assert decide(user("Explain photosynthesis."), KEYS["bob"]) == ("premium-cloud", "gpt-4o-mini")
    assert decide(user("Explain photosynthesis.")) == ("default", "llama3.2")
    assert decide(user("hi"), KEYS["bob"]) == ("default", "llama3.2")
    assert decide(user("Fix my regex"), x_task="code") == ("code", coder)
    assert decide(user("Fix my regex"), x_task="CODE") == ("code", coder)  # case-insensitive
    assert decide(user("Fix my regex"), x_task="prose") == ("default", "llama3.2")
    assert decide(hi, KEYS["carol"]) == ("carol-cloud", "gpt-4o-mini")
    # privacy: a category, any, none
    assert decide(user(f"Use {OPENAI_KEY}"), x_probe="privacy") == ("p-secret", "llama3.2")
    assert decide(user(f"Mail {EMAIL}"), x_probe="privacy") == ("p-any", coder)
    assert decide(user("What is my password?"), x_probe="privacy") == ("p-any", coder)
    assert decide(hi, x_probe="privacy") == ("p-none", "gpt-4o-mini")
    # tools true / false
    assert decide(hi | tools, x_probe="tools") == ("p-tools", "llama3.2")
    assert decide(hi, x_probe="tools") == ("p-no-tools", "gpt-4o-mini")
    # prompt size (body bytes / 4): below, above, between
    assert decide(hi, x_probe="tokens") == ("p-small", "llama3.2")
    assert decide(user("word " * 2000), x_probe="tokens") == ("p-large", "gpt-4o-mini")
    assert decide(user("word " * 100), x_probe="tokens") == ("default", "llama3.2")
    # complexity below
    assert decide(hi, x_probe="complexity") == ("p-simple", "llama3.2")
    assert decide(user("Explain photosynthesis."), x_probe="complexity") == ("default", "llama3.2")
    # latency preference
    assert decide(hi | speed) == ("p-speed", "llama3.2")
    assert decide(hi | quality) == ("default", "llama3.2")
    # An explicit model skips the rules.
    assert decide(user("hi", "cloud"), KEYS["alice"]) == ("explicit", "gpt-4o-mini")


def test_a_block_rule_is_403_with_its_message(gws: dict[str, Any], cloud: FakeUpstream) -> None:
    forget(cloud)
    response = post(gws["rules"], user("hi"), key=KEYS["mallory"])
    error = error_of(response, 403, "request_blocked")
    assert error["message"] == "Mallory's key may not use automatic routing."
    assert recorded(cloud) == []


def config_errors(routing: str = "", privacy: str = "", caps: str = "[tools]") -> list[str]:
    text = f"""
    providers:
      openai: {{type: openai, base_url: "http://127.0.0.1:9/v1", api_key: k, models: [gpt-4o]}}
      ollama: {{type: ollama, base_url: "http://127.0.0.1:9", models: [llama3.2],
               capabilities: {{"*": {caps}}}}}
    aliases: {{local: "ollama:llama3.2"}}
    routing:
      default_model: local
      {routing}
    privacy:
      {privacy}
    """
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), env={})
    return info.value.errors


@pytest.mark.parametrize(
    ("section", "says"),
    [
        pytest.param({"routing": "rules: [{name: a, route: nowhere}]"},
                     ["routing.rules[0].route", "'nowhere' is not a configured model"],
                     id="unknown-model"),
        pytest.param({"routing": "rules: [{name: a, route: local, block: 'no'}]"},
                     ["routing.rules[0]", "exactly one action"], id="route-and-block"),
        pytest.param({"routing": "rules: [{name: a, route: local}, {name: a, route: local}]"},
                     ["routing.rules[1].name", "'a' is already used"], id="duplicate-name"),
        pytest.param({"routing": "rules: [{name: privacy, route: local}]"},
                     ["routing.rules[0].name", "'privacy'"], id="reserved-name"),
        pytest.param({"routing": "rules: [{name: a, when: {complexity_above: 1.5}, route: local}]"},
                     ["routing.rules[0].when.complexity_above", "between 0 and 1"], id="bound"),
        pytest.param({"routing": "rules: [{name: a, when: {models: [cloud]}, block: 'no'}]"},
                     ["routing.rules[0].when.models", "never match"], id="models-without-auto"),
        pytest.param({"routing": "rules: [{name: a, when: {privacy: [PII]}, route: local}]"},
                     ["routing.rules[0].when.privacy", "'PII'"], id="unknown-category"),
        pytest.param({"routing": "rules: [{name: a, when: {latency_preference: [fast]}, "
                                 "route: local}]"},
                     ["routing.rules[0].when.latency_preference", "'fast'"], id="latency"),
        pytest.param({"routing": "capability_model: nowhere"},
                     ["routing.capability_model", "'nowhere'"], id="capability-model"),
        pytest.param({"routing": "force_provider: azure"},
                     ["routing.force_provider", "'azure'"], id="force-provider"),
        pytest.param({"privacy": 'detectors: [{name: bad, regex: "([", category: pii}]'},
                     ["privacy.detectors[0]", "'bad'", "invalid regex"], id="bad-regex"),
        pytest.param({"privacy": 'detectors: [{name: ok, regex: "F-[0-9]+"}, '
                                 '{name: worse, regex: "(", category: pii}]'},
                     ["privacy.detectors[1]", "'worse'", "invalid regex"], id="bad-regex-second"),
        pytest.param({"privacy": "detectors: [{name: dup, regex: a}, {name: dup, regex: b}]"},
                     ["privacy.detectors[1]", "'dup'", "already taken"], id="duplicate-detector"),
        pytest.param({"privacy": 'keywords: [password, "  "]'},
                     ["privacy.keywords", "non-empty"], id="blank-keyword"),
        pytest.param({"privacy": 'local_model: "openai:gpt-4o"'},
                     ["privacy.local_model", "not a local provider"], id="cloud-local-model"),
        pytest.param({"caps": "[tools, telepathy]"},
                     ["providers.ollama.capabilities.*", "unknown capability 'telepathy'"],
                     id="unknown-capability"),
    ],
)  # fmt: skip
def test_routing_config_errors(section: dict[str, str], says: list[str]) -> None:
    errors = config_errors(**section)
    assert any(all(s in e for s in says) for e in errors), errors


def test_a_rule_may_name_a_custom_category() -> None:
    errors = config_errors(
        routing="rules: [{name: hr, when: {privacy: [hr, any]}, route: nowhere}]",
        privacy="detectors: [{name: employee_id, regex: 'EMP-[0-9]+', category: hr}]",
    )
    assert len(errors) == 1 and "'nowhere'" in errors[0], errors  # and nothing about `hr`


# --------------------------------------------------------------------- 5. capabilities


def test_capabilities_route_and_privacy_wins(gw: GatewayProcess, cloud: FakeUpstream) -> None:
    forget(cloud)
    response = routed(post(gw, user("What is the weather?", tools=[_tool()])), "ollama", "default")
    assert response.json()["choices"][0]["message"]["tool_calls"]
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    routed(post(gw, user([{"type": "text", "text": "What is this?"}, image])), "openai",
           "capability")  # fmt: skip
    assert recorded(cloud)[-1]["body"]["messages"][0]["content"][1] == image
    with_pii = user([{"type": "text", "text": f"Whose is this? {EMAIL}"}, image])
    routed(post(gw, with_pii), "ollama", "privacy")
    assert len(recorded(cloud)) == 1
    assert_cloud_clean(cloud)


# ----------------------------------------------------- 6. headers, the log, metrics


def test_decision_headers_log_event_and_metrics(gw: GatewayProcess) -> None:
    def count(family: str, **labels: str) -> float:
        return metric(gw, family, **labels)

    watched = [
        ("gateway_routing_decisions_total", {"rule": "privacy", "provider": "ollama"}),
        ("gateway_routing_decisions_total", {"rule": "complex-to-cloud", "provider": "openai"}),
        ("gateway_routing_decisions_total", {"rule": "default", "provider": "ollama"}),
        ("gateway_privacy_findings_total", {"category": "pii"}),
        ("gateway_privacy_findings_total", {"category": "secret"}),
        ("gateway_complexity_score_count", {}),
    ]
    before = [count(family, **labels) for family, labels in watched]
    secret_mail = f"{THREE_QUESTIONS} Mail {EMAIL} with {OPENAI_KEY}."
    responses = [
        post(gw, user(secret_mail)),  # privacy, with a score
        post(gw, user(THREE_QUESTIONS)),  # complex-to-cloud
        post(gw, user("What time is it?", stream=True)),  # default
    ]
    expected = [("privacy", "pii,secret"), ("complex-to-cloud", "none"), ("default", "none")]
    for response, (rule, privacy) in zip(responses, expected, strict=True):
        assert response.status_code == 200
        assert response.headers["x-gateway-route-rule"] == rule
        assert response.headers["x-gateway-privacy"] == privacy
        assert re.fullmatch(r"[01]\.\d\d", response.headers["x-gateway-complexity"])
    after_wanted = [b + 1 for b in before[:5]] + [before[5] + 3]
    wait_until(lambda: [count(f, **labels) for f, labels in watched] == after_wanted,
               f"metrics to reach {after_wanted}")  # fmt: skip

    ids = [r.headers["x-request-id"] for r in responses]

    def events() -> list[dict[str, Any]]:
        found = [e for e in log_events(gw, "routing_decision") if e.get("request_id") in ids]
        return found if len(found) >= 3 else []

    found = wait_until(events, "three routing_decision events")
    assert sorted(e["request_id"] for e in found) == sorted(ids)  # one per request
    first = next(e for e in found if e["request_id"] == ids[0])
    assert first["rule"] == "privacy" and first["provider"] == "ollama"
    assert first["privacy"] == ["pii", "secret"]
    assert first["findings"] == {"email": 1, "openai_key": 1}
    assert first["keep_local"] is True and first["privacy_action"] == "route_local"
    assert first["complexity"] > 0.65 and set(first["factors"]) == set(FACTORS)
    log = gw.log()
    assert EMAIL not in log and OPENAI_KEY not in log


# --------------------------------------------------------------------------- 7. explain


def explain(
    gw: GatewayProcess, body: Any, auth: str | None = ADMIN_KEY, **params: str
) -> httpx.Response:
    return HTTP.post(gw.url + "/gateway/explain", content=json.dumps(body), params=params,
                     headers=bearer(auth) if auth else {})  # fmt: skip


def test_explain_reports_the_decision_and_calls_no_upstream(
    gws: dict[str, Any], cloud: FakeUpstream, local: FakeUpstream, workdir: Path
) -> None:
    gw = gws["main"]
    cloud_before, local_before = len(recorded(cloud)), len(recorded(local))
    complexity_before = metric(gw, "gateway_complexity_score_count")
    body = user(f"{THREE_QUESTIONS} Reply to {EMAIL}.")
    response = explain(gw, body, endpoint="chat")
    assert response.status_code == 200, response.text
    report = response.json()
    decision = report["decision"]
    assert decision["provider"] == "ollama" and decision["model"] == "llama3.2"
    assert decision["rule"] == "privacy" and decision["keep_local"] is True
    assert report["complexity"]["score"] > 0.65
    assert set(report["complexity"]["factors"]) == set(FACTORS)
    [finding] = report["privacy"]["findings"]
    start = body["messages"][0]["content"].index(EMAIL)
    assert finding == {"detector": "email", "category": "pii", "path": "messages[0].content",
                       "start": start, "end": start + len(EMAIL)}  # fmt: skip
    assert EMAIL not in response.text
    # As a key, and for other endpoints.
    clean = user("Say hello.", "cloud")
    assert explain(gw, clean).json()["decision"]["rule"] == "explicit"
    as_vault = explain(gw, clean, key="vault").json()
    assert as_vault["decision"]["rule"] == "privacy" and as_vault["privacy"]["level"] == "max"
    embed = explain(gw, {"model": "text-embedding-3-small", "input": EMAIL}, endpoint="embeddings")
    assert embed.json()["decision"]["provider"] == "ollama"
    assert embed.json()["privacy"]["findings"][0]["path"] == "input"
    # Who may ask.
    assert error_of(explain(gw, body, auth=CLIENT_KEY), 403, "admin_key_required")
    assert error_of(explain(gw, body, auth=None), 401, "invalid_api_key")
    assert len(recorded(cloud)) == cloud_before and len(recorded(local)) == local_before
    # Explaining is not serving: the request metrics did not move.
    assert metric(gw, "gateway_complexity_score_count") == complexity_before

    # The command line prints the same report.
    config = workdir / "routing-explain.yaml"
    config.write_text(textwrap.dedent(gws["configs"]["main"]))
    request = workdir / "routing-explain-request.json"
    request.write_text(json.dumps(body))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "explain", str(request), "--config", str(config)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == report
    assert len(recorded(cloud)) == cloud_before and len(recorded(local)) == local_before


def test_explain_reports_a_refusal(gws: dict[str, Any]) -> None:
    response = explain(gws["redact"], user(f"Use {OPENAI_KEY}"), auth=None)
    assert response.status_code == 401  # the redact gateway has no admin keys
    refused = explain(gws["main"], {"model": "auto", "messages": [{"role": "robot"}]})
    assert refused.status_code == 200
    report = refused.json()
    assert report["error"]["param"] == "messages[0].role"
    assert report["decision"]["refused"] is True and report["decision"]["status"] == 400


# ------------------------------------------------------------------ 8. request checks


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        pytest.param([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"},
                      {"role": "user", "content": 42}], "messages[2].content", id="number"),
        pytest.param([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"},
                      {"role": "user", "content": {"text": "hi"}}], "messages[2].content",
                     id="object"),
        pytest.param([{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}],
                     "messages[1].role", id="unknown-role"),
        pytest.param([{"role": "user", "content": [{"type": "text", "text": "a"},
                                                    {"type": "hologram"}]}],
                     "messages[0].content[1].type", id="unknown-part"),
        pytest.param([{"role": "user", "content": "Look it up."}, _call('{"q": "x"}'),
                      {"role": "tool", "tool_call_id": "call_1", "content": "found"},
                      {"role": "tool", "content": "found again"}],
                     "messages[3].tool_call_id", id="tool-without-id"),
    ],
)  # fmt: skip
def test_bad_messages_are_400_naming_the_path(
    gw: GatewayProcess, messages: list[Any], param: str
) -> None:
    response = post(gw, {"model": "auto", "messages": messages})
    error = error_of(response, 400, error_code_for(param))
    assert error["param"] == param
    assert param.removesuffix(".type") in error["message"]


def error_code_for(param: str) -> str:
    return "missing_required_parameter" if param.endswith("tool_call_id") else (
        "invalid_type" if param.endswith("content") else "invalid_value")  # fmt: skip


def test_odd_but_valid_shapes_are_served(gw: GatewayProcess, local: FakeUpstream) -> None:
    history = [{"role": "user", "content": "Look it up."}, _call('{"q": "x"}'),
               {"role": "tool", "tool_call_id": "call_1", "content": None},
               {"role": "user", "content": "thanks"}]  # fmt: skip
    routed(post(gw, {"model": "auto", "messages": history}), "ollama", "default")
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    routed(post(gw, user([image, {"type": "text", "text": "Describe it."}])), "openai",
           "capability")  # fmt: skip
    big = "The quick brown fox jumps over the lazy dog. " * 23_000  # ~1 MB
    assert len(big) > 1_000_000
    forget(local)
    response = post(gw, user(big, "local"))
    routed(response, "ollama", "explicit")
    assert len(recorded(local)[-1]["raw"]) > 1_000_000


# ---------------------------------------------------------------- 9. a real local model


@pytest.fixture(scope="module")
def llm_gateway(local_llm: str, cloud: FakeUpstream, workdir: Path) -> Iterator[GatewayProcess]:
    model = llm_server.MODEL_ID
    config = f"""
    auth: {{api_keys: ["{CLIENT_KEY}"]}}
    providers:
      openai:
        type: openai
        base_url: {cloud.base_url}
        api_key: {UPSTREAM_KEY}
        models: [gpt-4o-mini]
      ollama:
        type: ollama
        base_url: {local_llm}
        models: ["{model}"]
        timeouts: {{connect: 2, read: 120}}
    aliases: {{local: "ollama:{model}", cloud: "openai:gpt-4o-mini"}}
    routing: {{default_model: cloud}}
    """
    gateway = start_gateway(config, workdir)
    yield gateway
    gateway.process.stop()


def test_a_real_local_model_serves_what_is_kept_local(
    llm_gateway: GatewayProcess, cloud: FakeUpstream
) -> None:
    forget(cloud)
    for model in ("auto", "cloud", "openai:gpt-4o-mini"):
        body = user(f"Write a short note to {EMAIL}.", model, max_tokens=8)
        response = post(llm_gateway, body)
        assert response.status_code == 200, response.text
        assert response.headers["x-gateway-provider"] == "ollama"
        assert response.headers["x-gateway-model"] == llm_server.MODEL_ID
        assert response.headers["x-gateway-route-rule"] == "privacy"
        assert response.json()["choices"][0]["message"]["role"] == "assistant"
    assert recorded(cloud) == []
