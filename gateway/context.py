"""RequestContext: everything the stages of one request share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from gateway.cache.answer import Answer
    from gateway.cache.service import CachePlan
    from gateway.catalog import Target
    from gateway.chain.auth import Principal
    from gateway.privacy import Finding, TextRef
    from gateway.responses.turn import Turn
    from gateway.stores import Admission


@dataclass(slots=True)
class RequestContext:
    request_id: str
    endpoint: str  # chat | completions | embeddings | responses
    upstream_path: str  # path under the provider's base URL, e.g. /chat/completions
    headers: list[tuple[bytes, bytes]]  # the client's request headers, as received
    started: float  # perf_counter() when the request arrived
    raw_body: bytes = b""
    body: dict[str, Any] = field(default_factory=dict)
    body_changed: bool = False
    stream: bool = False
    principal: str = "-"  # the client key's name, never the key itself
    key: Principal | None = None
    requested_model: str = ""
    as_auto: bool = False  # `auto`, or an unlisted name under routing.unknown_model: auto
    routing_preferences: dict[str, Any] | None = None
    provider: str = ""
    model: str = ""
    status: int = 0
    first_byte_at: float | None = None
    upstream_started: float | None = None  # perf_counter() when the upstream call began
    upstream_done: float | None = None  # ... and when its last byte was read
    usage: dict[str, Any] | None = None
    error_code: str | None = None
    # Limits and spend: the admission to settle, its reservation, the response's cost.
    admission: Admission | None = None
    admitted_provider: str = ""  # the provider whose limits admitted the request
    reserved_tokens: int = 0
    lease_id: str = ""
    limit_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    cost_usd: float | None = None
    # The gateway asked the upstream for stream usage; the client did not.
    strip_stream_usage: bool = False
    # What the request needs (parse): capabilities (tools, vision, json_schema), prompt size.
    needs: frozenset[str] = frozenset()
    prompt_tokens_estimate: int = 0
    # Privacy: the level, what was found (never logged as values) and what it decided.
    privacy_level: str = ""
    privacy_texts: list[TextRef] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    privacy_categories: tuple[str, ...] = ()
    privacy_action: str = "allow"  # allow | redact | route_local
    privacy_reason: str = ""
    keep_local: bool = False  # never to a cloud provider, whatever comes after
    redacted: int = 0
    placeholders: dict[str, str] | None = None  # to restore in the answer
    # Complexity and the routing decision.
    complexity: float | None = None
    complexity_factors: dict[str, float] | None = None
    route_rule: str = ""
    fallback: tuple[Target, ...] = ()
    attempts: list[tuple[str, str]] = field(default_factory=list)  # (target, why) that failed
    # Cache: hit_exact | hit_semantic | miss | bypass ("" when not looked up), the answer
    # of a hit, and for a miss what to store once the answer is complete.
    cache_status: str = ""
    cached: Answer | None = None
    cache_similarity: float | None = None
    cache_plan: CachePlan | None = None
    cache_answer: Answer | None = None  # a miss's complete answer, stored after the last byte
    turn: Turn | None = None  # /v1/responses: the conversation and the response to store

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
