"""LimitStage: tiers, provider limits and monthly budgets, admitted in one atomic step.

At admission: budgets (key and team), every window of the key's tier and of the routed
provider, and the concurrency lease, in one store call (one Redis round trip). Tokens
are reserved as an estimate (prompt bytes / 4, plus max_tokens or the configured
default) and settled with the upstream's real usage after the last byte.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.chain.auth import Principal
from gateway.config import GatewayConfig
from gateway.context import RequestContext
from gateway.errors import QuotaExceeded, RateLimited, StateUnavailable
from gateway.observability import Metrics
from gateway.pricing import Pricing, token_count
from gateway.stores import (
    NANO,
    Admission,
    Budget,
    Check,
    Settlement,
    Store,
    StoreUnavailable,
    UsageDelta,
    Window,
    WindowState,
)

_WINDOWS = (
    ("requests_per_minute", 60),
    ("requests_per_hour", 3600),
    ("requests_per_day", 86400),
    ("tokens_per_minute", 60),
)
_PERIOD = {60: "minute", 3600: "hour", 86400: "day"}
_WARN_AT = 0.8
_NO_RETRY = {"x-should-retry": "false"}  # the openai SDKs obey it instead of retrying a 429


def windows_of(limits: Any) -> tuple[Window, ...]:
    """The windows a tier or provider limit sets; absent limits are unlimited."""
    out = []
    for name, seconds in _WINDOWS:
        value = getattr(limits, name, None)
        if value is not None:
            out.append(Window(name, seconds, value, tokens=name.startswith("tokens")))
    return tuple(out)


def duration(ms: int) -> str:
    """OpenAI's reset format: 20ms, 1s, 6m0s, 1h2m3s."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    seconds = ms / 1000
    if seconds < 60:
        shown = f"{seconds:.3g}"  # 59.95 s rounds to 60: say it as a minute
        return f"{shown}s" if shown != "60" else "1m0s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"


_month: list[Any] = [0.0, ""]  # (valid until, "YYYY-MM"): strftime costs more than a lookup


def usd(nano: int) -> str:
    """An amount for messages: 0.024 stays 0.024 (not 0.02), 25 stays 25."""
    return f"{nano / NANO:.6f}".rstrip("0").rstrip(".")


def month_now() -> str:
    """This UTC month, "YYYY-MM": spend and budgets renew when it changes."""
    now = time.time()
    if now >= _month[0]:
        _month[1] = datetime.fromtimestamp(now, UTC).strftime("%Y-%m")
        _month[0] = now + 1.0
    return str(_month[1])


@dataclass(frozen=True, slots=True)
class Plan:
    """What applies to one (key, provider) pair, built once and reused."""

    checks: tuple[Check, ...]
    budgets: tuple[Budget, ...]
    usage_scopes: tuple[str, ...]
    tokens: bool  # some window counts tokens
    leases: tuple[str, ...]  # scopes holding a concurrency lease


class LimitStage:
    def __init__(
        self, config: GatewayConfig, store: Store, pricing: Pricing, metrics: Metrics, log: Any
    ) -> None:
        self.config = config
        self.store = store
        self.pricing = pricing
        self.metrics = metrics
        self.log = log
        self.deny_on_error = config.state.on_redis_error == "deny"
        self.default_completion = config.limits.default_completion_tokens
        self.lease_ms = int(config.limits.lease_seconds * 1000)
        self._plans: dict[tuple[str, str], Plan] = {}
        self._unpriced_logged: set[tuple[str, str]] = set()
        self._metric_children: dict[str, Any] = {}  # bounded: key names and budget scopes
        self._last_error_log = 0.0

    # ------------------------------------------------------------------ admission

    def plan(self, key: Principal, provider: str) -> Plan:
        plan = self._plans.get((key.name, provider))
        if plan is None:
            plan = self._plans[(key.name, provider)] = self._build_plan(key, provider)
        return plan

    def _build_plan(self, key: Principal, provider: str) -> Plan:
        checks = []
        tier = self.config.tiers.get(key.tier)
        if tier is not None:
            windows = windows_of(tier)
            if windows or tier.max_concurrent is not None:
                label = f"key '{key.name}' (tier {key.tier})"
                checks.append(Check(f"key:{key.name}", label, windows, tier.max_concurrent))
        limit = self.config.provider_limits.get(provider)
        if limit is not None and windows_of(limit):
            checks.append(Check(f"provider:{provider}", f"provider '{provider}'",
                                windows_of(limit)))  # fmt: skip
        budgets = []
        if key.monthly_budget_usd is not None:
            budgets.append(Budget(f"key:{key.name}", f"key '{key.name}'",
                                  round(key.monthly_budget_usd * NANO)))  # fmt: skip
        team = self.config.teams.get(key.team) if key.team else None
        if team is not None and team.monthly_budget_usd is not None:
            budgets.append(Budget(f"team:{key.team}", f"team '{key.team}'",
                                  round(team.monthly_budget_usd * NANO)))  # fmt: skip
        scopes = (f"key:{key.name}",) + ((f"team:{key.team}",) if key.team else ())
        return Plan(
            tuple(checks),
            tuple(budgets),
            scopes,
            any(w.tokens for c in checks for w in c.windows),
            tuple(c.scope for c in checks if c.max_concurrent is not None),
        )

    def estimate_tokens(self, ctx: RequestContext) -> int:
        """Prompt (body bytes / 4, an over-estimate) plus the completion the request allows."""
        estimate = self.estimate_usage(ctx)
        return estimate["prompt_tokens"] + estimate["completion_tokens"]

    def estimate_usage(self, ctx: RequestContext) -> dict[str, int]:
        body = ctx.body
        if ctx.endpoint == "responses":
            completion = body.get("max_output_tokens")
        else:
            completion = body.get("max_completion_tokens") or body.get("max_tokens")
        if ctx.endpoint == "embeddings":
            completion = 0
        elif not isinstance(completion, int) or isinstance(completion, bool) or completion < 0:
            completion = self.default_completion
        return {"prompt_tokens": ctx.prompt_tokens_estimate, "completion_tokens": completion}

    async def __call__(self, ctx: RequestContext) -> None:
        key = ctx.key
        if key is None:
            return
        ctx.admitted_provider = ctx.provider
        plan = self.plan(key, ctx.provider)
        if not plan.checks and not plan.budgets and not self.deny_on_error:
            return  # nothing to admit; under `deny` the store is asked anyway (it must answer)
        tokens = self.estimate_tokens(ctx) if plan.tokens else 0
        for check in plan.checks:
            for window in check.windows:
                if window.tokens and tokens > window.limit:
                    raise RateLimited(
                        f"Request too large for {check.label}: it may use about {tokens} "
                        f"tokens, over the limit of {window.limit} tokens per minute. "
                        "Send a shorter prompt or a lower max_tokens.",
                        type="tokens",
                        headers=dict(_NO_RETRY),  # it can never pass: SDKs must not retry it
                    )
        lease_id = uuid.uuid4().hex if plan.leases else ""
        try:
            admission = await self.store.admit(
                plan.checks, plan.budgets, tokens, lease_id, self.lease_ms, month_now()
            )
        except StoreUnavailable as exc:
            self._store_failed("admit", exc)
            # state.on_redis_error: allow. Admitted without state, so settle still records it.
            ctx.admission = Admission(True)
            return
        if not admission.ok:
            raise self._refusal(admission)
        ctx.admission = admission
        ctx.reserved_tokens = tokens
        ctx.limit_headers = rate_limit_headers(admission.windows)
        ctx.lease_id = lease_id

    def _store_failed(self, op: str, exc: Exception) -> None:
        self.metrics.redis_errors.labels(op).inc()
        now = time.monotonic()
        if now - self._last_error_log > 10:  # one line per 10 s, not one per request
            self._last_error_log = now
            policy = "deny" if self.deny_on_error else "allow"
            self.log.error("redis_error", op=op, error=str(exc), on_redis_error=policy)
        if self.deny_on_error and op == "admit":
            raise StateUnavailable(
                "The gateway's shared state (Redis) is unreachable, and state.on_redis_error "
                "is 'deny': requests are refused until it is back."
            )

    def _refusal(self, admission: Admission) -> Exception:
        budget = admission.refused_budget
        if budget is not None:
            return QuotaExceeded(
                f"The monthly budget of ${usd(budget.limit_nano)} for {budget.label} is "
                "spent; it renews on the 1st of the month (UTC).",
                type="insufficient_quota",
                headers=dict(_NO_RETRY),  # retrying cannot help before the month ends
            )
        check = admission.refused_check
        assert check is not None
        retry_ms = max(admission.retry_ms, 1)
        headers = {"retry-after": str(math.ceil(retry_ms / 1000)), "retry-after-ms": str(retry_ms)}
        window = admission.refused_window
        if window is None:
            return RateLimited(
                f"Concurrency limit reached for {check.label}: {check.max_concurrent} "
                f"request{'s' if check.max_concurrent != 1 else ''} at a time. "
                f"Try again in {duration(retry_ms)}.",
                type="requests",
                headers=headers,
            )
        kind = "tokens" if window.tokens else "requests"
        headers |= {
            f"x-ratelimit-limit-{kind}": str(window.limit),
            f"x-ratelimit-remaining-{kind}": "0",
            f"x-ratelimit-reset-{kind}": duration(retry_ms),
        }
        return RateLimited(
            f"Rate limit reached for {check.label}: {window.limit} {kind} per "
            f"{_PERIOD[window.seconds]} ({window.field}). Try again in {duration(retry_ms)}.",
            type=kind,
            headers=headers,
        )

    # ----------------------------------------------------------------- settlement

    async def settle(self, ctx: RequestContext) -> None:
        """After the last byte: real tokens, the lease back, usage and spend added."""
        key = ctx.key
        if key is None or not ctx.admitted_provider:
            return
        # The plan admitted against: a fallback may have served from another provider.
        plan = self.plan(key, ctx.admitted_provider)
        if ctx.admission is None and (plan.checks or plan.budgets or self.deny_on_error):
            return  # refused at admission: nothing was served, reserved or leased
        usage = ctx.usage or {}
        prompt = token_count(usage.get("prompt_tokens"))
        completion = token_count(usage.get("completion_tokens"))
        failed = ctx.status >= 400 and ctx.status != 499
        billed = ctx.usage
        if billed is None and not failed:
            # Served, but no usage came back (the client hung up before the usage event,
            # or the upstream sent none): the estimate stands, as the token reservation does,
            # so a stream cut just before its usage event is never free.
            billed = self.estimate_usage(ctx)
        nano = self.pricing.cost_nano(ctx.provider, ctx.model, billed)
        if nano is not None:
            ctx.cost_usd = nano / NANO
        elif billed is not None:
            self._unpriced(ctx.provider, ctx.model)
        admission = ctx.admission
        delta = None
        if ctx.usage is not None:
            delta = prompt + completion - ctx.reserved_tokens
        elif failed:
            delta = -ctx.reserved_tokens  # nothing was generated: give the reservation back
        token_windows: list[tuple[WindowState, int]] = []
        if admission is not None and delta:
            token_windows = [(s, delta) for s in admission.windows if s.window.tokens]
        settlement = Settlement(
            token_windows,
            plan.leases if ctx.lease_id else (),
            ctx.lease_id,
            UsageDelta(
                plan.usage_scopes,
                prompt,
                completion,
                nano or 0,
                priced=nano is not None or billed is None,
            ),
        )
        try:
            spent = await self.store.settle(settlement, month_now())
        except StoreUnavailable as exc:
            self.metrics.usage_dropped.inc()
            self._store_failed("settle", exc)
            return
        spend, prompt_tokens, completion_tokens = self._key_metrics(key)
        if nano:
            spend.inc(nano / NANO)
        if prompt:
            prompt_tokens.inc(prompt)
        if completion:
            completion_tokens.inc(completion)
        for budget in plan.budgets:
            after = spent.get(budget.scope)
            if after is not None:
                self._watch_budget(budget, after - (nano or 0), after)

    def _key_metrics(self, key: Principal) -> tuple[Any, Any, Any]:
        """The key's labelled counters, looked up once (labels() costs a few µs a call)."""
        found = self._metric_children.get(key.name)
        if found is None:
            m, team = self.metrics, key.team or "-"
            found = self._metric_children[key.name] = (
                m.spend.labels(key.name, team),
                m.key_tokens.labels(key.name, team, "prompt"),
                m.key_tokens.labels(key.name, team, "completion"),
            )
        return found

    def _watch_budget(self, budget: Budget, before: int, after: int) -> None:
        kind, _, name = budget.scope.partition(":")
        gauge = self._metric_children.get(budget.scope)
        if gauge is None:
            gauge = self._metric_children[budget.scope] = self.metrics.budget_used.labels(
                kind, name
            )
        gauge.set(after / budget.limit_nano)
        for mark, event in ((_WARN_AT, "budget_warning"), (1.0, "budget_exhausted")):
            line = budget.limit_nano * mark
            if before < line <= after:  # exactly one replica sees each crossing
                self.metrics.budget_alerts.labels(kind, name, event).inc()
                self.log.warning(event, scope=budget.scope, used_usd=after / NANO,
                                 budget_usd=budget.limit_nano / NANO)  # fmt: skip

    def _unpriced(self, provider: str, model: str) -> None:
        self.metrics.unpriced.labels(provider).inc()
        if (provider, model) not in self._unpriced_logged and len(self._unpriced_logged) < 1000:
            self._unpriced_logged.add((provider, model))
            self.log.warning("unpriced_model", provider=provider, model=model,
                             hint="add it under pricing: in the config")  # fmt: skip


def rate_limit_headers(states: list[WindowState]) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* trio for requests and for tokens: the tightest window of each."""
    headers: list[tuple[bytes, bytes]] = []
    for kind in ("requests", "tokens"):
        tight = min(
            (s for s in states if s.window.tokens == (kind == "tokens")),
            key=lambda s: (s.remaining, s.reset_ms),
            default=None,
        )
        if tight is not None:
            headers += [
                (f"x-ratelimit-limit-{kind}".encode(), str(tight.window.limit).encode()),
                (f"x-ratelimit-remaining-{kind}".encode(), str(tight.remaining).encode()),
                (f"x-ratelimit-reset-{kind}".encode(), duration(tight.reset_ms).encode()),
            ]
    return headers
