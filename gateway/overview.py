"""What GET /admin/overview reads from the Prometheus metrics: totals since start, and
rates, error rates and latency percentiles over the last minute or so.

The totals come from the metrics' exposition registry, so with several workers they are
the whole server's (prometheus-client's multiprocess mode adds the workers' files up).
Rates need two readings: every call keeps a snapshot at most every few seconds, and
compares the current totals with the oldest one still inside the window.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry

WINDOW_SECONDS = 60.0  # rates and percentiles look back about this far
_SNAPSHOT_EVERY = 5.0  # seconds between kept snapshots

Totals = dict[tuple[str, ...], float]

# Metric families read, by their name in prometheus-client (counters without _total).
_FAMILIES = frozenset(
    {
        "gateway_requests",
        "gateway_routing_decisions",
        "gateway_request_duration_seconds",
        "gateway_time_to_first_byte_seconds",
        "gateway_upstream_errors",
        "gateway_cache_lookups",
        "gateway_cache_saved_tokens",
        "gateway_cache_saved_usd",
        "gateway_rejections",
        "gateway_in_flight_requests",
    }
)
REJECTION_REASONS = (
    "invalid_api_key",
    "model_not_allowed",
    "rate_limited",
    "budget_exceeded",
    "state_unavailable",
)
CACHE_RESULTS = ("hit_exact", "hit_semantic", "miss", "bypass")


def read_totals(registry: CollectorRegistry) -> Totals:
    """The samples the overview needs, summed over the labels it does not show."""
    totals: Totals = {}

    def add(key: tuple[str, ...], value: float) -> None:
        totals[key] = totals.get(key, 0.0) + value

    for family in registry.collect():
        if family.name not in _FAMILIES:
            continue
        for s in family.samples:
            name, labels, value = s.name, s.labels, s.value
            if name == "gateway_requests_total":
                status = labels["status"]
                add(("requests", labels["provider"]), value)
                if status == "5xx":
                    add(("errors", labels["provider"]), value)
            elif name == "gateway_routing_decisions_total":
                add(("route", labels["rule"], labels["provider"]), value)
            elif name == "gateway_request_duration_seconds_bucket" and labels["stream"] == "false":
                add(("latency", labels["provider"], labels["le"]), value)
            elif name == "gateway_time_to_first_byte_seconds_bucket":
                add(("ttfb", labels["provider"], labels["le"]), value)
            elif name == "gateway_upstream_errors_total":
                add(("upstream_errors", labels["provider"]), value)
            elif name == "gateway_cache_lookups_total":
                add(("cache", labels["result"]), value)
            elif name == "gateway_cache_saved_tokens_total":
                add(("saved_tokens", labels["type"]), value)
            elif name == "gateway_cache_saved_usd_total":
                add(("saved_usd",), value)
            elif name == "gateway_rejections_total":
                add(("rejections", labels["reason"]), value)
            elif name == "gateway_in_flight_requests":
                add(("in_flight",), value)
    return totals


class RateWindow:
    """Snapshots of the totals, so that a reading can be turned into per-second rates."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._snapshots: deque[tuple[float, Totals]] = deque()

    def delta(self, now: float, totals: Totals) -> tuple[float, Totals] | None:
        """(seconds, increase of each total) since the oldest snapshot in the window; None
        on the first reading. A total that fell (a worker restarted) counts from zero."""
        snaps = self._snapshots
        while len(snaps) > 1 and now - snaps[1][0] >= self.window:
            snaps.popleft()  # keep one snapshot at least a window old, if there is one
        result = None
        if snaps:
            then, old = snaps[0]
            seconds = now - then
            if seconds > 0:
                diff = {k: v - old.get(k, 0.0) for k, v in totals.items()}
                result = seconds, {k: (v if v >= 0 else totals[k]) for k, v in diff.items()}
        if not snaps or now - snaps[-1][0] >= _SNAPSHOT_EVERY:
            snaps.append((now, totals))
        return result


def quantiles(
    buckets: Iterable[tuple[str, float]], qs: tuple[float, ...]
) -> dict[str, float] | None:
    """Quantiles in ms from cumulative histogram buckets, interpolated inside a bucket as
    Prometheus' histogram_quantile does; None without observations."""
    ordered = sorted((float(le), count) for le, count in buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    out: dict[str, float] = {}
    for q in qs:
        rank = q * total
        lower, below = 0.0, 0.0
        value = ordered[-1][0]
        for upper, count in ordered:
            if count >= rank:
                if math.isinf(upper):
                    value = lower  # past the last finite bucket: its bound is all we know
                else:
                    share = (rank - below) / (count - below) if count > below else 1.0
                    value = lower + (upper - lower) * share
                break
            lower, below = upper, count
        out[f"p{round(q * 100)}"] = round(value * 1000, 2)
    return out


class Overview:
    """Builds the metric part of GET /admin/overview; one per process, kept over reloads."""

    def __init__(self) -> None:
        self.rates = RateWindow()

    def read(self, registry: CollectorRegistry, providers: list[str]) -> dict[str, Any]:
        now = time.time()
        totals = read_totals(registry)
        found = self.rates.delta(now, totals)
        seconds, recent = found if found else (0.0, None)

        def total(*key: str) -> float:
            return totals.get(key, 0.0)

        def per_second(*key: str) -> float | None:
            if recent is None:
                return None
            return round(recent.get(key, 0.0) / seconds, 3)

        def histogram(source: Totals | None, kind: str, name: str) -> dict[str, float] | None:
            if source is None:
                return None
            rows = [(k[2], v) for k, v in source.items() if k[0] == kind and k[1] == name]
            return quantiles(rows, (0.5, 0.95, 0.99))

        rows = []
        for name in providers:
            errors = recent.get(("errors", name), 0.0) if recent else 0.0
            served = recent.get(("requests", name), 0.0) if recent else 0.0
            rows.append(
                {
                    "name": name,
                    "requests": int(total("requests", name)),
                    "errors": int(total("errors", name)),
                    "upstream_errors": int(total("upstream_errors", name)),
                    "requests_per_second": per_second("requests", name),
                    "error_rate": round(errors / served, 4) if served else None,
                    "latency_ms": histogram(recent, "latency", name),
                    "ttfb_ms": histogram(recent, "ttfb", name),
                }
            )
        counted = sorted(
            ((k, v) for k, v in totals.items() if k[0] == "route"), key=lambda kv: (-kv[1], kv[0])
        )
        routes = [
            {
                "rule": key[1],
                "provider": key[2],
                "requests": int(value),
                "requests_per_second": per_second(*key),
            }
            for key, value in counted
        ]
        lookups = {result: int(total("cache", result)) for result in CACHE_RESULTS}
        hits = lookups["hit_exact"] + lookups["hit_semantic"]
        asked = hits + lookups["miss"]
        return {
            "window_seconds": round(seconds, 1) if recent is not None else None,
            "in_flight": int(total("in_flight")),
            "providers": rows,
            "routes": routes,
            "cache": {
                "lookups": lookups,
                "hit_rate": round(hits / asked, 4) if asked else None,
                "saved_tokens": {
                    "prompt": int(total("saved_tokens", "prompt")),
                    "completion": int(total("saved_tokens", "completion")),
                },
                "saved_usd": round(total("saved_usd"), 9),
            },
            "rejections": {r: int(total("rejections", r)) for r in REJECTION_REASONS},
        }
