"""Every text the upstream model would see in a request body, with where it sits in the body.

Only strings are texts: token arrays, numbers, images and audio are skipped, and so is any
shape the OpenAI APIs do not define (the scan must never fail a request over odd JSON).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

Step = str | int
ENDPOINTS = ("chat", "completions", "embeddings", "responses")

_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")
_SCHEMA_DEPTH = 32  # deeper tool schemas are not walked (orjson already bounds the nesting)


@dataclass(frozen=True, slots=True)
class TextRef:
    """One string of a request body: `at` is its path of keys and indexes, `text` the string."""

    at: tuple[Step, ...]
    text: str

    @property
    def path(self) -> str:
        return format_path(self.at)

    def __repr__(self) -> str:
        return f"TextRef(path={self.path!r}, chars={len(self.text)})"


def format_path(at: tuple[Step, ...]) -> str:
    """`("messages", 2, "content")` → `messages[2].content`."""
    out: list[str] = []
    for step in at:
        if isinstance(step, int):
            out.append(f"[{step}]")
        elif _IDENTIFIER.fullmatch(step):
            out.append(f".{step}" if out else step)
        else:
            out.append(f"[{orjson.dumps(step).decode()}]")
    return "".join(out)


def texts_of(endpoint: str, body: Any) -> list[TextRef]:
    """The texts of a request body for `endpoint` (one of ENDPOINTS), in body order."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"texts_of: unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")
    out: list[TextRef] = []
    if not isinstance(body, dict):
        return out
    if endpoint == "chat":
        _chat(body, out)
    elif endpoint == "completions":
        _strings(("prompt",), body.get("prompt"), out)
        _add(("suffix",), body.get("suffix"), out)
    elif endpoint == "embeddings":
        _strings(("input",), body.get("input"), out)
    else:
        _responses(body, out)
    return out


def _add(at: tuple[Step, ...], value: Any, out: list[TextRef]) -> None:
    if isinstance(value, str) and value:
        out.append(TextRef(at, value))


def _strings(at: tuple[Step, ...], value: Any, out: list[TextRef]) -> None:
    """A string or a list of strings (a list of token ids is not text)."""
    if isinstance(value, str):
        _add(at, value, out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _add((*at, i), item, out)


def _content(at: tuple[Step, ...], content: Any, out: list[TextRef]) -> None:
    """Message content: a string, or a list of parts whose `text` / `refusal` are text."""
    if isinstance(content, str):
        _add(at, content, out)
        return
    if not isinstance(content, list):
        return
    for i, part in enumerate(content):
        if isinstance(part, str):
            _add((*at, i), part, out)
        elif isinstance(part, dict):
            _add((*at, i, "text"), part.get("text"), out)
            _add((*at, i, "refusal"), part.get("refusal"), out)


def _chat(body: dict[str, Any], out: list[TextRef]) -> None:
    messages = body.get("messages")
    if isinstance(messages, list):
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):  # the common case, inline
                if content:
                    out.append(TextRef(("messages", i, "content"), content))
            else:
                _content(("messages", i, "content"), content, out)
            if len(message) == 2 and "role" in message and "content" in message:
                continue  # the common case: nothing else to read
            at: tuple[Step, ...] = ("messages", i)
            _add((*at, "name"), message.get("name"), out)
            _add((*at, "refusal"), message.get("refusal"), out)
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                for k, call in enumerate(calls):
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        where = (*at, "tool_calls", k, "function", "arguments")
                        _add(where, function.get("arguments"), out)
            legacy = message.get("function_call")
            if isinstance(legacy, dict):
                _add((*at, "function_call", "arguments"), legacy.get("arguments"), out)
    _tools("tools", body.get("tools"), out)
    _tools("functions", body.get("functions"), out)


def _responses(body: dict[str, Any], out: list[TextRef]) -> None:
    _add(("instructions",), body.get("instructions"), out)
    items = body.get("input")
    if isinstance(items, str):
        _add(("input",), items, out)
    elif isinstance(items, list):
        for i, item in enumerate(items):
            if isinstance(item, str):
                _add(("input", i), item, out)
            elif isinstance(item, dict):
                kind = item.get("type")
                if kind is None or kind == "message":
                    _content(("input", i, "content"), item.get("content"), out)
                elif kind == "function_call":
                    _add(("input", i, "arguments"), item.get("arguments"), out)
                elif kind == "function_call_output":
                    _content(("input", i, "output"), item.get("output"), out)
    _tools("tools", body.get("tools"), out)


def _tools(key: str, tools: Any, out: list[TextRef]) -> None:
    """Tool descriptions, chat style (`{"function": {...}}`) or flat (legacy, Responses)."""
    if not isinstance(tools, list):
        return
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            continue
        at: tuple[Step, ...] = (key, i)
        function = tool.get("function")
        if isinstance(function, dict):
            at, tool = (*at, "function"), function
        _add((*at, "description"), tool.get("description"), out)
        _schema((*at, "parameters"), tool.get("parameters"), out, 0)


def _schema(at: tuple[Step, ...], node: Any, out: list[TextRef], depth: int) -> None:
    """Every `description` string in a JSON schema."""
    if depth > _SCHEMA_DEPTH:
        return
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                _add((*at, key), value, out)
            elif isinstance(value, dict | list):
                _schema((*at, key), value, out, depth + 1)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, dict | list):
                _schema((*at, i), value, out, depth + 1)
