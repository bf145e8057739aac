"""gateway/chain/privacy.py in the test process: the PrivacyStage built from a config as the
gateway builds it (`decision_stages`), run on request contexts.

The level (global, tier, key, request body, header: the strictest wins), which categories
act at each level, the strongest action, a block's message, the reason, the findings
metric, and the strings beside the prompt that the scan also reads. test_routing.py shows
the same decisions through a gateway; this file is fast enough for a mutation run.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from gateway.chain.auth import Principal
from gateway.chain.privacy import PrivacyStage, action_for, build_scanner, unread_texts
from gateway.config import parse_config
from gateway.context import RequestContext
from gateway.errors import InvalidRequest, PrivacyBlocked
from gateway.observability import Metrics
from gateway.privacy import texts_of

EMAIL = "maria.garcia@northwind-example.com"
OPENAI_KEY = "sk-" + "proj-Q7w3Xk9LmN2pR5tV8yB1cD4fG6hJ0kZa_x-Y"

PROVIDERS = """\
providers:
  local: {type: ollama, base_url: "http://127.0.0.1:9", models: [llama3.2]}
  cloud: {type: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk-x, models: [gpt-4o]}
routing: {default_model: "local:llama3.2"}
tiers:
  plain: {}
  careful: {privacy_level: high}
  vault: {privacy_level: max}
"""


class Stage:
    """A PrivacyStage as `decision_stages` builds it, with its metrics at hand."""

    def __init__(self, privacy: str = "") -> None:
        text = PROVIDERS + (textwrap.dedent(privacy) if privacy else "")
        self.config = parse_config(text, env={})
        self.metrics = Metrics()
        self.stage = PrivacyStage(self.config, build_scanner(self.config), self.metrics)

    async def run(self, body: dict[str, Any], endpoint: str = "chat", **fields: Any) -> Any:
        headers = fields.pop("headers", [])
        ctx = RequestContext("r", endpoint, "/chat/completions", headers, 0.0, body=body)
        for name, value in fields.items():
            setattr(ctx, name, value)
        await self.stage(ctx)
        return ctx

    def count(self, category: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "gateway_privacy_findings_total", {"category": category}
        )
        return value or 0.0


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


def key(tier: str = "plain", level: str = "") -> Principal:
    return Principal(name="alice", tier=tier, privacy_level=level)


# --------------------------------------------------------------------------- the decision


async def test_a_clean_request_is_allowed_and_its_texts_kept() -> None:
    s = Stage()
    ctx = await s.run(chat("Say hello."))
    assert ctx.privacy_level == "standard"
    assert ctx.findings == [] and ctx.privacy_categories == ()
    assert ctx.privacy_action == "allow" and ctx.privacy_reason == ""
    assert [(t.path, t.text) for t in ctx.privacy_texts] == [("messages[0].content", "Say hello.")]
    assert s.count("pii") == s.count("keyword") == 0


async def test_personal_data_stays_local_with_a_reason() -> None:
    s = Stage()
    ctx = await s.run(chat(f"Mail {EMAIL} and {EMAIL.upper()}"))
    assert [f.detector for f in ctx.findings] == ["email", "email"]
    assert ctx.privacy_categories == ("pii",)
    assert ctx.privacy_action == "route_local"
    assert ctx.privacy_reason == "pii found at privacy level standard"
    assert s.count("pii") == 1  # requests with the category, not findings


async def test_categories_are_sorted_and_each_counted() -> None:
    s = Stage()
    ctx = await s.run(chat(f"Use {OPENAI_KEY} and mail {EMAIL}, it is confidential"))
    assert ctx.privacy_categories == ("keyword", "pii", "secret")
    assert (s.count("keyword"), s.count("pii"), s.count("secret")) == (1, 1, 1)
    # keywords do not act at standard: the reason names the acting categories only
    assert ctx.privacy_reason == "pii, secret found at privacy level standard"


async def test_keywords_are_found_at_standard_and_act_from_high() -> None:
    s = Stage()
    text = "What is a good password policy?"
    standard = await s.run(chat(text))
    assert standard.privacy_categories == ("keyword",)
    assert standard.privacy_action == "allow" and standard.privacy_reason == ""
    high = await s.run(chat(text), headers=[(b"x-gateway-privacy-level", b"high")])
    assert high.privacy_level == "high" and high.privacy_action == "route_local"
    assert high.privacy_reason == "keyword found at privacy level high"
    assert s.count("keyword") == 2


async def test_level_max_keeps_a_clean_request_local() -> None:
    s = Stage("privacy: {level: max}\n")
    ctx = await s.run(chat("Say hello."))
    assert ctx.privacy_level == "max" and ctx.findings == []
    assert ctx.privacy_action == "route_local"
    assert ctx.privacy_reason == "privacy level max keeps every request local"
    assert ctx.privacy_categories == ()


async def test_level_max_keeps_allowed_findings_local_too() -> None:
    s = Stage("privacy: {level: max, actions: {pii: allow, keyword: allow}}\n")
    ctx = await s.run(chat(f"Mail {EMAIL}, my password"))
    assert ctx.privacy_categories == ("keyword", "pii")
    assert ctx.privacy_action == "route_local"
    assert ctx.privacy_reason == "privacy level max keeps every request local"


# ----------------------------------------------------------------------------- the level


@pytest.mark.parametrize(
    ("fields", "level"),
    [
        ({}, "standard"),
        ({"key": key()}, "standard"),  # a tier without a level
        ({"key": key("careful")}, "high"),  # the key's tier
        ({"key": key("vault")}, "max"),
        ({"key": key("plain", "high")}, "high"),  # the key's own
        ({"key": key("careful", "standard")}, "high"),  # the key cannot lower its tier
        ({"key": key("vault", "high")}, "max"),
        ({"key": key("nosuchtier")}, "standard"),
        ({"routing_preferences": {"privacy_level": "high"}}, "high"),
        ({"routing_preferences": {"privacy_level": None}}, "standard"),
        ({"routing_preferences": {}}, "standard"),
        ({"headers": [(b"x-gateway-privacy-level", b"max")]}, "max"),
        ({"headers": [(b"x-gateway-privacy-level", b" MAX ")]}, "max"),
        ({"headers": [(b"x-gateway-privacy-level", b"High")]}, "high"),
        # a request may raise its level, never lower it below its key's
        ({"key": key("careful"), "headers": [(b"x-gateway-privacy-level", b"standard")]}, "high"),
        ({"key": key("vault"), "routing_preferences": {"privacy_level": "standard"}}, "max"),
        ({"key": key(level="max"), "headers": [(b"x-gateway-privacy-level", b"high")]}, "max"),
        (
            {
                "routing_preferences": {"privacy_level": "max"},
                "headers": [(b"x-gateway-privacy-level", b"high")],
            },
            "max",
        ),
        (
            {
                "routing_preferences": {"privacy_level": "high"},
                "headers": [(b"x-gateway-privacy-level", b"max")],
            },
            "max",
        ),
    ],
)
async def test_the_strictest_level_applies(fields: dict[str, Any], level: str) -> None:
    s = Stage()
    assert (await s.run(chat("Say hello."), **fields)).privacy_level == level


async def test_the_global_level_is_a_floor() -> None:
    s = Stage("privacy: {level: high}\n")
    assert (await s.run(chat("hi"))).privacy_level == "high"
    lower = {"headers": [(b"x-gateway-privacy-level", b"standard")]}
    assert (await s.run(chat("hi"), key=key(level="standard"), **lower)).privacy_level == "high"
    assert (await s.run(chat("hi"), key=key("vault"))).privacy_level == "max"


@pytest.mark.parametrize("value", [b"paranoid", b"", b"  ", b"maximum-" * 10])
async def test_an_unknown_header_level_is_400_naming_the_levels(value: bytes) -> None:
    s = Stage()
    with pytest.raises(InvalidRequest) as raised:
        await s.run(chat("hi"), headers=[(b"x-gateway-privacy-level", value)])
    error = raised.value
    assert (error.status, error.code) == (400, "invalid_value")
    assert error.param == "x-gateway-privacy-level"
    asked = value.decode().strip().lower()
    assert error.message == (
        f"Invalid x-gateway-privacy-level {asked[:32]!r}: use one of standard, high, max."
    )


async def test_other_headers_are_not_read_as_the_level() -> None:
    s = Stage()
    headers = [(b"x-gateway-privacy", b"max"), (b"x-gateway-privacy-level-x", b"max")]
    assert (await s.run(chat("hi"), headers=headers)).privacy_level == "standard"


# --------------------------------------------------------------------------- the actions


@pytest.mark.parametrize(
    ("actions", "action"),
    [
        ("{}", "route_local"),  # the shipped actions
        ("{pii: redact, secret: redact}", "redact"),
        ("{pii: redact, secret: route_local}", "route_local"),
        ("{pii: route_local, secret: redact}", "route_local"),
        ("{pii: allow, secret: redact}", "redact"),
        ("{pii: redact, secret: allow}", "redact"),
        ("{pii: allow, secret: allow}", "allow"),
        ("{pii: allow, default: redact}", "redact"),  # secret: by `default`
        ("{pii: allow}", "route_local"),  # secret: unlisted and no default
    ],
)
async def test_the_strongest_action_of_the_acting_categories_wins(
    actions: str, action: str
) -> None:
    s = Stage(f"privacy: {{actions: {actions}}}\n")
    ctx = await s.run(chat(f"Use {OPENAI_KEY} and mail {EMAIL}"))
    assert ctx.privacy_categories == ("pii", "secret")
    assert ctx.privacy_action == action
    assert ctx.privacy_reason == ("" if action == "allow" else
                                  "pii, secret found at privacy level standard")  # fmt: skip


@pytest.mark.parametrize("other", ["allow", "redact", "route_local"])
async def test_block_wins_and_names_only_the_blocked_categories(other: str) -> None:
    s = Stage(f"privacy: {{actions: {{pii: {other}, secret: block}}}}\n")
    with pytest.raises(PrivacyBlocked) as raised:
        await s.run(chat(f"Use {OPENAI_KEY} and mail {EMAIL}"))
    error = raised.value
    assert (error.status, error.code) == (400, "privacy_blocked")
    assert error.message == (
        "Request blocked by the gateway's privacy policy: it contains secret data "
        "(privacy level standard). Remove it and retry."
    )
    assert OPENAI_KEY not in error.message and EMAIL not in error.message


async def test_a_block_names_every_blocked_category_and_the_level() -> None:
    s = Stage("privacy: {actions: {pii: block, secret: block, keyword: block}}\n")
    with pytest.raises(PrivacyBlocked) as raised:
        await s.run(chat(f"Use {OPENAI_KEY} and mail {EMAIL}, it is private"),
                    headers=[(b"x-gateway-privacy-level", b"high")])  # fmt: skip
    assert "contains keyword, pii, secret data (privacy level high)" in raised.value.message


async def test_a_keyword_block_waits_for_level_high() -> None:
    s = Stage("privacy: {actions: {keyword: block}}\n")
    ctx = await s.run(chat("What is a good password policy?"))
    assert ctx.privacy_categories == ("keyword",) and ctx.privacy_action == "allow"
    with pytest.raises(PrivacyBlocked):
        await s.run(chat("What is a good password policy?"), key=key("careful"))


async def test_a_block_at_level_max_is_still_a_block() -> None:
    s = Stage("privacy: {level: max, actions: {pii: block}}\n")
    with pytest.raises(PrivacyBlocked):
        await s.run(chat(f"Mail {EMAIL}"))


async def test_custom_categories_act_at_standard_and_count_as_custom() -> None:
    s = Stage(
        """\
        privacy:
          detectors: [{name: employee_id, regex: "EMP-[0-9]{6}", category: hr}]
          actions: {default: redact}
        """
    )
    ctx = await s.run(chat("Badge EMP-123456 please"))
    assert [(f.detector, f.category, f.value) for f in ctx.findings] == [
        ("employee_id", "hr", "EMP-123456")
    ]
    assert ctx.privacy_categories == ("hr",)
    assert ctx.privacy_action == "redact"
    assert ctx.privacy_reason == "hr found at privacy level standard"
    assert s.count("custom") == 1 and s.count("hr") == 0


def test_action_for_a_category() -> None:
    actions = {"pii": "redact", "default": "block"}
    assert action_for(actions, "pii") == "redact"
    assert action_for(actions, "secret") == "block"
    assert action_for({"pii": "allow"}, "secret") == "route_local"
    assert action_for({}, "hr") == "route_local"
    assert action_for({"default": "allow"}, "pii") == "allow"


# ---------------------------------------------------------------------------- the scanner


async def test_configured_keywords_replace_the_built_in_list() -> None:
    s = Stage("privacy: {keywords: [project falcon]}\n")
    ctx = await s.run(chat("Project  Falcon needs a password"))
    assert [(f.category, f.value) for f in ctx.findings] == [("keyword", "Project  Falcon")]
    default = await Stage().run(chat("Project Falcon needs a password"))
    assert [f.value for f in default.findings] == ["password"]


def test_build_scanner_names_every_detector() -> None:
    config = parse_config(
        PROVIDERS + 'privacy: {detectors: [{name: ticket, regex: "T-[0-9]+"}]}\n', env={}
    )
    scanner = build_scanner(config)
    assert scanner.detectors[-1] == ("ticket", "pii")  # a detector's category defaults to pii
    assert ("email", "pii") in scanner.detectors and ("keyword", "keyword") in scanner.detectors


# ----------------------------------------------------- the strings beside the prompt


async def test_strings_beside_the_prompt_are_scanned_and_kept_for_redaction() -> None:
    s = Stage()
    body = chat(
        "hi",
        user=EMAIL,
        metadata={"owner": EMAIL},
        stop=["END", EMAIL],
        prediction={"type": "content", "content": EMAIL},
        response_format={"type": "json_schema", "json_schema": {"name": "r", "description": EMAIL}},
    )
    ctx = await s.run(body)
    assert [f.path for f in ctx.findings] == [
        "user", "metadata.owner", "stop[1]", "prediction.content",
        "response_format.json_schema.description",
    ]  # fmt: skip
    assert ctx.privacy_action == "route_local"
    assert {t.path for t in ctx.privacy_texts} >= {f.path for f in ctx.findings}


def test_unread_texts_of_a_chat_body() -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "user": "u1",
        "metadata": {"a": "m1", "b": ["m2", 3, None, ""]},
        "stop": "s1",
        "prediction": {"type": "content", "content": [{"type": "text", "text": "p1"}]},
        "response_format": {"type": "json_schema", "json_schema": {"schema": {"enum": ["r1"]}}},
        "tools": [
            {"type": "function", "function": {"name": "f", "description": "read already",
             "parameters": {"type": "object", "properties": {"x": {"enum": ["t1"],
                                                                    "description": "read too"}}}}}
        ],
        "functions": [{"name": "g", "parameters": {"default": "f1"}}],
    }  # fmt: skip
    read = texts_of("chat", body)
    got = {(t.path, t.text) for t in unread_texts("chat", body, read)}
    assert got == {
        ("user", "u1"), ("metadata.a", "m1"), ("metadata.b[0]", "m2"), ("stop", "s1"),
        ("prediction.content[0].type", "text"), ("prediction.content[0].text", "p1"),
        ("prediction.type", "content"),
        ("response_format.json_schema.schema.enum[0]", "r1"),
        ("tools[0].type", "function"), ("tools[0].function.name", "f"),
        ("tools[0].function.parameters.type", "object"),
        ("tools[0].function.parameters.properties.x.enum[0]", "t1"),
        ("functions[0].name", "g"), ("functions[0].parameters.default", "f1"),
    }  # fmt: skip
    # the descriptions were read by texts_of: not twice
    assert {t.path for t in read} == {
        "messages[0].content", "tools[0].function.description",
        "tools[0].function.parameters.properties.x.description",
    }  # fmt: skip


@pytest.mark.parametrize("key", ["tools", "functions"])
def test_unread_texts_of_tools_or_functions_alone(key: str) -> None:
    tool = {"name": "f", "parameters": {"properties": {"x": {"enum": ["e1"]}}}}
    body = {
        "messages": [],
        key: [{"type": "function", "function": tool} if key == "tools" else tool],
    }
    got = {t.text for t in unread_texts("chat", body, texts_of("chat", body))}
    assert {"f", "e1"} <= got


def test_unread_texts_skip_what_is_absent_or_not_a_schema() -> None:
    body = {"user": None, "response_format": {"type": "json_object"}, "stop": None}
    assert unread_texts("chat", body, []) == []
    assert unread_texts("chat", {"response_format": "json_schema"}, []) == []
    assert unread_texts("completions", {"tools": [{"name": "t"}]}, []) == []


def test_unread_texts_of_embeddings_are_user_and_metadata_only() -> None:
    body = {"input": "x", "user": "u1", "metadata": {"k": "m1"}, "stop": ["s1"],
            "prediction": {"content": "p1"}, "response_format": {"json_schema": {"d": "r1"}}}  # fmt: skip
    got = [(t.path, t.text) for t in unread_texts("embeddings", body, [])]
    assert got == [("user", "u1"), ("metadata.k", "m1")]
    completions = {t.path for t in unread_texts("completions", body, [])}
    assert completions == {"user", "metadata.k", "stop[0]", "prediction.content",
                           "response_format.json_schema.d"}  # fmt: skip


def test_unread_texts_of_a_responses_body() -> None:
    body = {
        "input": [
            {"role": "user", "content": "read"},  # a message by its role: read by texts_of
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "r"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "o"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thought"}]},
            {"call_id": "c2", "status": "done"},  # no type, no role: not read by texts_of
            "a plain string",
        ],
        "tools": [{"type": "function", "name": "lookup", "description": "desc"}],
        "text": {"format": {"type": "json_schema", "schema": {"enum": ["e1"]}}},
        "prompt": {"id": "pmpt_1", "variables": {"city": "Paris"}},
        "user": "u1",
    }
    read = texts_of("responses", body)
    got = {(t.path, t.text) for t in unread_texts("responses", body, read)}
    assert got == {
        ("user", "u1"),
        ("tools[0].type", "function"), ("tools[0].name", "lookup"),
        ("text.format.type", "json_schema"), ("text.format.schema.enum[0]", "e1"),
        ("prompt.id", "pmpt_1"), ("prompt.variables.city", "Paris"),
        ("input[4].type", "reasoning"), ("input[4].summary[0].type", "summary_text"),
        ("input[4].summary[0].text", "thought"),
        ("input[5].call_id", "c2"), ("input[5].status", "done"),
    }  # fmt: skip


async def test_a_responses_request_is_scanned_beyond_its_messages() -> None:
    s = Stage()
    body = {"model": "auto", "input": [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": f"mail {EMAIL}"}]},
        {"role": "user", "content": "hi"},
    ]}  # fmt: skip
    ctx = await s.run(body, endpoint="responses")
    assert [f.path for f in ctx.findings] == ["input[0].summary[0].text"]
    assert ctx.privacy_action == "route_local"


def test_unread_texts_of_a_responses_body_without_items() -> None:
    body = {"input": None, "user": "u1", "tools": [{"type": "web_search"}]}
    got = [(t.path, t.text) for t in unread_texts("responses", body, [])]
    assert sorted(got) == [("tools[0].type", "web_search"), ("user", "u1")]
    assert unread_texts("responses", {"input": "just text"}, []) == []


def test_unread_texts_walk_any_depth() -> None:
    node: Any = "deep"
    for _ in range(2000):
        node = [node]
    got = unread_texts("chat", {"metadata": {"k": node}}, [])
    assert [t.text for t in got] == ["deep"] and got[0].at[:2] == ("metadata", "k")
    assert len(got[0].at) == 2002
