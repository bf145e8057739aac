"""ProxyEndpoint: the chain, then the upstream's bytes relayed to the client as they arrive."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from gateway.asgi import (
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    read_body,
    send_response,
    until_disconnect,
)
from gateway.cache.answer import (
    Answer,
    StreamRecorder,
    answer_from_data,
    replay_body,
    replay_stream,
)
from gateway.catalog import Target
from gateway.context import RequestContext
from gateway.drain import SHUTTING_DOWN
from gateway.errors import CircuitOpen, GatewayError, KeptLocal, UpstreamError
from gateway.providers.upstream import read_all
from gateway.restore import RestoringStream, restore_body
from gateway.stores import NANO
from gateway.wire import (
    StreamTap,
    UsageStripper,
    sse_error_event,
    upstream_error_body,
)

if TYPE_CHECKING:
    from gateway.chain import Stage
    from gateway.providers import Provider
    from gateway.runtime import Gateway

_MAX_ERROR_BODY = 1 << 20
# Upstream response headers worth passing on; everything else is the gateway's business.
_PASS_HEADERS = frozenset(
    {b"openai-processing-ms", b"openai-version", b"retry-after", b"retry-after-ms"}
)


def gateway_headers(ctx: RequestContext, content_type: bytes) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", content_type)]
    if ctx.provider:
        headers.append((b"x-gateway-provider", ctx.provider.encode()))
        headers.append((b"x-gateway-model", ctx.model.encode()))
    if ctx.limit_headers:
        headers.extend(ctx.limit_headers)
    if ctx.route_rule:
        headers.append((b"x-gateway-route-rule", ctx.route_rule.encode()))
        headers.append((b"x-gateway-privacy", ",".join(ctx.privacy_categories).encode() or b"none"))
        if ctx.complexity is not None:
            headers.append((b"x-gateway-complexity", f"{ctx.complexity:.2f}".encode()))
    if ctx.cost_usd is not None:
        cost = f"{ctx.cost_usd:.9f}".rstrip("0").rstrip(".")
        headers.append((b"x-gateway-cost-usd", cost.encode()))
    if ctx.attempts:
        tried = ", ".join(f"{target}={reason}" for target, reason in ctx.attempts)
        headers.append((b"x-gateway-fallback", tried.encode()))
    if ctx.cache_status:
        headers.append((b"x-gateway-cache", ctx.cache_status.replace("_", "-").encode()))
        if ctx.cache_similarity is not None:
            similarity = f"{ctx.cache_similarity:.4f}".encode()
            headers.append((b"x-gateway-cache-similarity", similarity))
    return headers


async def send_error(send: Send, ctx: RequestContext, exc: GatewayError) -> None:
    ctx.status = exc.status
    ctx.error_code = exc.code
    headers = gateway_headers(ctx, b"application/json")
    headers.extend((k.encode(), v.encode()) for k, v in exc.headers.items())
    await send_response(send, exc.status, exc.to_bytes(), headers)


def kept_local_failure(ctx: RequestContext, exc: GatewayError) -> GatewayError:
    """A local provider's failure, said so that the client knows why not the cloud."""
    return KeptLocal(
        f"This request was kept local ({ctx.privacy_reason}), and the local provider "
        f"{ctx.provider!r} could not serve it: {exc.message}",
        headers=exc.headers,
    )


class ProxyEndpoint:
    """One OpenAI POST endpoint (chat, completions, embeddings) as a pure ASGI app."""

    def __init__(self, gateway: Gateway, endpoint: str, upstream_path: str) -> None:
        self.gateway = gateway
        self.endpoint = endpoint
        self.upstream_path = upstream_path
        self.chain: list[Stage] = gateway.chain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gateway
        headers = scope["headers"]
        ctx = RequestContext(
            scope["request_id"], self.endpoint, self.upstream_path, headers, time.perf_counter()
        )
        gw.metrics.in_flight.inc()
        gw.active += 1
        try:
            ctx.raw_body = await read_body(scope, receive, gw.config.server.max_body_bytes)
            for stage in self.chain:
                await stage(ctx)
            if ctx.cached is not None:
                return await self.replay(ctx, ctx.cached, send)
            provider = gw.providers[ctx.provider]
            if ctx.keep_local and not provider.local:  # never, whatever a stage or rule did
                raise KeptLocal(
                    f"This request was kept local ({ctx.privacy_reason}) and will not be sent "
                    f"to the cloud provider {provider.name!r}."
                )
            if await until_disconnect(receive, self.forward(ctx, send)):
                ctx.status = 499  # client closed the request
        except GatewayError as exc:
            # Only the local provider's own failure is one; a limit or state error stays itself.
            upstream_failed = ctx.upstream_started is not None or isinstance(exc, CircuitOpen)
            if ctx.keep_local and upstream_failed and exc.status in (502, 503, 504):
                exc = kept_local_failure(ctx, exc)
            await send_error(send, ctx, exc)
        except ClientDisconnected:
            ctx.status = 499
        except asyncio.CancelledError:  # the drain's deadline: DrainGuard answers 503 or ends it
            ctx.error_code = SHUTTING_DOWN
            if ctx.status == 0:
                ctx.status = 503
            raise
        except Exception:
            # This endpoint runs outside Starlette's error middleware (app.py), so it is
            # its own last resort: log the traceback, answer an envelope if it still can.
            gw.log.exception("internal_error", request_id=ctx.request_id)
            if ctx.status == 0:
                await send_error(send, ctx, GatewayError("The gateway hit an internal error."))
            ctx.status = 500
        finally:
            gw.metrics.in_flight.dec()
            gw.active -= 1
            await self._settle(ctx)
            if ctx.cache_answer is not None and ctx.status == 200 and gw.cache is not None:
                await gw.cache.save(ctx, ctx.cache_answer)
            gw.finish(ctx)

    def turn_body(self, ctx: RequestContext, provider: Provider) -> bytes:
        """The body for `provider` of a request with a Responses turn; the Responses
        endpoint (gateway/responses/endpoint.py) builds it per provider's mode."""
        return ctx.upstream_body()

    async def _settle(self, ctx: RequestContext) -> None:
        """Tokens, lease, usage and spend; after the last byte, so the client never waits."""
        try:
            await self.gateway.limits.settle(ctx)
        except Exception:  # accounting must never turn a served request into an error
            self.gateway.log.exception("settle_failed", request_id=ctx.request_id)

    async def replay(self, ctx: RequestContext, answer: Answer, send: Send) -> None:
        """A cache hit: the stored answer, fresh id, no upstream call, no tokens spent."""
        ctx.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        ctx.cost_usd = 0.0
        ctx.status = 200
        ctx.first_byte_at = time.perf_counter()
        if ctx.stream:
            options = ctx.body.get("stream_options")
            asked = isinstance(options, dict) and options.get("include_usage") is True
            body = replay_stream(answer, asked and not ctx.strip_stream_usage)
            headers = gateway_headers(ctx, b"text/event-stream")
            headers += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        else:
            body = replay_body(answer)
            headers = gateway_headers(ctx, b"application/json")
        await send_response(send, 200, body, headers)

    async def forward(self, ctx: RequestContext, send: Send) -> None:
        """The route's target, then its fallbacks while one fails before the first byte."""
        targets = (Target(ctx.provider, ctx.model), *ctx.fallback)
        for i, target in enumerate(targets):
            provider = self.gateway.providers[target.provider]
            if i:
                if ctx.keep_local and not provider.local:
                    continue  # the router never lists one; checked again all the same
                ctx.provider = target.provider
                ctx.set_model(target.model)
                ctx.cache_plan = None  # stored under the first target's key, it would lie
            upstream = await self._attempt(ctx, provider, last=i == len(targets) - 1)
            if upstream is not None:
                await self._relay(ctx, provider, upstream, send)
                return

    async def _attempt(
        self, ctx: RequestContext, provider: Provider, last: bool
    ) -> httpx.Response | None:
        """The upstream's response, or None when it failed and another target is left."""
        # A Responses request is built for each provider (native or translated).
        body = ctx.upstream_body() if ctx.turn is None else self.turn_body(ctx, provider)
        breaker = provider.breaker
        if not breaker.allow():
            retry = max(int(breaker.retry_in + 0.999), 1)
            exc: GatewayError = CircuitOpen(
                f"Provider {provider.name!r} is failing fast: its circuit breaker is open "
                f"({breaker.reason}); it is tried again in {retry} s.",
                headers={"retry-after": str(retry)},
            )
            self._passed_over(ctx, provider, exc.code or "circuit_open", exc, last)
            return None
        ctx.upstream_started = time.perf_counter()
        try:
            upstream = await provider.send(ctx, body)
        except GatewayError as exc:
            breaker.record(True, exc.code or "error")
            self._passed_over(ctx, provider, exc.code or "error", exc, last)
            return None
        status = upstream.status_code
        if last or (status != 429 and status < 500):
            return upstream
        breaker.record(status >= 500, f"HTTP {status}")
        await upstream.aclose()
        self._passed_over(ctx, provider, f"http_{status}", None, last)
        return None

    def _passed_over(
        self,
        ctx: RequestContext,
        provider: Provider,
        reason: str,
        exc: GatewayError | None,
        last: bool,
    ) -> None:
        metrics = self.gateway.metrics
        kind = reason  # as a label: http_503 is counted as http_5xx
        if reason.startswith("http_") and reason != "http_429":
            kind = reason[:6] + "xx"
        if reason != "provider_circuit_open":
            metrics.upstream_errors.labels(provider.name, kind).inc()
        ctx.attempts.append((f"{ctx.provider}:{ctx.model}", reason))
        if last and exc is not None:
            raise exc
        metrics.fallbacks.labels(provider.name, kind).inc()

    async def _relay(
        self, ctx: RequestContext, provider: Provider, upstream: httpx.Response, send: Send
    ) -> None:
        failed, why = False, ""  # a client that hung up says nothing about the provider
        try:
            if upstream.status_code >= 400:
                await self._relay_error(ctx, provider, upstream, send)
            elif ctx.stream and upstream.headers.get("content-type", "").startswith(
                "text/event-stream"
            ):
                await self._relay_stream(ctx, provider, upstream, send)
            else:
                await self._relay_body(ctx, provider, upstream, send)
            failed = ctx.status >= 500 or (ctx.status < 400 and ctx.error_code is not None)
            why = ctx.error_code or f"HTTP {ctx.status}"
        except GatewayError as exc:  # the upstream broke or answered garbage
            failed, why = True, exc.code or "error"
            raise
        finally:
            ctx.upstream_done = time.perf_counter()
            await upstream.aclose()
            provider.breaker.record(failed, why)

    def _price(self, ctx: RequestContext) -> None:
        """The cost for `x-gateway-cost-usd`, when it is known from the answer's usage."""
        nano = self.gateway.pricing.known_cost_nano(ctx.provider, ctx.model, ctx.usage)
        if nano is not None:
            ctx.cost_usd = nano / NANO

    def _response_headers(
        self, ctx: RequestContext, upstream: httpx.Response, default_type: bytes
    ) -> list[tuple[bytes, bytes]]:
        content_type = upstream.headers.get("content-type")
        headers = gateway_headers(ctx, content_type.encode() if content_type else default_type)
        for key, value in upstream.headers.raw:
            name = key.lower()
            if name in _PASS_HEADERS:
                headers.append((name, value))
        return headers

    async def _relay_body(
        self, ctx: RequestContext, provider: Provider, upstream: httpx.Response, send: Send
    ) -> None:
        body, data = await self._read_json(provider, upstream)
        if ctx.placeholders:
            body = restore_body(body, ctx.placeholders)
        usage = data.get("usage") if isinstance(data, dict) else None
        ctx.usage = usage if isinstance(usage, dict) else None
        self._price(ctx)
        headers = self._response_headers(ctx, upstream, b"application/json")
        ctx.status = upstream.status_code
        ctx.first_byte_at = time.perf_counter()
        await send_response(send, upstream.status_code, body, headers)
        if ctx.cache_plan is not None:  # never redacted (not cached): the body as parsed
            ctx.cache_answer = answer_from_data(data)

    async def _relay_error(
        self, ctx: RequestContext, provider: Provider, upstream: httpx.Response, send: Send
    ) -> None:
        raw = b""
        try:
            async for chunk in upstream.aiter_raw():
                raw += chunk
                if len(raw) > _MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            pass  # the status is what matters; keep what arrived
        status = upstream.status_code
        error = upstream_error_body(status, raw, provider.name)
        if status in (401, 403):
            # The upstream refused the gateway's own credentials: not the client's fault.
            error["error"]["message"] = (
                f"Provider {provider.name!r} at {provider.base_url} rejected the gateway's "
                f"credentials (HTTP {status}): {error['error']['message']}"
            )
            error["error"]["type"], error["error"]["code"] = "server_error", "upstream_auth_failed"
            status = 502
        self.gateway.metrics.upstream_errors.labels(provider.name, f"http_{status // 100}xx").inc()
        ctx.status = status
        ctx.error_code = error["error"]["code"] or "upstream_error"
        headers = self._response_headers(ctx, upstream, b"application/json")
        headers[0] = (b"content-type", b"application/json")
        await send_response(send, status, orjson.dumps(error), headers)

    async def _relay_stream(
        self, ctx: RequestContext, provider: Provider, upstream: httpx.Response, send: Send
    ) -> None:
        headers = self._response_headers(ctx, upstream, b"text/event-stream")
        headers.append((b"cache-control", b"no-cache"))
        headers.append((b"x-accel-buffering", b"no"))
        ctx.status = upstream.status_code
        await send({"type": "http.response.start", "status": ctx.status, "headers": headers})
        tap = StreamTap()
        limit = self.gateway.config.cache.max_entry_bytes
        recorder = StreamRecorder(limit) if ctx.cache_plan is not None else None
        strip = UsageStripper() if ctx.strip_stream_usage else None
        restoring = RestoringStream(ctx.placeholders) if ctx.placeholders else None
        failure: GatewayError | None = None
        try:
            async for chunk in upstream.aiter_raw():
                if recorder is not None:
                    recorder.feed(chunk)  # as the upstream sent it, usage included
                if strip is not None:
                    chunk = strip.feed(chunk)
                if restoring is not None:
                    chunk = restoring.feed(chunk)
                if not chunk:
                    continue
                if ctx.first_byte_at is None:
                    ctx.first_byte_at = time.perf_counter()
                tap.feed(chunk)
                if tap.garbage:  # never passed on: the client gets the error event instead
                    failure = self._garbage(provider, "sent a stream event that is not JSON")
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            rest = strip.flush() if strip is not None and failure is None else b""
            if restoring is not None and failure is None:
                rest = restoring.feed(rest) + restoring.flush()
            if rest:
                tap.feed(rest)
                await send({"type": "http.response.body", "body": rest, "more_body": True})
        except httpx.HTTPError as exc:
            failure = self._upstream_failed(provider, exc)
        if failure is None and not tap.ended_cleanly:
            failure = GatewayError(
                f"Provider {provider.name!r} ended the stream without [DONE].",
                status=502,
                code="upstream_stream_incomplete",
            )
        tail = b""
        if failure is not None:
            # Never a silent cut that looks complete: end with an error event.
            ctx.error_code = failure.code
            cut = tap.ends_mid_event or tap.garbage  # a blank line more is harmless
            tail = (b"\n\n" if cut else b"") + sse_error_event(failure.to_dict())
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        ctx.usage = tap.usage or (strip.usage if strip is not None else None)
        if recorder is not None and failure is None:
            ctx.cache_answer = recorder.answer()

    async def _read_json(self, provider: Provider, upstream: httpx.Response) -> tuple[bytes, Any]:
        """The upstream's whole body and its JSON; one that is not JSON is a 502."""
        try:
            body = await read_all(upstream)
        except httpx.HTTPError as exc:
            raise self._upstream_failed(provider, exc) from None
        try:
            return body, orjson.loads(body)
        except orjson.JSONDecodeError:
            raise self._garbage(
                provider, f"answered HTTP {upstream.status_code} with a body that is not JSON"
            ) from None

    def _garbage(self, provider: Provider, what: str) -> GatewayError:
        self.gateway.metrics.upstream_errors.labels(provider.name, "invalid_response").inc()
        return UpstreamError(f"Provider {provider.name!r} {what}.")

    def _upstream_failed(self, provider: Provider, exc: BaseException) -> GatewayError:
        error = provider.failure(exc)
        self.gateway.metrics.upstream_errors.labels(provider.name, error.code or "error").inc()
        return error


def access_fields(ctx: RequestContext, now: float) -> dict[str, Any]:
    usage = ctx.usage or {}
    ttfb = ctx.first_byte_at
    return {
        "request_id": ctx.request_id,
        "key": ctx.principal,
        "endpoint": ctx.endpoint,
        "provider": ctx.provider or None,
        "model": ctx.model or None,
        "requested_model": ctx.requested_model[:128] or None,
        "stream": ctx.stream,
        "status": ctx.status,
        "error": ctx.error_code,
        "latency_ms": round((now - ctx.started) * 1000, 2),
        "ttfb_ms": round((ttfb - ctx.started) * 1000, 2) if ttfb else None,
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "tier": ctx.key.tier if ctx.key else None,
        "team": (ctx.key.team or None) if ctx.key else None,
        "cost_usd": ctx.cost_usd,
        "rule": ctx.route_rule or None,
        "complexity": None if ctx.complexity is None else round(ctx.complexity, 3),
        "privacy": list(ctx.privacy_categories),
        "cache": ctx.cache_status or None,
        "fallback": [{"target": t, "reason": r} for t, r in ctx.attempts] or None,
    }
