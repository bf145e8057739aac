"""create_app(config): the Starlette routes over the Runtime (gateway/runtime.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import endpoints
from gateway.admin import Admin
from gateway.asgi import RequestIdMiddleware
from gateway.config import ConfigError, GatewayConfig, load_config, workers_problems
from gateway.drain import Drain, DrainGuard
from gateway.errors import GatewayError
from gateway.observability import configure_logging
from gateway.runtime import PROXIED, Gateway, Runtime

__all__ = ["Gateway", "create_app"]


def create_app(config: GatewayConfig, path: str | None = None) -> ASGIApp:
    """The app; with `path`, the config file is watched and reloaded (and on SIGHUP)."""
    configure_logging(config.logging)
    runtime = Runtime(config, path)
    admin = Admin(runtime)  # the console and its JSON
    server = config.server  # the drain's settings are read once, at start
    drain = Drain(server.drain_delay_seconds, server.drain_seconds, runtime.gateway.log)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gw = runtime.gateway
        log = gw.log
        if not gw.auth.enabled:
            log.info("auth_disabled", reason="no auth.api_keys or auth.keys: any client may call")
        for name, provider in gw.providers.items():
            if provider.missing:
                log.warning("provider_unconfigured", provider=name, reason=provider.missing)
        log.info(
            "started", providers=list(gw.providers), default_model=config.routing.default_model
        )
        drain.install()
        # What start-up built lives as long as the process: keep the collector off it
        # (the routing decision's p99 falls by about a third, bench/routing.py).
        gc.collect()
        gc.freeze()
        watcher = asyncio.create_task(runtime.watch()) if path else None
        if path:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGHUP, runtime.hangup)
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            await runtime.aclose()

    def current(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def call(request: Request) -> Response:
            response: Response = await getattr(runtime.served.endpoints, name)(request)
            return response

        return call

    async def reload(request: Request) -> Response:
        runtime.gateway.auth.authenticate_admin(*endpoints.credentials(request))
        ok, errors = await runtime.reload("admin")
        return endpoints.json_response(
            {"object": "config.reload", "ok": ok, "errors": errors}, 200 if ok else 400
        )

    async def not_post(request: Request) -> Response:  # FastPath answers the POSTs
        raise HTTPException(405)

    def stored(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def call(request: Request) -> Response:
            response: Response = await getattr(runtime.served.stored_responses, name)(request)
            return response

        return call

    routes = [
        *(Route(path, not_post, methods=["POST"]) for path in PROXIED),
        Route("/v1/models", current("list_models"), methods=["GET"]),
        Route("/v1/models/{model_id:path}", current("get_model"), methods=["GET"]),
        Route("/v1/responses/{response_id}", stored("get"), methods=["GET"]),
        Route("/v1/responses/{response_id}", stored("delete"), methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", stored("input_items"), methods=["GET"]),
        Route("/healthz", current("healthz"), methods=["GET"]),
        Route("/readyz", current("readyz"), methods=["GET"]),
        Route("/metrics", current("metrics"), methods=["GET"]),
        Route("/admin/usage", current("admin_usage"), methods=["GET"]),
        Route("/admin/cache", current("admin_cache_purge"), methods=["DELETE"]),
        Route("/admin/reload", reload, methods=["POST"]),
        Route("/gateway/explain", current("explain"), methods=["POST"]),
        Route("/admin/overview", admin.overview, methods=["GET"]),
        Route("/admin/decisions", admin.decisions, methods=["GET"]),
        Route("/admin/config", admin.config, methods=["GET"]),
        Route("/console", admin.console, methods=["GET"]),
        Route("/console/{name}", admin.console, methods=["GET"]),
    ]  # fmt: skip
    handlers: dict[Any, Any] = {
        HTTPException: endpoints.http_exception,
        GatewayError: endpoints.gateway_error,
        Exception: endpoints.internal_error,
    }
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.runtime = runtime
    app.state.drain = drain  # /readyz reads it
    return RequestIdMiddleware(DrainGuard(FastPath(runtime, app), drain))


class FastPath:
    """POSTs to the proxied paths skip Starlette's router and middleware (~7 % of CPU)."""

    def __init__(self, runtime: Runtime, app: ASGIApp) -> None:
        self.runtime = runtime
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] == "POST":
                endpoint = self.runtime.served.proxied.get(scope["path"])
                if endpoint is not None:
                    await endpoint(scope, receive, send)  # it writes its own access event
                    return
            if scope["path"].startswith("/v1/"):
                await self._logged(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _logged(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The rest of /v1/ (model lists, unknown paths, wrong methods) gets an access
        event too, so an operator sees failing client traffic."""
        started, status = time.perf_counter(), 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            gw = self.runtime.gateway
            if gw.config.logging.access_log:
                gw.log.info(
                    "access",
                    request_id=scope.get("request_id"),
                    method=scope["method"],
                    path=scope["path"][:200],
                    status=status,
                    latency_ms=round((time.perf_counter() - started) * 1000, 2),
                )


def app_from_env() -> ASGIApp:
    """uvicorn factory for worker processes: the config path comes from $GATEWAY_CONFIG."""
    path = os.environ.get("GATEWAY_CONFIG", "config.yaml")
    config = load_config(path)
    # The file may have changed since `serve` checked it: a worker refuses it as a reload does.
    problems = workers_problems(config, int(os.environ.get("GATEWAY_WORKERS") or 1))
    if problems:
        raise ConfigError(problems)
    return create_app(config, path)
