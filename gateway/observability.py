"""structlog set-up (JSON or console) and the Prometheus metrics, with bounded labels."""

from __future__ import annotations

import importlib.metadata
import logging
import math
import os
import platform
import sys
from typing import Any

import orjson
import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.config import LoggingConfig

# Up to 300 s: a local model can stream that long.
_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
)  # fmt: skip


def configure_logging(cfg: LoggingConfig) -> None:
    level = getattr(logging, cfg.level.upper())
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if cfg.format == "json":
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
        factory: Any = structlog.BytesLoggerFactory(sys.stdout.buffer)
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty()))
        factory = structlog.PrintLoggerFactory(sys.stdout)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr, force=True)


def _version() -> str:
    try:
        return importlib.metadata.version("llm-gateway")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def get_logger() -> Any:
    return structlog.get_logger("gateway")


_CHILDREN: dict[tuple[Any, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, looked up once per label set: labels() validates and locks
    on every call (a few us), and the request path makes about ten such calls."""
    key = (metric, values)
    found = _CHILDREN.get(key)
    if found is None:
        if len(_CHILDREN) >= 10_000:  # label sets are bounded; this only guards memory
            _CHILDREN.clear()
        found = _CHILDREN[key] = metric.labels(*values)
    return found


class Metrics:
    """The gateway's metrics, in `registry`; /metrics renders `exposition`.

    With PROMETHEUS_MULTIPROC_DIR set (`gateway serve --workers N` sets it), every worker
    writes its values to files there and `exposition` adds up all the workers' (gauges by
    their multiprocess_mode); the process_* and python_gc_* collectors stay per process.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.exposition = CollectorRegistry() if shared else r
        if shared:
            MultiProcessCollector(self.exposition, path=shared)  # type: ignore[no-untyped-call]
        ProcessCollector(registry=self.exposition)  # process_*: CPU, memory, open fds
        PlatformCollector(registry=self.exposition)  # python_info
        GCCollector(registry=self.exposition)  # python_gc_*
        Gauge(
            "gateway_build_info",
            "The gateway's version and Python; always 1.",
            ["version", "python"],
            multiprocess_mode="max",
            registry=r,
        ).labels(_version(), platform.python_version()).set(1)
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by endpoint, provider, model, stream and status class "
            "(499: the client hung up).",
            ["endpoint", "provider", "model", "stream", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to last byte sent.",
            ["endpoint", "provider", "stream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfb = Histogram(
            "gateway_time_to_first_byte_seconds",
            "Time from request to the first response byte sent.",
            ["endpoint", "provider", "stream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "gateway_upstream_duration_seconds",
            "Time spent on the upstream call, from sending the request to its last byte "
            "relayed (a stream's pace is the upstream's); the gateway's own time is the "
            "request duration minus this.",
            ["endpoint", "provider", "stream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.provider_up = Gauge(
            "gateway_provider_up",
            "1 if the provider answered its last readiness probe, else 0.",
            ["provider"],
            multiprocess_mode="livemostrecent",
            registry=r,
        )
        self.ready = Gauge(
            "gateway_ready",
            "1 if the last readiness probe found the gateway ready (as /readyz), else 0.",
            multiprocess_mode="livemostrecent",
            registry=r,
        )
        self.ready.set(math.nan)  # not probed yet: no alert compares NaN as 0
        self.in_flight = Gauge(
            "gateway_in_flight_requests",
            "Requests being served now.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Upstream failures, by provider and kind.",
            ["provider", "kind"],
            registry=r,
        )
        self.tokens = Counter(
            "gateway_tokens",
            "Tokens reported by upstream usage, by provider, model and type.",
            ["provider", "model", "type"],
            registry=r,
        )
        self.rejections = Counter(
            "gateway_rejections",
            "Requests refused by policy, by reason: invalid_api_key, model_not_allowed, "
            "rate_limited, budget_exceeded, state_unavailable.",
            ["reason"],
            registry=r,
        )
        self.spend = Counter(
            "gateway_spend_usd",
            "Priced spend in USD, by key name and team ('-' for none).",
            ["key", "team"],
            registry=r,
        )
        self.key_tokens = Counter(
            "gateway_key_tokens",
            "Tokens by key name, team and type (prompt, completion).",
            ["key", "team", "type"],
            registry=r,
        )
        self.budget_used = Gauge(
            "gateway_budget_used_ratio",
            "Share of the monthly budget spent, by scope (key, team) and name.",
            ["scope", "name"],
            multiprocess_mode="livemostrecent",
            registry=r,
        )
        self.budget_alerts = Counter(
            "gateway_budget_alerts",
            "Budgets crossing 80 % (budget_warning) and 100 % (budget_exhausted).",
            ["scope", "name", "event"],
            registry=r,
        )
        self.unpriced = Counter(
            "gateway_unpriced_requests",
            "Responses from a cloud model with no price in `pricing:` (cost unknown).",
            ["provider"],
            registry=r,
        )
        self.decisions = Counter(
            "gateway_routing_decisions",
            "Routing decisions, by rule and provider.",
            ["rule", "provider"],
            registry=r,
        )
        self.privacy_findings = Counter(
            "gateway_privacy_findings",
            "Requests with privacy findings, by category (secret, pii, keyword, custom).",
            ["category"],
            registry=r,
        )
        self.complexity = Histogram(
            "gateway_complexity_score",
            "Complexity scores of `auto` requests.",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0),
            registry=r,
        )
        self.redis_errors = Counter(
            "gateway_redis_errors",
            "Shared-state (Redis) failures, by operation (admit, settle, usage).",
            ["op"],
            registry=r,
        )
        self.usage_dropped = Counter(
            "gateway_usage_dropped",
            "Requests whose usage and spend could not be recorded (Redis down).",
            registry=r,
        )
        self.cache_lookups = Counter(
            "gateway_cache_lookups",
            "Chat requests by cache result: hit_exact, hit_semantic, miss, bypass.",
            ["result"],
            registry=r,
        )
        self.cache_saved_tokens = Counter(
            "gateway_cache_saved_tokens",
            "Tokens that cache hits did not spend upstream, by type (prompt, completion).",
            ["type"],
            registry=r,
        )
        self.cache_saved_usd = Counter(
            "gateway_cache_saved_usd",
            "Priced cost that cache hits did not spend upstream, in USD.",
            registry=r,
        )
        self.cache_stores = Counter(
            "gateway_cache_stores",
            "Answers stored in the cache.",
            registry=r,
        )
        self.cache_entries = Gauge(
            "gateway_cache_entries",
            "Answers in the in-memory cache (not reported for Redis).",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.cache_bytes = Gauge(
            "gateway_cache_bytes",
            "Bytes of answers and embeddings in the in-memory cache (not reported for Redis).",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.cache_errors = Counter(
            "gateway_cache_errors",
            "Cache operations skipped, by operation (lookup, store, embed) and reason.",
            ["op", "reason"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "gateway_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 half-open (probing), 2 open.",
            ["provider"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.breaker_transitions = Counter(
            "gateway_breaker_transitions",
            "Circuit breaker changes, by provider and the state entered.",
            ["provider", "state"],
            registry=r,
        )
        self.fallbacks = Counter(
            "gateway_fallbacks",
            "Targets that failed before the first byte and were passed over, by provider "
            "and reason (connection, timeout, http_429, http_5xx, circuit_open).",
            ["provider", "reason"],
            registry=r,
        )
        self.config_reloads = Counter(
            "gateway_config_reloads",
            "Config reloads, by result: ok, or invalid (the running config stays).",
            ["result"],
            registry=r,
        )
        self.config_last_reload = Gauge(
            "gateway_config_last_reload_timestamp_seconds",
            "When the config was last reloaded or a reload was refused (Unix time).",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.config_last_reload_ok = Gauge(
            "gateway_config_last_reload_success",
            "1 if the last reload succeeded, 0 if the file was invalid.",
            multiprocess_mode="livemin",
            registry=r,
        )
