"""OpenAI wire format: request checks, SSE framing, usage, error bodies."""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.errors import InvalidRequest, envelope, error_type_for

GATEWAY_FIELDS = ("routing_preferences",)
LATENCY_PREFERENCES = ("speed", "balanced", "quality")
_PREFERENCE_CHOICES = {
    "privacy_level": ("standard", "high", "max"),
    "latency_preference": LATENCY_PREFERENCES,
}


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("Request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "UTF-8" in str(exc):
            raise InvalidRequest(
                "Request body is not valid UTF-8.", code="invalid_encoding"
            ) from None
        raise InvalidRequest(
            f"Request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.", code="invalid_json")
    return body


def _need(body: dict[str, Any], param: str, kinds: tuple[type, ...], what: str) -> Any:
    if param not in body or body[param] is None:
        raise InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    value = body[param]
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise InvalidRequest(
            f"Invalid type for '{param}': expected {what}, got {_json_type(value)}.",
            param=param,
            code="invalid_type",
        )
    return value


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "an array", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def check_request(endpoint: str, body: dict[str, Any]) -> None:
    """The checks a gateway must make itself: the fields it reads to route the request."""
    model = _need(body, "model", (str,), "a string")
    if not model:
        raise InvalidRequest("'model' must not be empty.", param="model", code="invalid_value")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest(
            f"Invalid type for 'stream': expected a boolean, got {_json_type(stream)}.",
            param="stream",
            code="invalid_type",
        )
    if endpoint == "chat":
        messages = _need(body, "messages", (list,), "an array of message objects")
        if not messages:
            raise InvalidRequest(
                "'messages' must contain at least one message.",
                param="messages",
                code="invalid_value",
            )
        for i, message in enumerate(messages):
            check_message(i, message)
        check_tools(body)
    elif endpoint == "completions":
        check_texts("prompt", _need(body, "prompt", (str, list), "a string or an array"))
    elif endpoint == "embeddings":
        check_texts("input", _need(body, "input", (str, list), "a string or an array"))


def invalid_type(param: str, what: str, value: Any) -> InvalidRequest:
    """400 for a missing or mistyped field, worded as OpenAI words it."""
    if value is None:
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    return InvalidRequest(
        f"Invalid type for '{param}': expected {what}, got {_json_type(value)}.",
        param=param,
        code="invalid_type",
    )


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_texts(param: str, value: Any) -> None:
    """A prompt or an input list: strings, token ids, or arrays of token ids. Anything else
    would reach the upstream without the privacy scan reading it (it reads strings only)."""
    if not isinstance(value, list):
        return
    for i, item in enumerate(value):
        if isinstance(item, str) or _is_token(item):
            continue
        if isinstance(item, list) and all(_is_token(t) for t in item):
            continue
        raise InvalidRequest(
            f"Invalid type for '{param}[{i}]': expected a string or an array of token ids, "
            f"got {_json_type(item)}.",
            param=f"{param}[{i}]",
            code="invalid_type",
        )


def check_tools(body: dict[str, Any]) -> None:
    """Tool descriptions are scanned for privacy, so they must be strings."""
    for key in ("tools", "functions"):
        tools = body.get(key)
        if not isinstance(tools, list):
            continue
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                continue
            function = tool.get("function") if key == "tools" else tool
            where = f"{key}[{i}].function" if key == "tools" else f"{key}[{i}]"
            if isinstance(function, dict):
                description = function.get("description")
                if description is not None and not isinstance(description, str):
                    raise invalid_type(f"{where}.description", "a string", description)


ROLES = ("system", "developer", "user", "assistant", "tool", "function")
PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")


def check_message(i: int, message: Any) -> None:
    """One chat message as OpenAI checks it: role, content shape, parts, tool call id."""
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise InvalidRequest(
            f"Invalid type for '{where}': expected an object, got {_json_type(message)}.",
            param=where,
            code="invalid_type",
        )
    role = message.get("role")
    if not isinstance(role, str):
        raise InvalidRequest(
            f"Missing required parameter: '{where}.role'."
            if role is None
            else f"Invalid type for '{where}.role': expected a string, got {_json_type(role)}.",
            param=f"{where}.role",
            code="missing_required_parameter" if role is None else "invalid_type",
        )
    if role not in ROLES:
        raise InvalidRequest(
            f"Invalid value for '{where}.role': {role[:64]!r}. Supported values are: "
            f"{', '.join(map(repr, ROLES))}.",
            param=f"{where}.role",
            code="invalid_value",
        )
    content = message.get("content")
    if isinstance(content, list):
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            at = f"{where}.content[{j}]"
            if kind not in PART_TYPES:
                raise InvalidRequest(
                    f"Invalid content part at '{at}': expected an object whose 'type' is one "
                    f"of {', '.join(map(repr, PART_TYPES))}.",
                    param=f"{at}.type" if isinstance(part, dict) else at,
                    code="invalid_value" if isinstance(part, dict) else "invalid_type",
                )
            if kind in ("text", "refusal") and not isinstance(part.get(kind), str):
                raise invalid_type(f"{at}.{kind}", "a string", part.get(kind))
    elif content is not None and not isinstance(content, str):
        raise InvalidRequest(
            f"Invalid type for '{where}.content': expected a string, null or an array of "
            f"content parts, got {_json_type(content)}.",
            param=f"{where}.content",
            code="invalid_type",
        )
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise InvalidRequest(
            f"Missing required parameter: '{where}.tool_call_id' (a tool message answers "
            "one tool call).",
            param=f"{where}.tool_call_id",
            code="missing_required_parameter",
        )
    if len(message) > 2 or "content" not in message:  # the common case has nothing more
        _check_scanned_fields(where, message)


def _check_scanned_fields(where: str, message: dict[str, Any]) -> None:
    """The other strings the privacy scan reads (name, refusal, tool call arguments) must be
    strings: one sent as an object would reach the upstream unread."""
    for key in ("name", "refusal"):
        value = message.get(key)
        if value is not None and not isinstance(value, str):
            raise invalid_type(f"{where}.{key}", "a string", value)
    calls = message.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise invalid_type(f"{where}.tool_calls", "an array of tool calls", calls)
        for k, call in enumerate(calls):
            at = f"{where}.tool_calls[{k}]"
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(call, dict):
                raise invalid_type(at, "an object", call)
            if not isinstance(function, dict):
                raise invalid_type(f"{at}.function", "an object", function)
            _check_arguments(f"{at}.function.arguments", function.get("arguments"))
    legacy = message.get("function_call")
    if legacy is not None:
        if not isinstance(legacy, dict):
            raise invalid_type(f"{where}.function_call", "an object", legacy)
        _check_arguments(f"{where}.function_call.arguments", legacy.get("arguments"))


def _check_arguments(param: str, arguments: Any) -> None:
    if not isinstance(arguments, str):
        raise invalid_type(param, "a string (JSON-encoded arguments)", arguments)


def needs_of(endpoint: str, body: dict[str, Any]) -> frozenset[str]:
    """Capabilities the request needs from its model: tools, vision, json_schema."""
    needs = set()
    if body.get("tools"):
        needs.add("tools")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        needs.add("json_schema")
    if endpoint == "chat":
        for message in body["messages"]:
            content = message.get("content")
            if isinstance(content, list) and any(p["type"] == "image_url" for p in content):
                needs.add("vision")
                break
    elif endpoint == "responses":
        needs |= _responses_needs(body)
    return frozenset(needs)


def _responses_needs(body: dict[str, Any]) -> set[str]:
    """A Responses request: a json_schema text format, images among the input parts."""
    needs = set()
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        needs.add("json_schema")
    items = body.get("input")
    for item in items if isinstance(items, list) else ():
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") == "input_image" for p in content
        ):
            needs.add("vision")
            break
    return needs


def pop_routing_preferences(body: dict[str, Any], providers: Any) -> dict[str, Any] | None:
    """Remove and check the gateway-only `routing_preferences` field."""
    prefs = body.pop("routing_preferences", None)
    if prefs is None:
        return None
    param = "routing_preferences"
    if not isinstance(prefs, dict):
        raise InvalidRequest(
            f"Invalid type for '{param}': expected an object.", param=param, code="invalid_type"
        )
    allowed = ("force_provider", *_PREFERENCE_CHOICES)
    for key, value in prefs.items():
        if key not in allowed:
            raise InvalidRequest(
                f"Unknown field '{param}.{key}'; allowed: {', '.join(allowed)}.",
                param=f"{param}.{key}",
                code="invalid_value",
            )
        if value is None:
            continue
        choices = _PREFERENCE_CHOICES.get(key) or tuple(providers)
        if value not in choices:
            raise InvalidRequest(
                f"Invalid value for '{param}.{key}': {value!r}; expected one of "
                f"{', '.join(map(repr, choices))} or null.",
                param=f"{param}.{key}",
                code="invalid_value",
            )
    return prefs


def sse_error_event(error: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(error) + b"\n\n"


def usage_from_json(raw: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    return usage if isinstance(usage, dict) else None


_MAX_EVENT = 1 << 20


class StreamTap:
    """Watches SSE events as they pass: each data payload must be JSON (or [DONE]); it
    keeps the usage event's usage and sees whether the stream ended with [DONE].

    It never holds bytes back; the caller feeds each chunk before sending it on.
    """

    __slots__ = ("_data", "_pending", "_size", "_tail", "garbage", "usage")

    def __init__(self) -> None:
        self.usage: dict[str, Any] | None = None
        self.garbage = False  # a data payload that is neither JSON nor [DONE]
        self._data: list[bytes] = []  # the current event's data lines
        self._size = 0
        self._pending = b""  # a line not ended yet
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk)[-64:]
        if (  # the usual chunk: one whole `data: ...` event
            not self._pending
            and not self._data
            and chunk[:6] == b"data: "
            and chunk[-2:] == b"\n\n"
            and chunk.count(b"\n") == 2
        ):
            self._data.append(chunk[6:-2])
            self._event()
            return
        lines = (self._pending + chunk if self._pending else chunk).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:
                if self._data:
                    self._event()
            elif line[:5] == b"data:":
                self._data.append(line[6:] if line[5:6] == b" " else line[5:])
                self._size += len(line)
        if self._size + len(self._pending) > _MAX_EVENT:  # not an event we can judge
            self._data, self._size, self._pending = [], 0, b""

    def _event(self) -> None:
        payload = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        self._data, self._size = [], 0
        if payload == b"[DONE]" or not payload.strip():  # an empty one: a keep-alive
            return
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.garbage = True
            return
        if isinstance(event, dict) and "usage" in event:
            usage = event["usage"]
            if isinstance(usage, dict) and usage:
                self.usage = usage

    @property
    def ended_cleanly(self) -> bool:
        """True if the stream's last event was `data: [DONE]`."""
        return self._tail.rstrip().endswith(b"[DONE]")

    @property
    def ends_mid_event(self) -> bool:
        return bool(self._tail) and not self._tail.endswith(b"\n\n")


_EVENT_SPLIT = re.compile(rb"(\r?\n\r?\n)")
# The field wherever it stands: after another field (OpenAI's place), or first.
_NULL_USAGE = (b',"usage":null', b', "usage": null', b'"usage":null,', b'"usage": null, ')
_MAX_PARTIAL = 1 << 20


class EventBuffer:
    """Cuts a byte stream into whole SSE events: what `feed` returns ends on an event
    boundary, and the rest waits for the next chunk (a client cannot use half an event)."""

    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._partial + chunk if self._partial else chunk
        lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
        cut = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
        if not cut:
            if len(data) > _MAX_PARTIAL:  # not SSE as we know it: let it through
                self._partial = b""
                return data
            self._partial = data
            return b""
        self._partial = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        rest, self._partial = self._partial, b""
        return rest


def rewrite_events(complete: bytes, rewrite: Any) -> bytes:
    """Apply `rewrite(event) -> bytes | None` (None drops it) to each event of `complete`."""
    parts = _EVENT_SPLIT.split(complete)
    out: list[bytes] = []
    for event, sep in zip(parts[::2], parts[1::2], strict=False):
        kept = rewrite(event)
        if kept is not None:
            out += (kept, sep)
    return b"".join(out)


def event_json(event: bytes) -> tuple[bytes, Any]:
    """(what precedes `data:`, the parsed payload or None)."""
    prefix, _, payload = event.partition(b"data:")
    try:
        return prefix, orjson.loads(payload)
    except orjson.JSONDecodeError:
        return prefix, None


class UsageStripper(EventBuffer):
    """Takes out of a stream what the gateway's own `include_usage` added to it.

    Whole events pass as soon as they are complete: the `"usage":null` field is removed
    from every chunk, and the final usage event (`"choices":[]`) is kept here as `usage`
    instead of being sent.
    """

    __slots__ = ("usage",)

    def __init__(self) -> None:
        super().__init__()
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        complete = super().feed(chunk)
        if b'"usage"' not in complete:
            return complete
        for null in _NULL_USAGE:
            complete = complete.replace(null, b"")
        if b'"usage"' not in complete:
            return complete
        return rewrite_events(complete, self._event)

    def _event(self, event: bytes) -> bytes | None:
        if b'"usage"' not in event:
            return event
        prefix, data = event_json(event)
        if not isinstance(data, dict) or not isinstance(data.get("usage"), dict):
            return event
        self.usage = data.pop("usage")
        if data.get("choices") == []:
            return None  # the usage-only event the client did not ask for
        return prefix + b"data: " + orjson.dumps(data)


def upstream_error_body(status: int, raw: bytes, provider: str) -> dict[str, Any]:
    """Any upstream error body (OpenAI, Ollama, llama.cpp, plain text) in OpenAI's envelope."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    default_type = error_type_for(status)
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            code = err.get("code")
            return envelope(
                str(err["message"]),
                type=str(err.get("type") or default_type),
                code=None if code is None else str(code),
                param=err.get("param") if isinstance(err.get("param"), str) else None,
            )
        if isinstance(err, str) and err:
            return envelope(err, type=default_type, code=None)
        detail = data.get("detail") or data.get("message")
        if detail:
            message = detail if isinstance(detail, str) else orjson.dumps(detail).decode()
            return envelope(message, type=default_type, code=None)
    text = raw.decode("utf-8", "replace").strip()[:500]
    message = text or f"Provider {provider} answered HTTP {status} with an empty body."
    return envelope(message, type=default_type, code=None)
