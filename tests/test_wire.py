"""gateway/wire.py on its own: the checks, the SSE framing and the error bodies a client ends
up seeing, exactly (messages included: they are worded as OpenAI words them).

These run in the test process, in milliseconds, so a mutation run (docs/TESTING.md) can try
every mutant of wire.py against them; the end-to-end tests (test_bad_input, test_streaming,
test_forwarding) show the same through a gateway.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.wire import (
    EventBuffer,
    StreamTap,
    UsageStripper,
    check_request,
    event_json,
    invalid_type,
    needs_of,
    parse_body,
    pop_routing_preferences,
    rewrite_events,
    sse_error_event,
    upstream_error_body,
    usage_from_json,
)

USER = {"role": "user", "content": "hi"}


def refused(call: Any, *args: Any) -> dict[str, Any]:
    """The error `call(*args)` answers with: a 400 invalid_request_error envelope."""
    with pytest.raises(InvalidRequest) as info:
        call(*args)
    assert info.value.status == 400
    error: dict[str, Any] = info.value.to_dict()["error"]
    assert error["type"] == "invalid_request_error"
    return error


def chat_refused(*messages: Any, **fields: Any) -> dict[str, Any]:
    return refused(check_request, "chat", {"model": "m", "messages": list(messages), **fields})


def said(error: dict[str, Any]) -> tuple[str, str | None, str]:
    return error["code"], error["param"], error["message"]


# --------------------------------------------------------------------------- the body


def test_parse_body_takes_a_json_object_only() -> None:
    assert parse_body(b'{"model": "m", "n": 1}') == {"model": "m", "n": 1}
    assert said(refused(parse_body, b"")) == (
        "invalid_json", None, "Request body is empty; send a JSON object."
    )  # fmt: skip
    assert said(refused(parse_body, b'{"a": "\xff"}')) == (
        "invalid_encoding", None, "Request body is not valid UTF-8."
    )  # fmt: skip
    error = refused(parse_body, b'{"a": ')
    assert error["code"] == "invalid_json"
    assert error["message"].startswith("Request body is not valid JSON: ")
    assert len(error["message"]) > len("Request body is not valid JSON: ")  # says where
    for raw in (b"[1]", b"null", b'"text"', b"3"):
        assert said(refused(parse_body, raw)) == (
            "invalid_json", None, "Request body must be a JSON object."
        )  # fmt: skip


@pytest.mark.parametrize(
    ("value", "kind"),
    [(5, "an integer"), (1.5, "a number"), (True, "a boolean"), ([], "an array"),
     ({}, "an object"), ("s", "a string")],
)  # fmt: skip
def test_the_type_named_in_a_message_is_the_json_one(value: Any, kind: str) -> None:
    if kind == "a boolean":  # a boolean stream is fine: ask the model field instead
        error = refused(check_request, "chat", {"model": value, "messages": [USER]})
        assert error["message"] == f"Invalid type for 'model': expected a string, got {kind}."
        return
    error = refused(check_request, "chat", {"model": "m", "messages": [USER], "stream": value})
    assert said(error) == (
        "invalid_type", "stream", f"Invalid type for 'stream': expected a boolean, got {kind}."
    )  # fmt: skip


def test_model_is_required_and_a_non_empty_string() -> None:
    for body in ({"messages": [USER]}, {"model": None, "messages": [USER]}):
        assert said(refused(check_request, "chat", body)) == (
            "missing_required_parameter", "model", "Missing required parameter: 'model'."
        )  # fmt: skip
    assert said(refused(check_request, "chat", {"model": 7, "messages": [USER]})) == (
        "invalid_type", "model", "Invalid type for 'model': expected a string, got an integer."
    )  # fmt: skip
    assert said(refused(check_request, "chat", {"model": "", "messages": [USER]})) == (
        "invalid_value", "model", "'model' must not be empty."
    )  # fmt: skip
    for endpoint in ("responses", "anything"):  # the fields a gateway reads, no more
        check_request(endpoint, {"model": "m"})


@pytest.mark.parametrize("stream", [None, True, False])
def test_stream_may_be_absent_null_or_a_boolean(stream: bool | None) -> None:
    check_request("chat", {"model": "m", "messages": [USER], "stream": stream})


def test_chat_needs_a_non_empty_messages_array() -> None:
    assert said(refused(check_request, "chat", {"model": "m"})) == (
        "missing_required_parameter", "messages", "Missing required parameter: 'messages'."
    )  # fmt: skip
    assert said(refused(check_request, "chat", {"model": "m", "messages": {}})) == (
        "invalid_type",
        "messages",
        "Invalid type for 'messages': expected an array of message objects, got an object.",
    )
    assert said(refused(check_request, "chat", {"model": "m", "messages": []})) == (
        "invalid_value", "messages", "'messages' must contain at least one message."
    )  # fmt: skip


@pytest.mark.parametrize(
    ("endpoint", "field"), [("completions", "prompt"), ("embeddings", "input")]
)
def test_prompt_and_input_are_strings_or_token_ids(endpoint: str, field: str) -> None:
    for good in ("text", ["a", "b"], [1, 2], [[1, 2], [3]], [], [[]]):
        check_request(endpoint, {"model": "m", field: good})
    assert said(refused(check_request, endpoint, {"model": "m"})) == (
        "missing_required_parameter", field, f"Missing required parameter: '{field}'."
    )  # fmt: skip
    assert said(refused(check_request, endpoint, {"model": "m", field: 5})) == (
        "invalid_type",
        field,
        f"Invalid type for '{field}': expected a string or an array, got an integer.",
    )
    for bad, at, kind in (
        (["a", {"text": "x"}], 1, "an object"),
        ([[1], 2, {"text": "x"}], 2, "an object"),  # every item is looked at
        ([True], 0, "a boolean"),  # a boolean is not a token id
        ([[1, "a"]], 0, "an array"),
        ([[1, True]], 0, "an array"),
        ([1.5], 0, "a number"),
        ([None], 0, "null"),
    ):
        assert said(refused(check_request, endpoint, {"model": "m", field: bad})) == (
            "invalid_type",
            f"{field}[{at}]",
            f"Invalid type for '{field}[{at}]': expected a string or an array of token ids, "
            f"got {kind}.",
        ), bad


def test_invalid_type_words_a_missing_field_as_missing() -> None:
    assert said(invalid_type("a.b", "a string", None).to_dict()["error"]) == (
        "missing_required_parameter", "a.b", "Missing required parameter: 'a.b'."
    )  # fmt: skip
    assert said(invalid_type("a.b", "a string", [1]).to_dict()["error"]) == (
        "invalid_type", "a.b", "Invalid type for 'a.b': expected a string, got an array."
    )  # fmt: skip


# ------------------------------------------------------------------------ the messages


def test_a_message_must_be_an_object_with_a_known_role() -> None:
    assert said(chat_refused(USER, "hi")) == (
        "invalid_type",
        "messages[1]",
        "Invalid type for 'messages[1]': expected an object, got a string.",
    )
    assert said(chat_refused({"content": "x"})) == (
        "missing_required_parameter",
        "messages[0].role",
        "Missing required parameter: 'messages[0].role'.",
    )
    assert said(chat_refused({"role": 3, "content": "x"})) == (
        "invalid_type",
        "messages[0].role",
        "Invalid type for 'messages[0].role': expected a string, got an integer.",
    )
    assert said(chat_refused({"role": "robot", "content": "x"})) == (
        "invalid_value",
        "messages[0].role",
        "Invalid value for 'messages[0].role': 'robot'. Supported values are: 'system', "
        "'developer', 'user', 'assistant', 'tool', 'function'.",
    )
    long = chat_refused({"role": "r" * 100, "content": "x"})["message"]
    assert f"'{'r' * 64}'." in long and "r" * 65 not in long  # a long role is cut short


@pytest.mark.parametrize("role", ["system", "developer", "user", "assistant", "function"])
def test_every_openai_role_is_accepted(role: str) -> None:
    check_request("chat", {"model": "m", "messages": [{"role": role, "content": "x"}]})


def test_a_tool_message_names_the_call_it_answers() -> None:
    check_request(
        "chat", {"model": "m", "messages": [{"role": "tool", "content": "4", "tool_call_id": "c"}]}
    )
    for message in ({"role": "tool", "content": "4"}, {"role": "tool", "tool_call_id": 5}):
        assert said(chat_refused(message)) == (
            "missing_required_parameter",
            "messages[0].tool_call_id",
            "Missing required parameter: 'messages[0].tool_call_id' (a tool message answers "
            "one tool call).",
        )


def test_content_is_a_string_null_or_typed_parts() -> None:
    parts = [
        {"type": "text", "text": "a"},
        {"type": "image_url", "image_url": {"url": "data:,"}},
        {"type": "input_audio", "input_audio": {}},
        {"type": "file", "file": {}},
        {"type": "refusal", "refusal": "no"},
    ]
    for content in ("x", None, parts, []):
        check_request("chat", {"model": "m", "messages": [{"role": "user", "content": content}]})
    assert said(chat_refused({"role": "user", "content": 5})) == (
        "invalid_type",
        "messages[0].content",
        "Invalid type for 'messages[0].content': expected a string, null or an array of "
        "content parts, got an integer.",
    )
    kinds = "'text', 'image_url', 'input_audio', 'file', 'refusal'"
    assert said(
        chat_refused({"role": "user", "content": [{"type": "text", "text": "a"}, "b"]})
    ) == (
        "invalid_type",
        "messages[0].content[1]",
        "Invalid content part at 'messages[0].content[1]': expected an object whose 'type' is "
        f"one of {kinds}.",
    )
    for part in ({"type": "video"}, {"text": "a"}):
        assert said(chat_refused({"role": "user", "content": [part]})) == (
            "invalid_value",
            "messages[0].content[0].type",
            "Invalid content part at 'messages[0].content[0]': expected an object whose 'type' "
            f"is one of {kinds}.",
        )
    for kind in ("text", "refusal"):
        assert said(chat_refused({"role": "user", "content": [{"type": kind, kind: 1}]})) == (
            "invalid_type",
            f"messages[0].content[0].{kind}",
            f"Invalid type for 'messages[0].content[0].{kind}': expected a string, got an integer.",
        )
        assert chat_refused({"role": "user", "content": [{"type": kind}]})["code"] == (
            "missing_required_parameter"
        )


def test_the_other_scanned_fields_must_be_strings() -> None:
    """name, refusal, tool call arguments: the privacy scan reads them as strings."""
    base = {"role": "assistant", "content": "x"}
    for key in ("name", "refusal"):
        assert said(chat_refused(base | {key: 5})) == (
            "invalid_type",
            f"messages[0].{key}",
            f"Invalid type for 'messages[0].{key}': expected a string, got an integer.",
        )
        assert said(chat_refused({"role": "assistant", key: 5}))[1] == f"messages[0].{key}"
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    check_request("chat", {"model": "m", "messages": [base | {"tool_calls": [call], "name": "n"}]})
    cases = [
        ({"tool_calls": "x"}, "messages[0].tool_calls", "an array of tool calls", "a string"),
        ({"tool_calls": [5]}, "messages[0].tool_calls[0]", "an object", "an integer"),
        ({"tool_calls": [call, {"function": 5}]}, "messages[0].tool_calls[1].function",
         "an object", "an integer"),
        ({"tool_calls": [{"function": {"arguments": {}}}]},
         "messages[0].tool_calls[0].function.arguments",
         "a string (JSON-encoded arguments)", "an object"),
        ({"function_call": "f"}, "messages[0].function_call", "an object", "a string"),
        ({"function_call": {"name": "f", "arguments": 1}},
         "messages[0].function_call.arguments", "a string (JSON-encoded arguments)",
         "an integer"),
    ]  # fmt: skip
    for fields, param, expected, got in cases:
        assert said(chat_refused(base | fields)) == (
            "invalid_type", param, f"Invalid type for '{param}': expected {expected}, got {got}."
        ), fields  # fmt: skip
    missing = chat_refused(base | {"tool_calls": [{"function": {"name": "f"}}]})
    assert said(missing) == (
        "missing_required_parameter",
        "messages[0].tool_calls[0].function.arguments",
        "Missing required parameter: 'messages[0].tool_calls[0].function.arguments'.",
    )
    check_request(
        "chat", {"model": "m", "messages": [base | {"function_call": {"arguments": "{}"}}]}
    )


def test_tool_descriptions_must_be_strings() -> None:
    tool = {"type": "function", "function": {"name": "f", "description": "d"}}
    bad = {"type": "function", "function": {"name": "g", "description": 5}}
    check_request("chat", {"model": "m", "messages": [USER], "tools": [tool, "x", {"type": "f"}]})
    assert chat_refused(USER, tools=["x", bad])["param"] == "tools[1].function.description"
    check_request("chat", {"model": "m", "messages": [USER], "tools": "not a list"})
    check_request("chat", {"model": "m", "messages": [USER], "tools": [{"function": "f"}]})
    check_request(
        "chat",
        {"model": "m", "messages": [USER], "tools": [{"function": {"description": None}}]},
    )
    assert said(chat_refused(USER, tools=[tool, bad])) == (
        "invalid_type",
        "tools[1].function.description",
        "Invalid type for 'tools[1].function.description': expected a string, got an integer.",
    )
    assert said(chat_refused(USER, tools="x", functions=[{"name": "f", "description": []}])) == (
        "invalid_type",
        "functions[0].description",
        "Invalid type for 'functions[0].description': expected a string, got an array.",
    )


# ----------------------------------------------------------------------------- needs


def test_needs_of_chat() -> None:
    def needs(**body: Any) -> frozenset[str]:
        return needs_of("chat", {"messages": [USER], **body})

    assert needs() == frozenset()
    assert needs(tools=[{"type": "function"}]) == {"tools"}
    assert needs(tools=[]) == frozenset()
    assert needs(response_format={"type": "json_schema"}) == {"json_schema"}
    assert needs(response_format={"type": "json_object"}) == frozenset()
    assert needs(response_format="json_schema") == frozenset()
    image = {"type": "image_url", "image_url": {"url": "data:,"}}
    text = {"type": "text", "text": "a"}
    seeing = {"role": "user", "content": [text, image, image]}
    assert needs_of("chat", {"messages": [USER, seeing]}) == {"vision"}
    assert needs_of("chat", {"messages": [{"role": "user", "content": [text]}]}) == frozenset()
    assert needs_of("chat", {"messages": [seeing], "tools": [1]}) == {"vision", "tools"}
    # Completions and embeddings have no messages to look at.
    assert needs_of("completions", {"prompt": "x", "tools": [1]}) == {"tools"}


def test_needs_of_responses() -> None:
    image = {"type": "input_image", "image_url": "data:,"}
    assert needs_of("responses", {"input": "x"}) == frozenset()
    both = {"tools": [{"type": "function"}], "text": {"format": {"type": "json_schema"}}}
    assert needs_of("responses", both) == {"tools", "json_schema"}
    assert needs_of("responses", {"text": {"format": {"type": "json_schema"}}}) == {"json_schema"}
    assert needs_of("responses", {"text": {"format": {"type": "text"}}}) == frozenset()
    assert needs_of("responses", {"text": {"format": "json_schema"}}) == frozenset()
    assert needs_of("responses", {"text": "json_schema"}) == frozenset()
    items = ["x", {"content": "x"}, {"content": [{"type": "input_text"}, "y"]}]
    assert needs_of("responses", {"input": items}) == frozenset()
    assert needs_of(
        "responses", {"input": [*items, {"content": [image]}, {"content": [image]}]}
    ) == {"vision"}


# --------------------------------------------------------------- routing_preferences


def test_routing_preferences_are_taken_out_and_checked() -> None:
    body: dict[str, Any] = {"model": "m"}
    assert pop_routing_preferences(body, ["openai"]) is None and body == {"model": "m"}
    prefs = {"force_provider": "openai", "privacy_level": "high", "latency_preference": None}
    body = {"model": "m", "routing_preferences": prefs}
    assert pop_routing_preferences(body, ["openai", "mock"]) == prefs
    assert body == {"model": "m"}  # never sent upstream
    for level in ("standard", "high", "max"):
        pop_routing_preferences({"routing_preferences": {"privacy_level": level}}, [])
    for latency in ("speed", "balanced", "quality"):
        pop_routing_preferences({"routing_preferences": {"latency_preference": latency}}, [])
    assert said(refused(pop_routing_preferences, {"routing_preferences": 5}, [])) == (
        "invalid_type",
        "routing_preferences",
        "Invalid type for 'routing_preferences': expected an object.",
    )
    assert said(refused(pop_routing_preferences, {"routing_preferences": {"x": 1}}, [])) == (
        "invalid_value",
        "routing_preferences.x",
        "Unknown field 'routing_preferences.x'; allowed: force_provider, privacy_level, "
        "latency_preference.",
    )
    bad = {"routing_preferences": {"privacy_level": "extreme"}}
    assert said(refused(pop_routing_preferences, bad, [])) == (
        "invalid_value",
        "routing_preferences.privacy_level",
        "Invalid value for 'routing_preferences.privacy_level': 'extreme'; expected one of "
        "'standard', 'high', 'max' or null.",
    )
    bad = {"routing_preferences": {"force_provider": "azure"}}
    assert said(refused(pop_routing_preferences, bad, ["openai", "mock"])) == (
        "invalid_value",
        "routing_preferences.force_provider",
        "Invalid value for 'routing_preferences.force_provider': 'azure'; expected one of "
        "'openai', 'mock' or null.",
    )
    bad = {"routing_preferences": {"latency_preference": None, "privacy_level": "extreme"}}
    assert refused(pop_routing_preferences, bad, [])["param"] == "routing_preferences.privacy_level"
    bad = {"routing_preferences": {"latency_preference": "fast"}}
    assert refused(pop_routing_preferences, bad, [])["param"] == (
        "routing_preferences.latency_preference"
    )


# -------------------------------------------------------------------------- SSE, usage


def test_sse_error_event_is_one_data_event() -> None:
    error = {"error": {"message": "m", "type": "server_error", "param": None, "code": "c"}}
    assert sse_error_event(error) == b"data: " + orjson.dumps(error) + b"\n\n"


def test_usage_from_json() -> None:
    assert usage_from_json(b'{"usage": {"total_tokens": 3}}') == {"total_tokens": 3}
    for raw in (b'{"usage": null}', b'{"usage": 3}', b"{}", b"[1]", b"not json", b""):
        assert usage_from_json(raw) is None, raw


def sse(*payloads: bytes) -> list[bytes]:
    return [b"data: " + p + b"\n\n" for p in payloads]


def tap_of(*chunks: bytes) -> StreamTap:
    tap = StreamTap()
    for chunk in chunks:
        tap.feed(chunk)
    return tap


def test_stream_tap_sees_done_usage_and_garbage() -> None:
    usage = b'{"choices":[],"usage":{"total_tokens":7}}'
    tap = tap_of(*sse(b'{"choices":[{"delta":{}}]}', usage, b"[DONE]"))
    assert (tap.ended_cleanly, tap.usage, tap.garbage, tap.ends_mid_event) == (
        True, {"total_tokens": 7}, False, False
    )  # fmt: skip
    assert not tap_of(*sse(b"{}")).ended_cleanly
    assert not tap_of().ended_cleanly and not tap_of().ends_mid_event
    assert tap_of(*sse(b"[DONE]"), b"\n").ended_cleanly  # trailing blank lines are fine
    # usage null or empty is not a usage; the last real one is kept
    tap = tap_of(*sse(b'{"usage":{"a":1}}', b'{"usage":null}', b'{"usage":{}}', b'{"x":1}'))
    assert tap.usage == {"a": 1}
    assert tap_of(*sse(b"[1]")).usage is None  # JSON, not an object: not garbage either
    assert not tap_of(*sse(b"[1]")).garbage
    assert tap_of(*sse(b"{}", b"{not json}", b"{}")).garbage


def test_stream_tap_reads_events_however_they_are_cut() -> None:
    whole = b"".join(sse(b'{"a":1}', b'{"usage":{"t":2}}', b"[DONE]"))
    for size in (1, 2, 5, 7, 64):
        chunks = [whole[i : i + size] for i in range(0, len(whole), size)]
        tap = tap_of(*chunks)
        assert (tap.usage, tap.ended_cleanly, tap.garbage) == ({"t": 2}, True, False), size
    # CRLF, "data:" without the space, comments and other fields, multi-line data
    tap = tap_of(
        b': comment\r\nevent: x\r\ndata:{"usage":\r\ndata: {"t":3}}\r\n\r\n',
        b"data: [DONE]\r\n\r\n",
    )
    assert (tap.usage, tap.ended_cleanly, tap.garbage) == ({"t": 3}, True, False)
    assert tap_of(b'data: {"a":1}\n\ndata: {"a"').ends_mid_event
    assert tap_of(b"data: {\n\ndata: 1\n\n").garbage  # the first event alone is not JSON


def test_stream_tap_skips_comments_and_joins_a_cut_line() -> None:
    assert not tap_of(b": keep-alive\n\n", *sse(b"{}")).garbage  # an SSE comment, alone
    assert not tap_of(b"event: ping\n\n").garbage
    assert not tap_of(b'data: {"a":\ndata: 1}\n\n').garbage  # two data lines, one chunk
    # A line cut short and followed by another event is one broken line, not skipped.
    assert tap_of(b'data: {"a"', *sse(b'{"b":1}')).garbage


def test_stream_tap_judges_events_up_to_exactly_a_megabyte() -> None:
    limit = 1 << 20
    exact = b"data: " + b"x" * (limit - 6)  # held back as one unfinished line of 1 MiB
    assert tap_of(exact, b"\n\n").garbage  # at the limit: still judged
    assert not tap_of(exact + b"x", b"\n\n").garbage  # a byte over: let through unjudged
    assert tap_of(*sse(b"{}"), exact, b"\n\n").garbage  # the count restarts per event
    assert tap_of(exact + b"x", b"\n\n", exact, b"\n\n").garbage  # ... and after a skip
    # Finished lines of one event count together with the unfinished one.
    third = b"data: " + b"x" * (limit // 3)
    assert not tap_of(third + b"\n" + third + b"\n" + third, b"\n\n").garbage


def test_stream_tap_leaves_an_event_over_a_megabyte_unjudged() -> None:
    big = b"data: " + b"x" * (1 << 20)  # not JSON, but more than it holds before the end
    assert not tap_of(big[:100], big[100:], b"\n\n").garbage
    assert not tap_of(b"data: x\n" + big, b"\n\n").garbage  # over it with two lines
    assert tap_of(big[: 1 << 19], big[1 << 19 : -20], b"\n\n").garbage  # just under: judged


def test_event_buffer_passes_whole_events_only() -> None:
    buffer = EventBuffer()
    assert buffer.flush() == b""
    assert buffer.feed(b"\r\n\r\ndata") == b"\r\n\r\n"  # a boundary at the very start
    assert buffer.feed(b": 0\r\n\r\ndata: 1\r\n\r\ndata: 2") == b"data: 0\r\n\r\ndata: 1\r\n\r\n"
    assert buffer.flush() == b"data: 2"
    assert buffer.feed(b"data: 1\n\ndata: 2") == b"data: 1\n\n"
    assert buffer.feed(b"\n") == b""
    assert buffer.feed(b"\ndata: 3\r\n\r\ndata") == b"data: 2\n\ndata: 3\r\n\r\n"
    assert buffer.flush() == b"data"
    assert buffer.flush() == b""
    assert buffer.feed(b"data: 4\r\n\r\n") == b"data: 4\r\n\r\n"
    assert buffer.feed(b"\n\n") == b"\n\n"
    big = b"x" * ((1 << 20) + 1)  # no boundary in sight: not SSE, let it through
    assert buffer.feed(big) == big and buffer.flush() == b""
    small = EventBuffer()
    assert small.feed(b"x" * (1 << 20)) == b""
    assert small.flush() == b"x" * (1 << 20)


def test_rewrite_events_and_event_json() -> None:
    events = b"data: 1\n\ndata: 2\r\n\r\ndata: 3\n\n"
    kept = rewrite_events(events, lambda e: None if e == b"data: 2" else e + b"!")
    assert kept == b"data: 1!\n\ndata: 3!\n\n"
    assert event_json(b'event: x\ndata: {"a": 1}') == (b"event: x\n", {"a": 1})
    assert event_json(b"data: {nope") == (b"", None)
    assert event_json(b'data: {"a": "data: b"}') == (b"", {"a": "data: b"})  # the first data:


def test_usage_stripper_takes_out_what_the_gateway_added() -> None:
    stripper = UsageStripper()
    chunks = [
        b'data: {"id":"1","choices":[{"delta":{"content":"a"}}],"usage":null}\n\n',
        b'data: {"usage": null, "id":"2","choices":[]}\n\ndata: {"id":"3","usage":null,"x":1}\n\n',
        b'data: {"id":"4","choices":[],"usage":{"total_tokens":5}}\n\n',
        b"data: [DONE]\n\n",
    ]
    out = b"".join(stripper.feed(c) for c in chunks) + stripper.flush()
    assert out == (
        b'data: {"id":"1","choices":[{"delta":{"content":"a"}}]}\n\n'
        b'data: {"id":"2","choices":[]}\n\ndata: {"id":"3","x":1}\n\n'
        b"data: [DONE]\n\n"
    )
    assert stripper.usage == {"total_tokens": 5}
    # A chunk that has choices keeps them and loses only its usage.
    other = UsageStripper()
    kept = other.feed(b'data: {"choices":[{"i":0}],"usage":{"t":1}}\n\n')
    assert kept == b'data: {"choices":[{"i":0}]}\n\n' and other.usage == {"t": 1}
    # What is not the gateway's own passes untouched; a cut event waits for its end.
    plain = UsageStripper()
    odd = b'data: {"usage":5}\n\ndata: ["usage"]\n\ndata: {"usage":\n\n'
    assert plain.feed(odd) == odd and plain.usage is None
    assert plain.feed(b'data: {"choices":[],"usage":{"t":') == b""
    assert plain.feed(b"2}}\n\n") == b"" and plain.usage == {"t": 2}


# ------------------------------------------------------------------- upstream errors


def test_upstream_error_bodies_in_openai_shape() -> None:
    openai = orjson.dumps(
        {"error": {"message": "bad", "type": "tokens", "param": "max_tokens", "code": 42}}
    )
    assert upstream_error_body(429, openai, "p") == {
        "error": {"message": "bad", "type": "tokens", "param": "max_tokens", "code": "42"}
    }
    untyped = b'{"error": {"message": "m", "param": 5, "code": null}}'
    assert upstream_error_body(404, untyped, "p")["error"] == {
        "message": "m", "type": "invalid_request_error", "param": None, "code": None
    }  # fmt: skip
    for status, kind in ((400, "invalid_request_error"), (401, "invalid_request_error"),
                         (429, "requests"), (500, "server_error"), (503, "server_error")):  # fmt: skip
        error = upstream_error_body(status, b'{"error": "model not found"}', "p")["error"]
        assert error == {"message": "model not found", "type": kind, "param": None, "code": None}
    for raw, message in (
        (b'{"detail": "too long"}', "too long"),
        (b'{"detail": [{"loc": ["body"]}]}', '[{"loc":["body"]}]'),
        (b'{"message": "busy"}', "busy"),
        (b'{"error": {"message": ""}}', '{"error": {"message": ""}}'),
        (b'{"error": ""}', '{"error": ""}'),
        (b"[1, 2]", "[1, 2]"),
        (b"  <html>down</html>\n", "<html>down</html>"),
        (b"\xff oops", "\ufffd oops"),
        (b"x" * 600, "x" * 500),
        (b"", "Provider ollama answered HTTP 502 with an empty body."),
        (b" \n ", "Provider ollama answered HTTP 502 with an empty body."),
    ):
        error = upstream_error_body(502, raw, "ollama")["error"]
        assert error == {"message": message, "type": "server_error", "param": None, "code": None}
