"""POST /v1/responses through the chain, and the stored responses' GET and DELETE.

The chain is chat's with ConversationStage after parse (gateway/responses/turn.py). Each
attempt builds its body for its provider (`responses: native | translate`): a native one
gets the Responses body on `/responses` and its bytes are passed on; a translated one gets
`to_chat`'s body on `/chat/completions`, and its answer is mapped back (`from_chat`,
`ResponseStream`). So a fallback may cross modes. After the last byte the response is
stored for `previous_response_id` and GET (unless the request said `store: false`), before
its last bytes leave: a client's next turn may follow at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.asgi import Send, send_response
from gateway.cache.answer import (
    Answer,
    StreamRecorder,
    answer_from_body,
    replay_body,
    replay_stream,
)
from gateway.context import RequestContext
from gateway.errors import GatewayError, InvalidRequest, NotFound, StateUnavailable
from gateway.proxy import ProxyEndpoint, gateway_headers
from gateway.responses.native import NativeStream, answer_from_response, chat_usage
from gateway.responses.native import restore_response as restore_native
from gateway.responses.request import to_chat
from gateway.responses.response import from_chat
from gateway.responses.store import ResponseStore, StoreUnavailable, encode
from gateway.responses.stream import ResponseStream
from gateway.responses.turn import Turn, read_record
from gateway.restore import RestoringStream, restore_body

if TYPE_CHECKING:
    from gateway.providers import Provider
    from gateway.runtime import Gateway

_SSE_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
_STORED_STATUSES = frozenset({"completed", "incomplete"})


class ResponsesEndpoint(ProxyEndpoint):
    def __init__(self, gateway: Gateway, endpoint: str, upstream_path: str) -> None:
        super().__init__(gateway, endpoint, upstream_path)
        self.chain = gateway.responses_chain
        self.modes = {name: p.responses_mode for name, p in gateway.config.providers.items()}
        self.store: ResponseStore = gateway.response_store

    # ----------------------------------------------------------------- per attempt

    def turn_body(self, ctx: RequestContext, provider: Provider) -> bytes:
        turn = _turn(ctx)
        turn.mode = self.modes.get(provider.name, "translate")
        if turn.mode == "native":
            ctx.upstream_path = "/responses"
            return ctx.upstream_body()
        ctx.upstream_path = "/chat/completions"
        return orjson.dumps(to_chat(ctx.body, None))  # a 400 here names what chat cannot take

    # ----------------------------------------------------------------- relays

    async def _relay_body(
        self, ctx: RequestContext, provider: Provider, upstream: httpx.Response, send: Send
    ) -> None:
        turn = _turn(ctx)
        body, data = await self._read_json(provider, upstream)
        if not isinstance(data, dict):
            raise self._garbage(
                provider, f"answered HTTP {upstream.status_code} with JSON that is not an object"
            )
        if turn.mode == "native":
            response = data
            changed = turn.previous_id is not None
            if changed:
                response["previous_response_id"] = turn.previous_id
            if ctx.placeholders and restore_native(response, ctx.placeholders):
                changed = True
            if changed:
                body = orjson.dumps(response)
            ctx.usage = chat_usage(response.get("usage"))
            if ctx.cache_plan is not None:
                ctx.cache_answer = answer_from_response(response)
        else:
            if ctx.placeholders:
                body = restore_body(body, ctx.placeholders)
                data = orjson.loads(body)
            usage = data.get("usage")
            ctx.usage = usage if isinstance(usage, dict) else None
            if ctx.cache_plan is not None:
                ctx.cache_answer = answer_from_body(body)
            response = from_chat(data, turn.request, turn.response_id, turn.created_at)
            body = orjson.dumps(response)
        turn.response = response
        self._price(ctx)
        headers = self._response_headers(ctx, upstream, b"application/json")
        headers[0] = (b"content-type", b"application/json")
        await self.store_turn(turn)
        ctx.status = upstream.status_code
        ctx.first_byte_at = time.perf_counter()
        await send_response(send, upstream.status_code, body, headers)

    async def _relay_stream(
        self, ctx: RequestContext, provider: Provider, upstream: httpx.Response, send: Send
    ) -> None:
        headers = self._response_headers(ctx, upstream, b"text/event-stream")
        headers += _SSE_HEADERS
        ctx.status = upstream.status_code
        await send({"type": "http.response.start", "status": ctx.status, "headers": headers})
        if _turn(ctx).mode == "native":
            await self._native_stream(ctx, provider, upstream, send)
        else:
            await self._translated_stream(ctx, provider, upstream, send)
        self._price(ctx)

    async def _native_stream(
        self, ctx: RequestContext, provider: Provider, upstream: httpx.Response, send: Send
    ) -> None:
        turn = _turn(ctx)
        events = NativeStream(turn.previous_id, ctx.placeholders)
        failure: GatewayError | None = None
        try:
            async for chunk in upstream.aiter_raw():
                out = events.feed(chunk)  # the whole events before a bad one, if any
                if events.ended:
                    await self._store_native(ctx, events)
                if out:
                    if ctx.first_byte_at is None:
                        ctx.first_byte_at = time.perf_counter()
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                if events.garbage:
                    failure = self._garbage(provider, "sent a stream event that is not JSON")
                    break
                if events.ended:
                    break
            if failure is None and not events.ended:
                rest = events.feed(events.flush() + b"\n\n")
                if events.ended:
                    await self._store_native(ctx, events)
                if rest:
                    await send({"type": "http.response.body", "body": rest, "more_body": True})
        except httpx.HTTPError as exc:
            failure = self._upstream_failed(provider, exc)
        tail = b""
        if failure is None and not events.ended:
            failure = GatewayError(
                f"Provider {provider.name!r} ended the stream before its last event.",
                status=502,
                code="upstream_stream_incomplete",
            )
        if failure is not None:
            ctx.error_code = failure.code
            tail = events.fail(failure.message)
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        response = events.response
        if response is not None and response.get("status") == "failed" and failure is None:
            ctx.error_code = "upstream_error"
        if response is not None and "id" in response:
            ctx.usage = chat_usage(response.get("usage"))
            if ctx.cache_plan is not None and failure is None:
                ctx.cache_answer = answer_from_response(response)

    async def _store_native(self, ctx: RequestContext, events: NativeStream) -> None:
        turn = _turn(ctx)
        if turn.response is None and events.response is not None and "id" in events.response:
            turn.response = events.response
            await self.store_turn(turn)

    async def _translated_stream(
        self, ctx: RequestContext, provider: Provider, upstream: httpx.Response, send: Send
    ) -> None:
        turn = _turn(ctx)
        events = ResponseStream(turn.request, turn.response_id, turn.created_at, ctx.model)
        recorder = None
        if ctx.cache_plan is not None:
            recorder = StreamRecorder(self.gateway.config.cache.max_entry_bytes)
        restoring = RestoringStream(ctx.placeholders) if ctx.placeholders else None
        ctx.first_byte_at = time.perf_counter()
        await send({"type": "http.response.body", "body": events.start(), "more_body": True})
        tail = b""
        try:
            async for chunk in upstream.aiter_raw():
                if recorder is not None:
                    recorder.feed(chunk)
                if restoring is not None:
                    chunk = restoring.feed(chunk)
                out = events.feed(chunk) if chunk else b""
                if events.finished:
                    tail = out  # the last event waits until the response is stored
                    break
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            if restoring is not None and not events.finished:
                tail = events.feed(restoring.flush())
            tail += events.close()
        except httpx.HTTPError as exc:
            failure = self._upstream_failed(provider, exc)
            tail = events.fail(f"{failure.message}")
        response = turn.response = events.response
        await self.store_turn(turn)
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        ctx.usage = events.usage if isinstance(events.usage, dict) else None
        if response is not None and response.get("status") == "failed":
            ctx.error_code = ctx.error_code or "upstream_error"  # the breaker counts it
        elif recorder is not None:
            ctx.cache_answer = recorder.answer()

    # ----------------------------------------------------------------- cache hits

    async def replay(self, ctx: RequestContext, answer: Answer, send: Send) -> None:
        """A cache hit, as a new response: fresh ids, no upstream call, no tokens spent."""
        turn = _turn(ctx)
        ctx.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        ctx.cost_usd = 0.0
        ctx.status = 200
        ctx.first_byte_at = time.perf_counter()
        if ctx.stream:
            events = ResponseStream(turn.request, turn.response_id, turn.created_at, answer.model)
            body = events.start() + events.feed(replay_stream(answer, True)) + events.close()
            turn.response = events.response
            headers = gateway_headers(ctx, b"text/event-stream") + _SSE_HEADERS
        else:
            chat = orjson.loads(replay_body(answer))
            turn.response = from_chat(chat, turn.request, turn.response_id, turn.created_at)
            body = orjson.dumps(turn.response)
            headers = gateway_headers(ctx, b"application/json")
        await self.store_turn(turn)
        await send_response(send, 200, body, headers)

    # ----------------------------------------------------------------- storing

    async def store_turn(self, turn: Turn) -> None:
        """Keep a completed (or incomplete) response for the next turn and for GET."""
        response = turn.response
        if not turn.store or response is None:
            return
        response_id = response.get("id")
        if not isinstance(response_id, str) or response.get("status") not in _STORED_STATUSES:
            return
        output = response.get("output")
        record = {
            "tenant": turn.tenant,
            "response": response,
            "input_items": turn.input_items,
            "conversation": [*turn.conversation, *(output if isinstance(output, list) else ())],
        }
        try:
            await self.store.put(response_id, encode(record))
        except StoreUnavailable as exc:
            self.gateway.metrics.redis_errors.labels("response_store").inc()
            self.gateway.log.warning("response_not_stored", id=response_id, error=str(exc)[:200])


def _turn(ctx: RequestContext) -> Turn:
    assert ctx.turn is not None  # ConversationStage ran
    return ctx.turn


class StoredResponses:
    """GET and DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items: the key that
    made a response may read it; to any other it does not exist."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def _record(self, request: Request) -> tuple[str, str, dict[str, Any]]:
        from gateway.endpoints import credentials

        principal = self.gw.auth.authenticate(*credentials(request))
        tenant = "key:" + principal.name
        response_id = request.path_params["response_id"]
        found = await read_record(self.gw.response_store, response_id, tenant)
        if found is None:
            raise NotFound(
                f"Response with id '{response_id[:128]}' not found.",
                param="response_id",
                code="response_not_found",
                type="invalid_request_error",
            )
        return tenant, response_id, found[0]

    async def get(self, request: Request) -> Response:
        _, _, record = await self._record(request)
        return _json(record["response"])

    async def delete(self, request: Request) -> Response:
        _, response_id, _ = await self._record(request)
        try:
            await self.gw.response_store.delete(response_id)
        except StoreUnavailable as exc:
            raise StateUnavailable(
                f"Stored responses are kept in Redis, which is unreachable: {exc}"
            ) from None
        return _json({"id": response_id, "object": "response.deleted", "deleted": True})

    async def input_items(self, request: Request) -> Response:
        _, _, record = await self._record(request)
        items: list[dict[str, Any]] = list(record.get("input_items") or ())
        query = request.query_params
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest(
                f"Invalid value for 'order': {order[:16]!r}. Supported values are: 'asc', 'desc'.",
                param="order",
                code="invalid_value",
            )
        limit_text = query.get("limit", "20")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
            raise InvalidRequest(
                "Invalid 'limit': expected an integer from 1 to 100.",
                param="limit",
                code="invalid_value",
            )
        if order == "desc":
            items.reverse()
        after = query.get("after")
        if after:
            ids = [item.get("id") for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[: int(limit_text)]
        return _json(
            {
                "object": "list",
                "data": page,
                "first_id": page[0].get("id") if page else None,
                "last_id": page[-1].get("id") if page else None,
                "has_more": len(items) > len(page),
            }
        )


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


__all__ = ["ResponsesEndpoint", "StoredResponses"]
