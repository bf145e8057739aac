"""ConversationStage: a Responses request made whole before the rest of the chain sees it.

Its input is checked (400 with the item's path), and a `previous_response_id` is resolved
from the gateway's own store (gateway/responses/store.py): the stored conversation (earlier
inputs and outputs) goes in front of the new input and the id is taken out, so every later
stage (privacy scan, complexity, cache key) and every upstream, native or translated,
sees the whole conversation and no upstream needs state of its own. An id the store does
not hold for this tenant is a 404, whoever else holds it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gateway.context import RequestContext
from gateway.errors import GatewayError, NotFound, StateUnavailable
from gateway.responses.request import input_items, input_list, new_id
from gateway.responses.store import ResponseStore, StoreUnavailable, decode
from gateway.wire import invalid_type, needs_of


@dataclass(slots=True)
class Turn:
    """One /v1/responses request's own state, beside the RequestContext."""

    request: dict[str, Any]  # the client's body, as the response object echoes it
    response_id: str  # for a translated or cached answer (a native one brings its own)
    created_at: int
    tenant: str  # whose stored responses it may read, and under whom its own is stored
    store: bool  # `store: false` keeps nothing
    input_items: list[dict[str, Any]]  # this turn's input, as GET .../input_items lists it
    conversation: list[Any]  # earlier turns and this turn's input, as sent upstream
    previous_id: str | None = None
    mode: str = ""  # native | translate: of the provider being tried
    response: dict[str, Any] | None = None  # the final response object, once known


def tenant_of(ctx: RequestContext) -> str:
    """A stored response belongs to the key that made it (plain keys: their fingerprint)."""
    return "key:" + (ctx.key.name if ctx.key is not None else ctx.principal)


def previous_not_found(response_id: str) -> GatewayError:
    return NotFound(
        f"Previous response with id '{response_id[:128]}' not found. The gateway keeps "
        "responses for responses.store_ttl_seconds, only for the key that made them, and "
        "never those made with store: false.",
        param="previous_response_id",
        code="previous_response_not_found",
        type="invalid_request_error",
    )


async def read_record(
    store: ResponseStore, response_id: str, tenant: str
) -> tuple[dict[str, Any], int] | None:
    """The stored record and its size in bytes, if this tenant may see it."""
    try:
        raw = await store.get(response_id)
    except StoreUnavailable as exc:
        raise StateUnavailable(
            f"Stored responses are kept in Redis, which is unreachable: {exc}"
        ) from None
    if raw is None:
        return None
    record = decode(raw)
    if record.get("tenant") != tenant:
        return None  # another key's: as if it did not exist
    return record, len(raw)


class ConversationStage:
    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    async def __call__(self, ctx: RequestContext) -> None:
        body = ctx.body
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise invalid_type("instructions", "a string", instructions)
        items = input_items(body, lenient=True)  # checks every item's shape
        previous = body.get("previous_response_id")
        tenant = tenant_of(ctx)
        history: list[Any] = []
        if previous is not None:
            if not isinstance(previous, str) or not previous:
                raise invalid_type("previous_response_id", "a string", previous or None)
            found = await read_record(self.store, previous, tenant)
            if found is None:
                raise previous_not_found(previous)
            record, size = found
            history = record["conversation"]
            ctx.prompt_tokens_estimate += size // 4
        conversation = [*history, *input_list(body)]
        ctx.turn = Turn(
            request=body,
            response_id=new_id("resp"),
            created_at=int(time.time()),
            tenant=tenant,
            store=body.get("store") is not False,
            input_items=items,
            conversation=conversation,
            previous_id=previous,
        )
        if previous is not None:
            # Stateless from here on: the whole conversation, no id an upstream must know.
            merged = {k: v for k, v in body.items() if k != "previous_response_id"}
            merged["input"] = conversation
            ctx.body = merged
            ctx.body_changed = True
            ctx.needs = needs_of("responses", merged)
