"""A chat.completion as a Responses API `response` object, and the pieces streams share.

Translated: the first choice's text (one `message` item with an `output_text` part), its tool
calls (one `function_call` item each, `call_id` the chat call's id), the finish reason
(`length` and `content_filter` make the response `incomplete`), and the usage. Not translated:
other choices (n > 1), refusals, logprobs, and reasoning text some servers add.
"""

from __future__ import annotations

from typing import Any

from gateway.responses.request import new_id

# The codes the SDK's ResponseError takes; any other failure is reported as server_error.
_ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})
# Finish reasons that leave a response incomplete, and the reason Responses gives.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def from_chat(
    chat_body: dict[str, Any], request: dict[str, Any], response_id: str, created_at: int
) -> dict[str, Any]:
    """The `response` object for a non-streamed chat.completion."""
    choices = chat_body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    choice = choice if isinstance(choice, dict) else {}
    message = choice.get("message") or {}
    reason = INCOMPLETE.get(choice.get("finish_reason") or "")
    status = "incomplete" if reason else "completed"
    output: list[dict[str, Any]] = []
    content = message.get("content")
    calls = message.get("tool_calls") or []
    if content or not calls:  # an answer with nothing in it is still an (empty) message
        text = content if isinstance(content, str) else ""
        output.append(message_item(new_id("msg"), text, status))
    seen: set[str] = set()
    for call in calls:
        if not isinstance(call, dict):
            continue
        function = call.get("function") or {}
        output.append(
            function_call_item(
                new_id("fc"),
                call_id(call.get("id"), seen),
                function.get("name") or "",
                function.get("arguments") or "",
                status,
            )
        )
    model = chat_body.get("model") or request.get("model") or ""
    body = response_object(request, response_id, created_at, model, status, output)
    body["usage"] = usage_from_chat(chat_body.get("usage"))
    if reason:
        body["incomplete_details"] = {"reason": reason}
    return body


def failed_response(
    request: dict[str, Any],
    response_id: str,
    created_at: int,
    message: str,
    code: str | None = "server_error",
    output: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A `response` with status failed: the upstream failed before it answered in full."""
    model = request.get("model") or ""
    body = response_object(request, response_id, created_at, model, "failed", output or [])
    body["error"] = response_error(message, code)
    return body


def response_object(
    request: dict[str, Any],
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
) -> dict[str, Any]:
    """The `response` envelope, echoing the request's settings with OpenAI's defaults."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "model": model,
        "output": output,
        "parallel_tool_calls": _given(request, "parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
        "service_tier": "default",
        "store": _given(request, "store", True),
        "temperature": _given(request, "temperature", 1.0),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": _given(request, "tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": _given(request, "top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": [text_part(text)],
        "role": "assistant",
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def function_call_item(
    item_id: str, call: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call,
        "name": name,
    }


def call_id(given: Any, seen: set[str]) -> str:
    """The chat call's id, or a new one when it is missing or repeats (clients match on it)."""
    value = given if isinstance(given, str) and given and given not in seen else new_id("call")
    seen.add(value)
    return value


def usage_from_chat(usage: Any) -> dict[str, Any] | None:
    """Chat usage (prompt/completion tokens) in the Responses shape (input/output tokens)."""
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else 0
    reasoning = (
        completion_details.get("reasoning_tokens") if isinstance(completion_details, dict) else 0
    )
    return {
        "input_tokens": prompt,
        # cache_write_tokens: required by the SDK's InputTokensDetails; chat has no such count
        "input_tokens_details": {"cached_tokens": _count(cached), "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": _count(reasoning)},
        "total_tokens": _count(usage.get("total_tokens")) or prompt + completion,
    }


def response_error(message: str, code: str | None) -> dict[str, Any]:
    return {"code": code if code in _ERROR_CODES else "server_error", "message": message}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _given(request: dict[str, Any], key: str, default: Any) -> Any:
    value = request.get(key)
    return default if value is None else value
