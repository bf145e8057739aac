"""Runtime: the Gateway that serves new requests, swapped whole on a config reload.

A reload (the file changed, SIGHUP, `POST /admin/reload`) reads and validates the file;
an invalid one changes nothing and every error is logged with its line. A valid one
builds a new Gateway that keeps what did not change (providers and their connection
pools, metrics, limit windows and spend, cached answers), and one reference is swapped:
requests and streams in flight finish on the Gateway they started on, and the parts only
the old one used are closed once it is idle.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import endpoints
from gateway.cache.service import ResponseCache, build_cache
from gateway.catalog import ModelCatalog
from gateway.chain import Stage, build_chain, decision_stages
from gateway.chain.auth import AuthStage
from gateway.chain.limits import LimitStage
from gateway.config import ConfigError, GatewayConfig, load_config, workers_problems
from gateway.context import RequestContext
from gateway.feed import DecisionFeed
from gateway.observability import Metrics, child, configure_logging, get_logger
from gateway.pricing import Pricing
from gateway.providers import Provider
from gateway.providers.breaker import OPEN, STATE_VALUES, CircuitBreaker
from gateway.proxy import ProxyEndpoint, access_fields
from gateway.responses.endpoint import ResponsesEndpoint, StoredResponses
from gateway.responses.store import ResponseStore, build_response_store
from gateway.responses.turn import ConversationStage
from gateway.stores import Store, build_store


class Gateway:
    """What every request needs, built once from config."""

    def __init__(self, config: GatewayConfig, previous: Gateway | None = None) -> None:
        """With `previous` (a reload), what did not change is kept: providers with the same
        settings (their connection pools and breakers), the metrics, the shared-state store
        (limit windows, spend) and the cache's storage."""
        self.config = config
        self.catalog = ModelCatalog.from_config(config)
        old = previous.config if previous is not None else None
        self.metrics: Metrics = previous.metrics if previous is not None else Metrics()
        # The console's feed of finished requests outlives a reload, as the metrics do.
        self.feed: DecisionFeed = previous.feed if previous is not None else DecisionFeed()
        self.log = get_logger()
        self.providers: dict[str, Provider] = {}
        for name, settings in config.providers.items():
            if previous is not None and old is not None and old.providers.get(name) == settings:
                self.providers[name] = previous.providers[name]
                continue
            provider = self.providers[name] = Provider(name, settings)
            provider.breaker = CircuitBreaker(settings.breaker, self._breaker_changed(name))
            self.metrics.breaker_state.labels(name).set(0)
        self._known_models = {m for models in self.catalog.providers.values() for m in models}
        # Shared state is kept whole when its settings did not change.
        kept = previous if previous is not None and old and old.state == config.state else None
        self.redis: Any = kept.redis if kept else redis_client(config.state.redis_url)
        # Events are built only when they will be written (info is the level they log at).
        self._log_info = config.logging.level in ("debug", "info")
        self.store: Store = kept.store if kept else build_store(self.redis, config.state.key_prefix)
        self.pricing = Pricing(config)
        # One AuthStage: the chain's first stage, also asked by /v1/models and /admin.
        self.auth = AuthStage(config.auth)
        self.limits = LimitStage(config, self.store, self.pricing, self.metrics, self.log)
        self.decision_stages = decision_stages(config, self.catalog, self.metrics)
        entries = kept.cache.store if kept is not None and kept.cache is not None else None
        self.cache: ResponseCache | None = build_cache(
            config, self.providers, self.metrics, self.pricing, self.log, store=entries
        )
        self.chain: list[Stage] = build_chain(
            self.auth, self.decision_stages, self.limits, self.cache
        )
        self.response_store: ResponseStore = self._response_store(config, kept)
        # /v1/responses: chat's chain with the conversation resolved right after parse.
        parse, *decide = self.decision_stages
        conversation = ConversationStage(self.response_store)
        self.responses_chain: list[Stage] = build_chain(
            self.auth, [parse, conversation, *decide], self.limits, self.cache
        )
        self.active = 0  # requests in flight on this runtime (a reload waits for them)

    def _response_store(self, config: GatewayConfig, kept: Gateway | None) -> ResponseStore:
        """Stored responses outlive a reload (kept on the same state); the new TTL applies."""
        settings = config.responses
        if kept is None:
            return build_response_store(
                self.redis, config.state.key_prefix, settings.store_ttl_seconds, settings.max_items
            )
        kept.response_store.configure(settings.store_ttl_seconds, settings.max_items)
        return kept.response_store

    def _breaker_changed(self, provider: str) -> Callable[[str, str, str], None]:
        def changed(before: str, state: str, reason: str) -> None:
            self.metrics.breaker_state.labels(provider).set(STATE_VALUES[state])
            self.metrics.breaker_transitions.labels(provider, state).inc()
            log = self.log.warning if state == OPEN else self.log.info
            log("breaker_" + state, provider=provider, previous=before, reason=reason)

        return changed

    def finish(self, ctx: RequestContext) -> None:
        """After the last byte: metrics and one access log event."""
        now = time.perf_counter()
        provider = ctx.provider or "none"
        model = ctx.model if ctx.model in self._known_models else "other"
        m = self.metrics
        stream = "true" if ctx.stream else "false"
        status = "499" if ctx.status == 499 else f"{ctx.status // 100}xx"
        child(m.requests, ctx.endpoint, provider, model, stream, status).inc()
        if ctx.error_code in _REJECTIONS:
            child(m.rejections, _REJECTIONS[ctx.error_code]).inc()
        child(m.latency, ctx.endpoint, provider, stream).observe(now - ctx.started)
        if ctx.first_byte_at is not None:
            child(m.ttfb, ctx.endpoint, provider, stream).observe(ctx.first_byte_at - ctx.started)
        if ctx.upstream_started is not None:
            waited = (ctx.upstream_done or now) - ctx.upstream_started
            child(m.upstream_latency, ctx.endpoint, provider, stream).observe(waited)
        if ctx.usage:
            for kind in ("prompt_tokens", "completion_tokens"):
                value = ctx.usage.get(kind)
                if isinstance(value, int) and value > 0:
                    child(m.tokens, provider, model, kind.removesuffix("_tokens")).inc(value)
        if ctx.route_rule:
            child(m.decisions, ctx.route_rule, provider).inc()
            if self._log_info:
                self.log.info("routing_decision", **decision_fields(ctx))
        self.feed.record(ctx, now)
        if self.config.logging.access_log and self._log_info:
            self.log.info("access", **access_fields(ctx, now))

    async def aclose(self, keep: Gateway | None = None) -> None:
        """Close connections and stores, but those `keep` (the runtime after a reload) uses."""
        kept_providers = {id(p) for p in keep.providers.values()} if keep else set()
        for provider in self.providers.values():
            if id(provider) not in kept_providers:
                await provider.aclose()
        kept_cache = keep.cache.store if keep is not None and keep.cache is not None else None
        if self.cache is not None and self.cache.store is not kept_cache:
            await self.cache.aclose()
        if self.redis is not None and (keep is None or keep.redis is not self.redis):
            await self.redis.aclose()


_REJECTIONS = {
    "invalid_api_key": "invalid_api_key",
    "model_not_allowed": "model_not_allowed",
    "rate_limit_exceeded": "rate_limited",
    "insufficient_quota": "budget_exceeded",
    "state_unavailable": "state_unavailable",
}


def decision_fields(ctx: RequestContext) -> dict[str, Any]:
    """The routing_decision event: rule, score and factors, categories and counts; no values."""
    by_detector: dict[str, int] = {}
    for finding in ctx.findings:
        by_detector[finding.detector] = by_detector.get(finding.detector, 0) + 1
    factors = ctx.complexity_factors
    return {
        "request_id": ctx.request_id,
        "key": ctx.principal,
        "requested_model": ctx.requested_model[:128],
        "rule": ctx.route_rule,
        "provider": ctx.provider,
        "model": ctx.model,
        "complexity": None if ctx.complexity is None else round(ctx.complexity, 3),
        "factors": {k: round(v, 3) for k, v in factors.items()} if factors else None,
        "privacy_level": ctx.privacy_level or None,
        "privacy": list(ctx.privacy_categories),
        "findings": by_detector,
        "privacy_action": ctx.privacy_action,
        "keep_local": ctx.keep_local,
        "redacted": ctx.redacted,
        "fallback_chain": [f"{t.provider}:{t.model}" for t in ctx.fallback] or None,
        "fallback": [{"target": t, "reason": r} for t, r in ctx.attempts] or None,
    }


def redis_client(url: str) -> Any:
    """The shared-state connection pool, or None for in-memory state.

    Short timeouts: admission waits on Redis, so a hung Redis must fail fast and let
    state.on_redis_error decide.
    """
    if not url:
        return None
    import redis.asyncio

    return redis.asyncio.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)


# The proxied endpoints: path → (endpoint name, path under the provider's base URL).
PROXIED = {
    "/v1/chat/completions": ("chat", "/chat/completions"),
    "/v1/completions": ("completions", "/completions"),
    "/v1/embeddings": ("embeddings", "/embeddings"),
    "/v1/responses": ("responses", "/responses"),  # or /chat/completions, translated
}


class Served:
    """One config's Gateway with the endpoints bound to it; a request keeps the one it
    started on, whatever a reload does meanwhile."""

    def __init__(self, config: GatewayConfig, previous: Served | None = None) -> None:
        self.gateway: Gateway = Gateway(config, previous.gateway if previous else None)
        self.endpoints = endpoints.Endpoints(self.gateway)
        self.proxied = {
            path: (ResponsesEndpoint if name == "responses" else ProxyEndpoint)(
                self.gateway, name, upstream
            )
            for path, (name, upstream) in PROXIED.items()
        }
        self.stored_responses = StoredResponses(self.gateway)


_WATCH_SECONDS = 1.0  # how often the file is looked at
_RETIRE_LIMIT = 600.0  # an old runtime's parts are closed after this even if still busy


class Runtime:
    def __init__(self, config: GatewayConfig, path: str | None = None) -> None:
        self.path = Path(path) if path else None
        self.served = Served(config)
        self._digest = self._read_digest()
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[Any]] = set()
        self.started_at = time.time()
        # What the console and /admin/reload report.
        self.last_reload: dict[str, Any] = {"at": None, "ok": None, "trigger": None, "errors": []}

    @property
    def gateway(self) -> Gateway:
        return self.served.gateway

    def _read_digest(self) -> str:
        if self.path is None:
            return ""
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return ""

    async def reload(self, trigger: str) -> tuple[bool, list[str]]:
        """Validate the file and swap it in; (ok, errors). Never raises for a bad file."""
        if self.path is None:
            return False, ["the gateway was started without a config file"]
        async with self._lock:
            old = self.served
            log, metrics = old.gateway.log, old.gateway.metrics
            try:
                config = load_config(self.path)
                # The workers running, not the file's count: it takes a restart to change.
                workers = int(os.environ.get("GATEWAY_WORKERS") or 1)
                problems = workers_problems(config, workers)
                if problems:
                    raise ConfigError(problems)
            except (ConfigError, OSError) as exc:
                errors = exc.errors if isinstance(exc, ConfigError) else [str(exc)]
                for error in errors:
                    log.error("config_invalid", path=str(self.path), error=error, trigger=trigger)
                metrics.config_reloads.labels("invalid").inc()
                self._record(trigger, False, errors)
                return False, errors
            self._digest = self._read_digest()
            before = old.gateway.config.server
            restart = [
                k for k in ("host", "port", "workers")
                if getattr(config.server, k) != getattr(before, k)
            ]  # fmt: skip
            if restart:
                log.warning("config_needs_restart", settings=[f"server.{k}" for k in restart])
            configure_logging(config.logging)
            self.served = Served(config, previous=old)
            metrics.config_reloads.labels("ok").inc()
            log.info("config_reloaded", path=str(self.path), trigger=trigger)
            self._record(trigger, True, [])
            task = asyncio.create_task(self._retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            return True, []

    def _record(self, trigger: str, ok: bool, errors: list[str]) -> None:
        self.last_reload = {"at": time.time(), "ok": ok, "trigger": trigger, "errors": errors}
        metrics = self.served.gateway.metrics
        metrics.config_last_reload.set(time.time())
        metrics.config_last_reload_ok.set(1 if ok else 0)

    async def _retire(self, old: Served) -> None:
        """Close what only the old runtime used, once its last request is done."""
        deadline = time.monotonic() + _RETIRE_LIMIT
        while old.gateway.active and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await old.gateway.aclose(keep=self.served.gateway)

    def hangup(self) -> None:
        """SIGHUP: reload in the background (a signal handler must not block)."""
        task = asyncio.get_running_loop().create_task(self.reload("SIGHUP"))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def watch(self) -> None:
        """Reload when the file's content changes (a ConfigMap update swaps a symlink)."""
        while True:
            await asyncio.sleep(_WATCH_SECONDS)
            digest = self._read_digest()
            if digest and digest != self._digest:
                self._digest = digest
                await self.reload("file changed")

    async def aclose(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        await self.served.gateway.aclose()
