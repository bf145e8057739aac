"""What a cached answer is filed under: the tenant, the exact request, its context.

The exact key digests the routed request (provider, upstream model and every body field
that can change the answer). The context key is the same minus the last user message:
earlier turns and the system prompt must match exactly, only the last question may be a
paraphrase. Both are blake2b digests of sorted-key JSON, so replicas agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

# Body fields that never change the answer (transport, bookkeeping, client metadata).
_NOT_IN_KEY = frozenset({"model", "stream", "stream_options", "user", "metadata", "store"})


@dataclass(frozen=True, slots=True)
class CacheKeys:
    tenant: str
    exact: str  # hex digest of the whole routed request
    context: str  # hex digest of everything but the last user message; "" if no semantic
    question: str  # the last user message's text ("" if it has none)


def _digest(value: Any) -> str:
    raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def question_text(message: Any) -> str | None:
    """The text of a user message (string, or text parts only), else None."""
    if not isinstance(message, dict) or message.get("role") != "user":
        return None
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                return None  # an image or audio part: only an exact match may answer
            text = part.get("text")
            texts.append(text if isinstance(text, str) else "")
        return "\n".join(texts)
    return None


def cache_keys(tenant: str, provider: str, model: str, body: dict[str, Any]) -> CacheKeys:
    fields = {k: v for k, v in body.items() if k not in _NOT_IN_KEY}
    target = (tenant, provider, model)
    exact = _digest([target, fields])
    messages = fields.get("messages")
    question = question_text(messages[-1]) if isinstance(messages, list) and messages else None
    if not question or not question.strip():
        return CacheKeys(tenant, exact, "", "")
    fields["messages"] = messages[:-1]  # type: ignore[index]
    return CacheKeys(tenant, exact, _digest([target, fields, "semantic"]), question)
