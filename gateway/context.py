"""RequestContext: everything the stages of one request share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class RequestContext:
    request_id: str
    endpoint: str  # chat | completions | embeddings
    upstream_path: str  # path under the provider's base URL, e.g. /chat/completions
    headers: list[tuple[bytes, bytes]]  # the client's request headers, as received
    started: float  # perf_counter() when the request arrived
    raw_body: bytes = b""
    body: dict[str, Any] = field(default_factory=dict)
    body_changed: bool = False
    stream: bool = False
    principal: str = "-"  # the client key's name, never the key itself
    requested_model: str = ""
    routing_preferences: dict[str, Any] | None = None
    provider: str = ""
    model: str = ""
    status: int = 0
    first_byte_at: float | None = None
    usage: dict[str, Any] | None = None
    error_code: str | None = None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def set_model(self, model: str) -> None:
        """Rewrite the model sent upstream (the body is re-serialized only if it changed)."""
        self.model = model
        if self.body.get("model") != model:
            self.body["model"] = model
            self.body_changed = True

    def upstream_body(self) -> bytes:
        if not self.body_changed:
            return self.raw_body
        return orjson.dumps(self.body)
