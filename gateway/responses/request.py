"""A Responses API request as a Chat Completions body, for upstreams without /v1/responses.

Translated: `instructions`, `input` (a string, or `message`, `function_call` and
`function_call_output` items; `input_text`, `input_image` by URL and `output_text` parts),
function `tools`, `tool_choice`, `parallel_tool_calls`, `max_output_tokens`, `temperature`,
`top_p`, `text.format` (`json_object`, `json_schema`), `reasoning.effort` (not "none"), `user`,
`stream`; and chat's `stop`, `seed`, `frequency_penalty`, `presence_penalty` when given.
Refused with a 400 naming the path: other tool types and tool choices, `input_file` and
`input_audio` parts, images by `file_id`, other item types, `background`, `prompt`,
`conversation`. Dropped: `reasoning` items (chat has no place for them), effort "none" (what
a model without reasoning does anyway, and servers that predate it refuse it); `metadata`,
`store` and `previous_response_id` are the gateway's (resolved before this runs); `include`,
`truncation`, `service_tier`, `text.verbosity` and the like have no chat equivalent a local
server takes. `input_items(body, lenient=True)` checks the same shapes but keeps what only a
native upstream takes, as sent.
"""

from __future__ import annotations

import uuid
from typing import Any

from gateway.errors import InvalidRequest
from gateway.wire import invalid_type

_INPUT_ROLES = ("user", "system", "developer")
_ROLES = (*_INPUT_ROLES, "assistant")
_TOOL_CHOICES = ("auto", "none", "required")
_IMAGE_DETAILS = ("low", "high", "auto")  # chat's; Responses also has "original"
_UNSUPPORTED_PARTS = ("input_file", "input_audio")
_UNSUPPORTED_FIELDS = ("prompt", "conversation")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def to_chat(body: dict[str, Any], history: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The Chat Completions body for `body`, after `history` (the previous turns' items)."""
    for field in _UNSUPPORTED_FIELDS:
        if body.get(field) is not None:
            raise _unsupported(field, f"'{field}' is not supported")
    if body.get("background"):
        raise _unsupported("background", "Background responses are not supported")
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _bad_type("instructions", "a string", instructions)
        messages.append({"role": "system", "content": instructions})
    first = len(messages)
    for i, item in enumerate(history or ()):
        normal = _item(item, f"previous_response_id.items[{i}]")
        if normal is not None:
            _append(messages, normal)
    for item in input_items(body):
        _append(messages, item)
    if len(messages) == first:
        raise InvalidRequest(
            "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    tools = body.get("tools")
    if tools is not None:
        chat_tools = _tools(tools)
        if chat_tools:  # chat refuses tool_choice and parallel_tool_calls without tools
            chat["tools"] = chat_tools
            if body.get("tool_choice") is not None:
                chat["tool_choice"] = _tool_choice(body["tool_choice"])
            if body.get("parallel_tool_calls") is not None:
                chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    for field, chat_field in (
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("user", "user"),
        # Chat's own sampling fields, which the Responses API lacks: a client may add them
        # (the Agents SDK's ModelSettings.extra_body) for a chat server that needs them.
        ("stop", "stop"),
        ("seed", "seed"),
        ("frequency_penalty", "frequency_penalty"),
        ("presence_penalty", "presence_penalty"),
    ):
        if body.get(field) is not None:
            chat[chat_field] = body[field]
    text = body.get("text")
    if text is not None:
        response_format = _response_format(text)
        if response_format is not None:
            chat["response_format"] = response_format
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise _bad_type("reasoning", "an object", reasoning)
        effort = reasoning.get("effort")
        # "none" (the Agents SDK's default for gpt-5.x) is what a model without reasoning
        # does anyway, and servers that predate it refuse it.
        if effort is not None and effort != "none":
            chat["reasoning_effort"] = effort
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # usage arrives only when asked for
    return chat


def input_items(body: dict[str, Any], lenient: bool = False) -> list[dict[str, Any]]:
    """The request's input as item dicts with ids, as `GET .../input_items` lists them.

    `lenient` (a native upstream takes what the translation cannot): item types and parts
    the translation refuses are kept as sent instead of refused; shapes are still checked."""
    value = body.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [_message("user", [{"type": "input_text", "text": value}], None)]
    if not isinstance(value, list):
        raise _bad_type("input", "a string or an array of input items", value)
    items = []
    for i, item in enumerate(value):
        normal = _item(item, f"input[{i}]", lenient)
        if normal is not None:
            items.append(normal)
    return items


def input_list(body: dict[str, Any]) -> list[Any]:
    """The request's input as sent, as a list (a string is one user message)."""
    value = body.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value) if isinstance(value, list) else []


def _item(item: Any, where: str, lenient: bool = False) -> dict[str, Any] | None:
    """One input item, checked and normalized; None for one that is dropped."""
    if not isinstance(item, dict):
        raise _bad_type(where, "an object", item)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        if role not in _ROLES:
            raise _bad_value(f"{where}.role", role, _ROLES)
        content = item.get("content")
        if role == "assistant":
            parts = _output_parts(content, f"{where}.content")
        else:
            parts = _input_parts(content, f"{where}.content", lenient)
        return _message(role, parts, item.get("id"))
    if kind == "function_call":
        call_id, name = _text(item, "call_id", where), _text(item, "name", where)
        arguments = _text(item, "arguments", where)
        return {
            "id": _id(item, "fc"),
            "type": "function_call",
            "status": "completed",
            "arguments": arguments,
            "call_id": call_id,
            "name": name,
        }
    if kind == "function_call_output":
        call_id = _text(item, "call_id", where)
        output = item.get("output")
        if isinstance(output, list):
            output = [
                _tool_output_part(p, f"{where}.output[{j}]", lenient) for j, p in enumerate(output)
            ]
        elif not isinstance(output, str):
            raise _bad_type(f"{where}.output", "a string or an array of content parts", output)
        return {
            "id": _id(item, "fco"),
            "type": "function_call_output",
            "status": "completed",
            "call_id": call_id,
            "output": output,
        }
    if not isinstance(kind, str):
        raise _bad_type(f"{where}.type", "a string", kind)
    if lenient:
        return dict(item)  # a native upstream's business (reasoning, hosted tool calls, ...)
    if kind == "reasoning":
        return None  # a chat upstream cannot take it back; the answer does not depend on it
    raise _unsupported(f"{where}.type", f"Input items of type {kind[:64]!r} are not supported")


def _message(role: str, content: list[dict[str, Any]], given_id: Any) -> dict[str, Any]:
    item_id = given_id if isinstance(given_id, str) and given_id else new_id("msg")
    return {
        "id": item_id,
        "type": "message",
        "role": role,
        "status": "completed",
        "content": content,
    }


def _input_parts(content: Any, where: str, lenient: bool = False) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    if not isinstance(content, list):
        raise _bad_type(where, "a string or an array of content parts", content)
    parts = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = _part_type(part, at)
        if kind == "input_text":
            parts.append({"type": "input_text", "text": _text(part, "text", at)})
        elif kind == "input_image":
            parts.append(dict(part) if lenient else _image(part, at))
        elif kind in _UNSUPPORTED_PARTS:
            if lenient:
                parts.append(dict(part))
                continue
            raise _unsupported(f"{at}.type", f"Content parts of type {kind!r} are not supported")
        else:
            raise _bad_value(f"{at}.type", kind, ("input_text", "input_image"))
    return parts


def _output_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "output_text", "text": content, "annotations": []}]
    if not isinstance(content, list):
        raise _bad_type(where, "a string or an array of content parts", content)
    parts = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = _part_type(part, at)
        if kind in ("output_text", "input_text"):
            parts.append(
                {"type": "output_text", "text": _text(part, "text", at), "annotations": []}
            )
        elif kind == "refusal":
            parts.append({"type": "refusal", "refusal": _text(part, "refusal", at)})
        else:
            raise _bad_value(f"{at}.type", kind, ("output_text", "refusal"))
    return parts


def _tool_output_part(part: Any, where: str, lenient: bool = False) -> dict[str, Any]:
    kind = _part_type(part, where)
    if kind == "input_text":
        return {"type": "input_text", "text": _text(part, "text", where)}
    if kind in ("input_image", "input_file"):  # a chat tool message carries text only
        if lenient:
            return dict(part)
        raise _unsupported(f"{where}.type", f"Tool outputs of type {kind!r} are not supported")
    raise _bad_value(f"{where}.type", kind, ("input_text",))


def _part_type(part: Any, where: str) -> str:
    if not isinstance(part, dict):
        raise _bad_type(where, "an object", part)
    kind = part.get("type")
    if not isinstance(kind, str):
        raise _bad_type(f"{where}.type", "a string", kind)
    return kind


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        if part.get("file_id") is not None:
            raise _unsupported(f"{where}.file_id", "Images by file_id are not supported")
        raise _bad_type(f"{where}.image_url", "a string (a URL or a data URL)", url)
    detail = part.get("detail")
    return {"type": "input_image", "image_url": url, "detail": detail or "auto"}


def _append(messages: list[dict[str, Any]], item: dict[str, Any]) -> None:
    """Adds one normalized item to the chat messages."""
    kind = item["type"]
    if kind == "message":
        role = item["role"]
        if role == "assistant":
            texts = [p.get("text") or p.get("refusal") or "" for p in item["content"]]
            messages.append({"role": "assistant", "content": "".join(texts)})
        else:  # developer is system to chat servers that predate it
            role = "system" if role == "developer" else role
            messages.append({"role": role, "content": _chat_content(item["content"])})
    elif kind == "function_call":
        call = {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":  # one turn: text and its calls
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    else:
        output = item["output"]
        if isinstance(output, list):
            output = "".join(p["text"] for p in output)
        messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})


def _chat_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(p["type"] == "input_text" for p in parts):  # a string suits every chat server
        return "\n".join(p["text"] for p in parts)
    out: list[dict[str, Any]] = []
    for p in parts:
        if p["type"] == "input_text":
            out.append({"type": "text", "text": p["text"]})
        else:
            image: dict[str, Any] = {"url": p["image_url"]}
            if p["detail"] in _IMAGE_DETAILS:
                image["detail"] = p["detail"]
            out.append({"type": "image_url", "image_url": image})
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad_type("tools", "an array of tools", tools)
    out = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _bad_type(where, "an object", tool)
        kind = tool.get("type")
        if kind != "function":
            raise _unsupported(
                f"{where}.type",
                f"Tools of type {str(kind)[:64]!r} are not supported, only function tools,",
            )
        function: dict[str, Any] = {"name": _text(tool, "name", where)}
        description = tool.get("description")
        if description is not None:
            if not isinstance(description, str):  # the privacy scan reads it as a string
                raise _bad_type(f"{where}.description", "a string", description)
            function["description"] = description
        for key in ("parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise _bad_value("tool_choice", choice, _TOOL_CHOICES)
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": _text(choice, "name", "tool_choice")}}
    kind = choice.get("type") if isinstance(choice, dict) else None
    raise _unsupported("tool_choice", f"tool_choice {str(kind or choice)[:64]!r} is not supported")


def _response_format(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, dict):
        raise _bad_type("text", "an object", text)
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _bad_type("text.format", "an object", fmt)
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise _bad_type("text.format.schema", "an object", schema)
        spec: dict[str, Any] = {"name": _text(fmt, "name", "text.format"), "schema": schema}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                spec[key] = fmt[key]
        return {"type": "json_schema", "json_schema": spec}
    raise _bad_value("text.format.type", kind, ("text", "json_object", "json_schema"))


def _text(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _bad_type(f"{where}.{key}", "a string", value)
    return value


def _id(item: dict[str, Any], prefix: str) -> str:
    given = item.get("id")
    return given if isinstance(given, str) and given else new_id(prefix)


_bad_type = invalid_type  # one wording for missing and mistyped fields (gateway/wire.py)


def _bad_value(param: str, value: Any, allowed: tuple[str, ...]) -> InvalidRequest:
    if value is None:
        return _bad_type(param, "a string", None)
    return InvalidRequest(
        f"Invalid value for '{param}': {str(value)[:64]!r}. Supported values are: "
        f"{', '.join(map(repr, allowed))}.",
        param=param,
        code="invalid_value",
    )


def _unsupported(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(
        f"{what} on this model: the gateway serves it through Chat Completions, which has no "
        "equivalent.",
        param=param,
        code="unsupported_value",
    )
