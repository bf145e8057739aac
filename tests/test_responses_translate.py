"""The Responses API translation (gateway/responses/), checked with the openai SDK's own types.

Every produced object and event is validated with the SDK's pydantic models, and the streams
are parsed by the SDK's real stream reader over an in-process transport that serves our bytes.
"""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai.types.responses import (
    Response,
    ResponseFailedEvent,
    ResponseFunctionToolCall,
    ResponseItem,
    ResponseOutputMessage,
    ResponseStreamEvent,
)
from pydantic import TypeAdapter

from gateway.errors import InvalidRequest
from gateway.responses.request import input_items, to_chat
from gateway.responses.response import failed_response, from_chat
from gateway.responses.stream import ResponseStream

EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
ITEM: TypeAdapter[Any] = TypeAdapter(ResponseItem)
CREATED = 1_767_000_000
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
    {"type": "function", "name": "get_time", "parameters": {"type": "object"}, "strict": False},
]


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": CREATED,
        "model": "llama3.2",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": USAGE,
    }


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "llama3.2",
        "choices": [choice],
    }


def chat_sse(chunks: list[dict[str, Any]], done: bool = True, newline: bytes = b"\n") -> bytes:
    """A chat stream as an upstream sends it: the chunks, the usage event, [DONE]."""
    events = [*chunks, {"id": "chatcmpl-1", "choices": [], "usage": USAGE}]
    raw = b"".join(b"data: " + orjson.dumps(c) + newline * 2 for c in events)
    return raw + (b"data: [DONE]" + newline * 2 if done else b"")


TEXT_CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Héllo"}),
    chunk({"content": ", wörld 🌍"}),
    chunk({"content": "!"}),
    chunk({}, "stop"),
]

TOOL_CHUNKS = [
    chunk({"role": "assistant", "content": None}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                }
            ]
        }
    ),
    chunk({}, "tool_calls"),
]


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """Our SSE bytes as events, each checked: `event:` names the data's type."""
    assert raw.endswith(b"\n\n")
    events = []
    for block in raw[:-2].split(b"\n\n"):
        name, data = block.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        event = orjson.loads(data[6:])
        assert event["type"] == name[7:].decode()
        events.append(event)
    return events


def check_events(events: list[dict[str, Any]]) -> list[Any]:
    """Validates every event with the SDK's types; sequence numbers 0, 1, 2...; one id."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(ids) == 1
    return [EVENT.validate_python(e) for e in events]


def feed(raw: bytes, size: int, stream: ResponseStream | None = None) -> bytes:
    stream = stream or ResponseStream({"model": "local", "stream": True}, "resp_1", CREATED)
    out = [stream.feed(raw[i : i + size]) for i in range(0, len(raw), size)]
    return b"".join(out)


def sdk_client(
    raw: bytes,
    captured: list[dict[str, Any]] | None = None,
    content_type: str = "text/event-stream",
) -> openai.OpenAI:
    """A real client whose transport answers our bytes: the SDK parses them."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        if captured is not None:
            captured.append(orjson.loads(request.content))
        return httpx2.Response(200, headers={"content-type": content_type}, content=raw)

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    return openai.OpenAI(api_key="k", base_url="http://gateway.test/v1", http_client=http)


# Requests


def test_plain_text_request() -> None:
    body = {
        "model": "local",
        "instructions": "Be brief.",
        "input": "Hi there",
        "metadata": {"app": "x"},
        "store": True,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u1",
        "max_output_tokens": 50,
    }
    chat = to_chat(body, None)
    assert chat == {
        "model": "local",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi there"},
        ],
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u1",
    }
    items = input_items(body)
    assert len(items) == 1 and items[0]["id"].startswith("msg_")
    assert items[0]["content"] == [{"type": "input_text", "text": "Hi there"}]
    ITEM.validate_python(items[0])


def test_message_items_parts_and_options() -> None:
    body = {
        "model": "local",
        "input": [
            {"role": "developer", "content": "Rules."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,AAAA",
                        "detail": "low",
                    },
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "A cat.", "annotations": []}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "a"},
                    {"type": "input_text", "text": "b"},
                ],
            },
        ],
        "tools": TOOLS,
        "tool_choice": {"type": "function", "name": "get_time"},
        "parallel_tool_calls": False,
        "reasoning": {"effort": "low"},
        "stream": True,
    }
    chat = to_chat(body, None)
    assert chat["messages"] == [
        {"role": "system", "content": "Rules."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                },
            ],
        },
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "a\nb"},
    ]
    assert chat["tools"][0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": TOOLS[0]["parameters"],
            "strict": True,
        },
    }
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert chat["parallel_tool_calls"] is False
    assert chat["reasoning_effort"] == "low"
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    items = input_items(body)
    assert [i["role"] for i in items] == ["developer", "user", "assistant", "user"]
    for item in items:
        ITEM.validate_python(item)


def test_tool_output_follow_up_with_history() -> None:
    history = [
        {
            "id": "msg_0",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_text", "text": "Weather in Paris, and the time?"}],
        },
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
        },
        {
            "id": "fc_1",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_a",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
    ]
    body = {
        "model": "local",
        "instructions": "Use tools.",
        "previous_response_id": "resp_0",
        "tools": TOOLS,
        "input": [
            {"type": "function_call", "call_id": "call_b", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_a", "output": "18 C, sunny"},
            {
                "type": "function_call_output",
                "call_id": "call_b",
                "output": [{"type": "input_text", "text": "12:00"}],
            },
        ],
    }
    messages = to_chat(body, history)["messages"]
    assert messages == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris, and the time?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18 C, sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
    ]
    items = input_items(body)
    assert items[0]["id"].startswith("fc_") and items[1]["id"].startswith("fco_")
    parsed = [ITEM.validate_python(i) for i in items]
    assert isinstance(parsed[0], ResponseFunctionToolCall)
    # Two calls with no text before them: one assistant message.
    only_calls = to_chat({"model": "m", "input": body["input"][:1] * 2}, None)["messages"]
    assert len(only_calls) == 1 and only_calls[0]["content"] is None
    assert len(only_calls[0]["tool_calls"]) == 2


def test_json_schema_and_json_object_formats() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    text = {"format": {"type": "json_schema", "name": "count", "schema": schema, "strict": True}}
    chat = to_chat({"model": "m", "input": "Count.", "text": text}, None)
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "count", "schema": schema, "strict": True},
    }
    request = {"model": "m", "input": "Count.", "text": text}
    body = from_chat(
        completion({"role": "assistant", "content": '{"n": 3}'}), request, "resp_2", CREATED
    )
    response = Response.model_validate(body)
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"
    assert response.output_text == '{"n": 3}'
    plain = to_chat({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}, None)
    assert plain["response_format"] == {"type": "json_object"}
    assert "response_format" not in to_chat(
        {"model": "m", "input": "x", "text": {"format": {"type": "text"}}}, None
    )


def test_invalid_tool_type_is_400_naming_it() -> None:
    body = {"model": "m", "input": "x", "tools": [TOOLS[0], {"type": "web_search"}]}
    with pytest.raises(InvalidRequest) as caught:
        to_chat(body, None)
    error = caught.value
    assert error.status == 400 and error.param == "tools[1].type"
    assert "'web_search'" in error.message
    assert error.to_dict()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("item", "param"),
    [
        (
            {"role": "user", "content": [{"type": "input_text", "text": "ok"}, {"type": "bogus"}]},
            "input[2].content[1].type",
        ),
        (
            {"role": "user", "content": [{"type": "input_file", "file_id": "f"}]},
            "input[2].content[0].type",
        ),
        (
            {"role": "user", "content": [{"type": "input_image", "file_id": "f"}]},
            "input[2].content[0].file_id",
        ),
        ({"role": "tool", "content": "x"}, "input[2].role"),
        ({"role": "user", "content": 5}, "input[2].content"),
        ({"type": "function_call", "name": "f", "arguments": "{}"}, "input[2].call_id"),
        ({"type": "function_call_output", "call_id": "c", "output": {"a": 1}}, "input[2].output"),
        ({"type": "web_search_call", "id": "ws_1"}, "input[2].type"),
        ("text", "input[2]"),
    ],
)
def test_invalid_input_item_is_400_with_its_path(item: Any, param: str) -> None:
    body = {"model": "m", "input": [{"role": "user", "content": "a"}, {"type": "reasoning"}, item]}
    with pytest.raises(InvalidRequest) as caught:
        to_chat(body, None)
    assert caught.value.status == 400
    assert caught.value.param == param, caught.value.message


def test_other_refusals() -> None:
    cases = [
        (
            {"model": "m", "input": "x", "tool_choice": {"type": "file_search"}, "tools": TOOLS},
            "tool_choice",
        ),
        ({"model": "m", "input": "x", "background": True}, "background"),
        ({"model": "m", "input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": 3}, "input"),
    ]
    for body, param in cases:
        with pytest.raises(InvalidRequest) as caught:
            to_chat(body, None)
        assert caught.value.param == param


# Non-streamed responses


def test_plain_text_response() -> None:
    request = {"model": "local", "input": "Hi", "metadata": {"app": "x"}, "store": False}
    body = from_chat(
        completion({"role": "assistant", "content": "Hello!"}), request, "resp_abc", CREATED
    )
    response = Response.model_validate(body)
    assert response.id == "resp_abc" and response.object == "response"
    assert response.status == "completed" and response.output_text == "Hello!"
    assert response.model == "llama3.2" and response.metadata == {"app": "x"}
    assert response.store is False and response.tool_choice == "auto" and response.tools == []
    message = response.output[0]
    assert isinstance(message, ResponseOutputMessage) and message.id.startswith("msg_")
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 7)
    assert response.usage.total_tokens == 18
    assert response.usage.input_tokens_details.cached_tokens == 0


def test_sdk_reads_the_response_body() -> None:
    captured: list[dict[str, Any]] = []
    chat = completion({"role": "assistant", "content": "Hello!"})
    raw = orjson.dumps(from_chat(chat, {"model": "local", "input": "Hi"}, "resp_b", CREATED))
    client = sdk_client(raw, captured, "application/json")
    response = client.responses.create(model="local", input="Hi", instructions="Be brief.")
    assert response.id == "resp_b" and response.output_text == "Hello!"
    assert to_chat(captured[0], None)["messages"][0] == {"role": "system", "content": "Be brief."}


def test_tool_calls_response() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_b",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            },
        ],
    }
    request = {"model": "local", "input": "x", "tools": TOOLS, "tool_choice": "required"}
    response = Response.model_validate(
        from_chat(completion(message, "tool_calls"), request, "resp_t", CREATED)
    )
    calls = response.output
    assert [type(c) for c in calls] == [ResponseFunctionToolCall, ResponseFunctionToolCall]
    assert [c.call_id for c in calls] == ["call_a", "call_b"]  # type: ignore[union-attr]
    assert all(c.id and c.id.startswith("fc_") for c in calls)  # type: ignore[union-attr]
    assert calls[0].arguments == '{"city": "Paris"}'  # type: ignore[union-attr]
    assert response.tool_choice == "required" and len(response.tools) == 2


def test_incomplete_and_failed_responses() -> None:
    request = {"model": "local", "input": "Write a lot", "max_output_tokens": 5}
    assert to_chat(request, None)["max_tokens"] == 5
    body = from_chat(
        completion({"role": "assistant", "content": "Once upon"}, "length"),
        request,
        "resp_l",
        CREATED,
    )
    response = Response.model_validate(body)
    assert response.status == "incomplete" and response.max_output_tokens == 5
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"  # type: ignore[union-attr]
    empty = from_chat(completion({"role": "assistant", "content": ""}), request, "r", CREATED)
    assert Response.model_validate(empty).output_text == ""
    failed = Response.model_validate(
        failed_response(request, "resp_f", CREATED, "Provider 'ollama' failed.", "upstream_error")
    )
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "server_error" and failed.error.message.startswith("Provider")


# Streams


def test_stream_text_split_anywhere() -> None:
    raw = chat_sse(TEXT_CHUNKS)
    whole = feed(raw, len(raw))
    for size in (1, 2, 7, 64):
        assert [e["type"] for e in parse_sse(feed(raw, size))] == [
            e["type"] for e in parse_sse(whole)
        ]
    events = parse_sse(feed(raw, 1))
    typed = check_events(events)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "".join(e["delta"] for e in events if e["type"].endswith(".delta")) == (
        "Héllo, wörld 🌍!"
    )
    item_id = events[2]["item"]["id"]
    assert item_id.startswith("msg_") and events[2]["item"]["status"] == "in_progress"
    assert all(e["item_id"] == item_id for e in events[3:9])
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == []
    final = typed[-1].response
    assert final.status == "completed" and final.output_text == "Héllo, wörld 🌍!"
    assert final.usage.input_tokens == 11 and final.output[0].id == item_id
    # CRLF line endings, cut at every byte, give the same stream.
    crlf = parse_sse(feed(chat_sse(TEXT_CHUNKS, newline=b"\r\n"), 1))
    assert [e["type"] for e in crlf] == [e["type"] for e in events]


def test_stream_start_then_feed_and_usage_for_spend() -> None:
    stream = ResponseStream({"model": "local"}, "resp_s", CREATED, model="llama3.2")
    head = parse_sse(stream.start())
    assert [e["type"] for e in head] == ["response.created", "response.in_progress"]
    assert stream.start() == b""
    rest = parse_sse(feed(chat_sse(TEXT_CHUNKS), 5, stream))
    events = check_events(head + rest)
    assert events[-1].response.model == "llama3.2"
    assert stream.finished and stream.usage == USAGE
    assert stream.response is not None and stream.response["status"] == "completed"
    assert stream.feed(b"data: [DONE]\n\n") == b"" and stream.fail("late") == b""


def test_stream_parallel_tool_calls() -> None:
    raw = chat_sse(TOOL_CHUNKS)
    events = parse_sse(feed(raw, 3))
    typed = check_events(events)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    first, second = events[2]["item"], events[7]["item"]
    assert first["id"].startswith("fc_") and first["call_id"] == "call_a"
    assert first["name"] == "get_weather" and first["status"] == "in_progress"
    assert (events[2]["output_index"], events[7]["output_index"]) == (0, 1)
    assert {e["item_id"] for e in events[3:6]} == {first["id"]}
    assert events[5]["arguments"] == '{"city": "Paris"}'
    assert events[6]["item"]["status"] == "completed"
    assert second["call_id"] == "call_b" and events[9]["arguments"] == "{}"
    final = typed[-1].response
    assert [o.call_id for o in final.output] == ["call_a", "call_b"]
    assert [o.id for o in final.output] == [first["id"], second["id"]]
    assert final.output[0].arguments == '{"city": "Paris"}'


def test_stream_text_then_whole_calls_without_index() -> None:
    # Ollama style: text, then whole calls in one chunk, some servers without index or id.
    chunks = [
        chunk({"role": "assistant", "content": "Let me check."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "id": "call_x",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    },
                    {"function": {"name": "get_time", "arguments": "{}"}},
                ]
            }
        ),
        chunk({}, "tool_calls"),
    ]
    events = parse_sse(feed(chat_sse(chunks), 11))
    typed = check_events(events)
    final = typed[-1].response
    assert [o.type for o in final.output] == ["message", "function_call", "function_call"]
    assert final.output_text == "Let me check."
    assert final.output[1].call_id == "call_x" and final.output[1].arguments == '{"city":"Oslo"}'
    assert final.output[2].call_id.startswith("call_") and final.output[2].name == "get_time"
    # The message closed before the first call was added.
    kinds = [e["type"] for e in events]
    assert kinds.index("response.output_item.done") < kinds.index("response.output_item.added", 3)


def test_stream_incomplete_by_length() -> None:
    chunks = [
        chunk({"role": "assistant", "content": "Once"}),
        chunk({"content": " upon"}),
        chunk({}, "length"),
    ]
    events = parse_sse(feed(chat_sse(chunks), 4))
    typed = check_events(events)
    assert events[-1]["type"] == "response.incomplete"
    final = typed[-1].response
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"
    assert final.output[0].status == "incomplete" and final.output_text == "Once upon"


def test_stream_empty_answer_is_an_empty_message() -> None:
    events = parse_sse(
        feed(chat_sse([chunk({"role": "assistant", "content": ""}), chunk({}, "stop")]), 9)
    )
    final = check_events(events)[-1].response
    assert final.status == "completed" and final.output_text == ""
    assert len(final.output) == 1


def test_stream_mid_stream_failure() -> None:
    stream = ResponseStream({"model": "local"}, "resp_x", CREATED)
    raw = chat_sse(TEXT_CHUNKS[:3], done=False)
    out = feed(raw[:-9], 6, stream)  # cut inside the usage event
    out += stream.fail("Provider 'ollama' ended the stream without [DONE].", "upstream_error")
    events = parse_sse(out)
    typed = check_events(events)
    assert [e["type"] for e in events[-4:]] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.failed",
    ]
    assert events[-2]["item"]["status"] == "incomplete"
    failed = typed[-1].response
    assert failed.status == "failed" and failed.error.code == "server_error"
    assert "without [DONE]" in failed.error.message
    assert failed.output_text == "Héllo, wörld 🌍"
    assert stream.finished and stream.feed(b"data: [DONE]\n\n") == b""


def test_stream_upstream_error_event() -> None:
    error = {"error": {"message": "model crashed", "type": "server_error", "code": None}}
    raw = chat_sse(TOOL_CHUNKS[:3], done=False).rsplit(b"data: ", 1)[0]  # drop the usage
    raw += b"data: " + orjson.dumps(error) + b"\n\n"
    events = parse_sse(feed(raw, 10))
    typed = check_events(events)
    assert events[-1]["type"] == "response.failed"
    assert events[-2]["item"]["type"] == "function_call"
    assert events[-2]["item"]["status"] == "incomplete"
    assert typed[-1].response.error.message == "model crashed"
    # A chunk with "error": null is no failure.
    quiet = [{**TEXT_CHUNKS[1], "error": None}, TEXT_CHUNKS[4]]
    assert parse_sse(feed(chat_sse(quiet), 50))[-1]["type"] == "response.completed"
    # A failure before any byte still opens the stream first.
    early = parse_sse(ResponseStream({"model": "m"}, "resp_e", CREATED).fail("refused"))
    check_events(early)
    assert [e["type"] for e in early] == [
        "response.created",
        "response.in_progress",
        "response.failed",
    ]


# The SDK's own stream reader over our bytes


def test_sdk_reads_the_text_stream() -> None:
    captured: list[dict[str, Any]] = []
    client = sdk_client(feed(chat_sse(TEXT_CHUNKS), 5), captured)
    with client.responses.stream(model="local", input="Hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Héllo, wörld 🌍!"
    assert final.output_text == "Héllo, wörld 🌍!" and final.id == "resp_1"
    assert final.usage is not None and final.usage.total_tokens == 18
    # What the SDK sent, translated, is the chat request the upstream gets.
    chat = to_chat(captured[0], None)
    assert chat["messages"] == [{"role": "user", "content": "Hi"}] and chat["stream"] is True


def test_sdk_reads_the_tool_call_stream() -> None:
    client = sdk_client(feed(chat_sse(TOOL_CHUNKS), 1))
    tools: Any = TOOLS
    with client.responses.stream(model="local", input="x", tools=tools) as stream:
        done = [e for e in stream if e.type == "response.function_call_arguments.done"]
        final = stream.get_final_response()
    assert [e.arguments for e in done] == ['{"city": "Paris"}', "{}"]
    calls = [o for o in final.output if o.type == "function_call"]
    assert [(c.call_id, c.name) for c in calls] == [
        ("call_a", "get_weather"),
        ("call_b", "get_time"),
    ]


def test_sdk_reads_the_failed_stream() -> None:
    stream = ResponseStream({"model": "local"}, "resp_1", CREATED)
    raw = feed(chat_sse(TEXT_CHUNKS[:2], done=False), 4, stream) + stream.fail("cut", "timeout")
    events = list(sdk_client(raw).responses.create(model="local", input="Hi", stream=True))
    assert isinstance(events[-1], ResponseFailedEvent)
    assert events[-1].response.error is not None and events[-1].response.error.message == "cut"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    with (
        sdk_client(raw).responses.stream(model="local", input="Hi") as sdk_stream,
        pytest.raises(RuntimeError, match=r"response\.completed"),
    ):
        sdk_stream.get_final_response()


def test_stream_close_at_the_end_of_the_body() -> None:
    # [DONE] without the blank line after it still completes the response.
    stream = ResponseStream({"model": "local"}, "resp_c", CREATED)
    raw = chat_sse(TEXT_CHUNKS)[:-2]
    events = parse_sse(feed(raw, 13, stream) + stream.close())
    assert check_events(events)[-1].type == "response.completed"
    assert stream.close() == b""
    # A body that ends before [DONE] ends in response.failed, never a silent cut.
    stream = ResponseStream({"model": "local"}, "resp_c", CREATED)
    events = parse_sse(feed(chat_sse(TOOL_CHUNKS, done=False), 13, stream) + stream.close())
    failed = check_events(events)[-1]
    assert failed.type == "response.failed" and "without [DONE]" in failed.response.error.message
    assert [o.status for o in failed.response.output] == ["completed", "completed"]


def test_native_stream_restores_placeholders_and_renumbers() -> None:
    """A native stream with redacted values: a placeholder cut across deltas is restored,
    and a tail held back at the end (it looked like a placeholder's start) goes out as one
    more delta before `.done`, the events after it renumbered."""
    from gateway.responses.native import NativeStream

    email = "ada@example.com"
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    full = "Mail [EMAIL_1] or [EM"
    events: list[dict[str, Any]] = [
        {"type": "response.output_text.delta", **where, "delta": "Mail [EMA", "logprobs": []},
        {"type": "response.output_text.delta", **where, "delta": "IL_1] or [EM", "logprobs": []},
        {"type": "response.output_text.done", **where, "text": full, "logprobs": []},
        {
            "type": "response.content_part.done",
            **where,
            "part": {"type": "output_text", "text": full, "annotations": []},
        },
    ]
    raw = b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps({**e, "sequence_number": i})
        + b"\n\n"
        for i, e in enumerate(events)
    )  # fmt: skip
    stream = NativeStream(None, {"[EMAIL_1]": email})
    out = b"".join(stream.feed(raw[i : i + 7]) for i in range(0, len(raw), 7))
    parsed = [orjson.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b"data: ")]
    for event in parsed:
        EVENT.validate_python(event)
    deltas = [e["delta"] for e in parsed if e["type"] == "response.output_text.delta"]
    restored = f"Mail {email} or [EM"
    assert "".join(deltas) == restored and deltas[-1] == "[EM"
    assert [e["sequence_number"] for e in parsed] == list(range(5))
    assert parsed[3]["text"] == restored and parsed[4]["part"]["text"] == restored
