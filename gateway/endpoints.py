"""The small endpoints: model listing, health, readiness, metrics, and error pages."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiocache import SimpleMemoryCache
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.catalog import AUTO, Target
from gateway.chain.limits import month_now
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    StateUnavailable,
)
from gateway.explain import explain
from gateway.stores import NANO, StoreUnavailable

if TYPE_CHECKING:
    from gateway.runtime import Gateway


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


def error_response(exc: GatewayError) -> Response:
    return json_response(exc.to_dict(), exc.status, exc.headers)


def credentials(request: Request) -> tuple[bytes | None, bytes | None]:
    """The raw Authorization and api-key headers (bytes, as the chain sees them)."""
    headers = request.headers
    authorization, api_key = headers.get("authorization"), headers.get("api-key")
    return (
        None if authorization is None else authorization.encode("latin-1"),
        None if api_key is None else api_key.encode("latin-1"),
    )


def routed_providers(gw: Gateway) -> frozenset[str]:
    """Providers that count for readiness: where `auto` and the aliases go (mock: `auto` only)."""
    catalog = gw.catalog
    default = catalog.resolve(AUTO)
    targets = [catalog.resolve(alias) for alias in catalog.aliases]
    names = {
        t.provider for t in targets if t is not None and gw.providers[t.provider].type != "mock"
    }
    if default is not None:
        names.add(default.provider)
    return frozenset(names)


def readiness_summary(report: dict[str, Any]) -> dict[str, Any]:
    """What anyone may see: the status and ok/not-ok per part, no URLs, no error text."""
    summary: dict[str, Any] = {
        "status": report["status"],
        "providers": {
            name: {"ok": p["ok"], "breaker": p["breaker"]}
            for name, p in report["providers"].items()
        },
    }
    if "redis" in report:
        summary["redis"] = {"ok": report["redis"]["ok"]}
    return summary


def usage_row(row: dict[str, int], budget: float | None) -> dict[str, Any]:
    spend = row["cost_nano"] / NANO
    return {
        "requests": row["requests"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "total_tokens": row["prompt_tokens"] + row["completion_tokens"],
        "spend_usd": round(spend, 9),
        "unpriced_requests": row["unpriced"],
        "monthly_budget_usd": budget,
        "budget_left_usd": None if budget is None else round(max(budget - spend, 0.0), 9),
    }


_DRAINING = (
    "The gateway is shutting down: it finishes the requests in flight and takes no new ones."
)


def _model(model_id: str, owner: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owner}


class Endpoints:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self._readiness: tuple[float, dict[str, Any]] | None = None
        self._readiness_lock = asyncio.Lock()
        self._discovered = SimpleMemoryCache()
        self._routed = routed_providers(gateway)

    async def _authenticate(self, request: Request) -> None:
        self.gw.auth.authenticate(*credentials(request))

    async def explain(self, request: Request) -> Response:
        """The routing decision for a request body, without calling any upstream."""
        self.gw.auth.authenticate_admin(*credentials(request))
        body = await request.body()
        endpoint = request.query_params.get("endpoint", "chat")
        status, report = await explain(self.gw, body, endpoint, request.query_params.get("key"))
        return json_response(report, status)

    async def admin_usage(self, request: Request) -> Response:
        """This month's requests, tokens, spend and budget left, per key and per team."""
        self.gw.auth.authenticate_admin(*credentials(request))
        return json_response(await self.usage_report())

    async def usage_report(self) -> dict[str, Any]:
        """GET /admin/usage's body (the console's overview shows it too)."""
        auth = self.gw.auth
        config = self.gw.config
        keys = auth.principals() if auth.enabled else [auth.anonymous]
        teams = sorted({k.team for k in keys if k.team} | set(config.teams))
        month = month_now()
        scopes = [f"key:{k.name}" for k in keys] + [f"team:{t}" for t in teams]
        try:
            rows = await self.gw.store.usage(scopes, month)
        except StoreUnavailable as exc:
            self.gw.metrics.redis_errors.labels("usage").inc()
            raise StateUnavailable(f"Usage is kept in Redis, which is unreachable: {exc}") from None
        team_budgets = {t: config.teams[t].monthly_budget_usd for t in config.teams}
        return {
            "object": "usage",
            "month": month,
            "keys": [
                {"name": k.name, "tier": k.tier, "team": k.team or None}
                | usage_row(rows[f"key:{k.name}"], k.monthly_budget_usd)
                for k in keys
            ],
            "teams": [
                {"name": t} | usage_row(rows[f"team:{t}"], team_budgets.get(t)) for t in teams
            ],
        }

    async def admin_cache_purge(self, request: Request) -> Response:
        """DELETE /admin/cache[?key=NAME|team=NAME|shared=true]: purge one tenant, or all."""
        self.gw.auth.authenticate_admin(*credentials(request))
        cache = self.gw.cache
        if cache is None:
            raise InvalidRequest("The cache is off (cache.enabled: false).", code="cache_disabled")
        query = request.query_params
        given = [name for name in ("key", "team", "shared") if name in query]
        if len(given) > 1:
            raise InvalidRequest("Give at most one of key, team, shared.", param=given[1])
        tenant = None
        if given:
            name = given[0]
            value = query[name]
            if not value:
                raise InvalidRequest(f"{name} must not be empty.", param=name)
            tenant = "shared" if name == "shared" else f"{name}:{value}"
        try:
            removed = await cache.purge(tenant)
        except StoreUnavailable as exc:
            message = f"The cache is kept in Redis, which is unreachable: {exc}"
            raise StateUnavailable(message) from None
        tenant = tenant or "all"
        return json_response({"object": "cache.purge", "tenant": tenant, "removed": removed})

    async def list_models(self, request: Request) -> Response:
        await self._authenticate(request)
        catalog = self.gw.catalog
        listing = catalog.listing()
        for name, models in zip(self.gw.providers, await self._discover_all(), strict=True):
            # Pulled models not configured by name are still callable as provider:model.
            extra = [m for m in models if catalog.resolve(m) != Target(name, m)]
            listing += [(f"{name}:{m}", name) for m in extra]
        data = [_model(model_id, owner) for model_id, owner in listing]
        return json_response({"object": "list", "data": data})

    async def _discover_all(self) -> list[list[str]]:
        """What each Ollama host has pulled, callable as `<provider>:<model>`; cached 30 s."""

        async def one(name: str) -> list[str]:
            models: list[str] | None = await self._discovered.get(name)
            if models is None:
                models = await self.gw.providers[name].discover()
                await self._discovered.set(name, models, ttl=30)
            return models

        return list(await asyncio.gather(*(one(name) for name in self.gw.providers)))

    async def get_model(self, request: Request) -> Response:
        await self._authenticate(request)
        model_id = request.path_params["model_id"]
        target = self.gw.catalog.resolve(model_id)
        if target is None:
            raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
        return json_response(_model(model_id, target.provider))

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        drain = getattr(request.app.state, "drain", None)
        if drain is not None and drain.draining:  # shutting down: send new work elsewhere
            return json_response({"status": "draining", "message": _DRAINING}, 503)
        report = await self.readiness()
        # Breakers change between probe rounds: always their state now.
        providers = {
            name: {**result, "breaker": self.gw.providers[name].breaker.state}
            for name, result in report["providers"].items()
        }
        report = {**report, "providers": providers}
        status = 200 if report["status"] == "ready" else 503
        if self.gw.config.server.expose_details or self._is_admin(request):
            return json_response(report, status)
        return json_response(readiness_summary(report), status)

    def _is_admin(self, request: Request) -> bool:
        authorization, api_key = credentials(request)
        if authorization is None and api_key is None:
            return False
        try:
            self.gw.auth.authenticate_admin(authorization, api_key)
        except GatewayError:
            return False
        return True

    async def readiness(self) -> dict[str, Any]:
        ttl = self.gw.config.server.readiness_cache_seconds
        async with self._readiness_lock:  # one probe round at a time, shared by all callers
            cached = self._readiness
            if cached and time.monotonic() - cached[0] < ttl:
                return cached[1]
            names = list(self.gw.providers)
            results = await asyncio.gather(*(self.gw.providers[n].probe() for n in names))
            providers = dict(zip(names, results, strict=True))
            for name, result in providers.items():
                self.gw.metrics.provider_up.labels(name).set(1 if result["ok"] else 0)
            # Ready means a real upstream that `auto` or an alias routes to is usable;
            # the built-in mock counts only when it is what `auto` means.
            ready = any(providers[n]["ok"] for n in self._routed)
            report: dict[str, Any] = {"status": "", "providers": providers}
            if self.gw.redis is not None:
                report["redis"] = await self._probe_redis()
                if not report["redis"]["ok"]:
                    self.gw.metrics.redis_errors.labels("readiness").inc()
                    # Only `deny` stops serving when Redis is down; with `allow` the
                    # gateway still answers, so one Redis outage must not fail every pod.
                    ready = ready and self.gw.config.state.on_redis_error != "deny"
            report["status"] = "ready" if ready else "unavailable"
            self.gw.metrics.ready.set(1 if ready else 0)
            self._readiness = (time.monotonic(), report)
            return report

    async def _probe_redis(self) -> dict[str, Any]:
        """Shared state is configured, so replicas are only exact if Redis answers."""
        try:
            await asyncio.wait_for(self.gw.redis.ping(), 2.0)
            return {"ok": True, "error": None}
        except Exception as exc:  # any failure means not ready; say which
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    async def metrics(self, request: Request) -> Response:
        exposition = self.gw.metrics.exposition  # with several workers: all of them
        return Response(generate_latest(exposition), media_type=CONTENT_TYPE_LATEST)


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        # OpenAI's own answer to a path it does not serve: code unknown_url
        where = f"{request.method} {request.url.path}"
        message = f"Unknown request URL: {where}. Please check the URL for typos."
        return error_response(NotFound(message, code="unknown_url"))
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error = MethodNotAllowed(
            f"Method {request.method} is not allowed on {request.url.path}; use {allowed}.",
            headers={"allow": allowed} if allowed else None,
        )
        return error_response(error)
    return error_response(GatewayError(str(exc.detail), status=exc.status_code, code=None))


async def gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def internal_error(request: Request, exc: Exception) -> Response:
    return error_response(GatewayError("The gateway hit an internal error; see its logs."))
