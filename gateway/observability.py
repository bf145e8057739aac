"""structlog set-up (JSON or console) and the Prometheus metrics, with bounded labels."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.config import LoggingConfig

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


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


def get_logger() -> Any:
    return structlog.get_logger("gateway")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by endpoint, provider, model and status class.",
            ["endpoint", "provider", "model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to last byte sent.",
            ["endpoint", "provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfb = Histogram(
            "gateway_time_to_first_byte_seconds",
            "Time from request to the first response byte sent.",
            ["endpoint", "provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "gateway_in_flight_requests", "Requests being served now.", registry=r
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
