"""ResponseCache: look up a routed chat request, and store its answer when it completes.

Exact hits need the identical routed request. Semantic hits need the identical context
(tenant, target, parameters, earlier turns) and a last question whose embedding is at
least `threshold` similar and whose facts (numbers, dates, names, negation, units,
quantifiers, quoted text: guard.py) do not conflict. Any storage or embedding failure
skips the cache; the request goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.cache.answer import Answer
from gateway.cache.embed import BuiltinEmbedder, cosine
from gateway.cache.guard import DIGITS, Facts, conflict, digits_of, facts, other_digits
from gateway.cache.index import Entry, Projector, band_keys, close_items, sparse
from gateway.cache.keys import CacheKeys, cache_keys
from gateway.cache.store import CacheStore, MemoryCacheStore, RedisCacheStore
from gateway.config import GatewayConfig
from gateway.observability import child
from gateway.stores import NANO, StoreUnavailable

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.observability import Metrics
    from gateway.pricing import Pricing
    from gateway.providers import Provider

# The builtin embedder's threshold, measured on tests/data/cache_pairs.jsonl (docs/CACHE.md);
# neural embedders take the seed's 0.92.
BUILTIN_THRESHOLD = 0.75
NEURAL_THRESHOLD = 0.93
_MAX_COMPARED = 8  # entries compared by cosine per lookup, nearest hashes first
_FACTS_KEPT = 10_000  # candidates' facts kept in memory (cleared when full)
QUESTION = "question"  # a semantic entry's question, read by the guard when compared
_NO_TEMPERATURE = 1.0  # OpenAI's default when a request sets none


@dataclass(slots=True)
class CachePlan:
    """A miss to store once its answer is complete."""

    keys: CacheKeys
    prefix: str  # the tenant's part of every record name
    ttl: float
    vector: array[float] | None = None  # the embedding as stored (built at save)
    nonzero: list[tuple[int, float]] | None = None  # its nonzero coordinates, if sparse
    dimensions: int = 0
    simhash: int = 0
    lists: list[str] | None = None  # the band lists it is read from and filed under
    facts: Facts | None = None


class ProviderEmbedder:
    """A configured provider's embeddings model (`ollama:nomic-embed-text`)."""

    def __init__(self, provider: Provider, model: str, timeout: float) -> None:
        self.name = f"{provider.name}:{model}"
        self.local = provider.local
        self._provider, self._model, self._timeout = provider, model, timeout

    async def embed(self, text: str) -> list[float]:
        vector = await asyncio.wait_for(
            self._provider.embed(self._model, text, self._timeout), self._timeout
        )
        norm = sum(x * x for x in vector) ** 0.5
        return [x / norm for x in vector] if norm else vector


class _Builtin:
    name = "builtin"
    local = True

    def __init__(self) -> None:
        self._embedder = BuiltinEmbedder()
        self.dimensions = self._embedder.dimensions
        self.sparse_embed = self._embedder.sparse_embed  # no await, no dense vector

    async def embed(self, text: str) -> list[float]:
        vector: list[float] = self._embedder.embed(text)
        return vector


Embedder = ProviderEmbedder | _Builtin


def tenant_of(ctx: RequestContext, scope: str) -> str:
    """Whose answers a request may receive: its key, its team, or everyone's."""
    key = ctx.key
    name = key.name if key is not None else ctx.principal
    if ctx.keep_local or scope == "tenant" or key is None:
        return "key:" + name  # a request kept local is never shared beyond its key
    if scope == "team":
        return "team:" + key.team if key.team else "key:" + name
    return "shared"


def tenant_prefix(tenant: str) -> str:
    return hashlib.blake2b(tenant.encode(), digest_size=8).hexdigest() + ":"


class ResponseCache:
    def __init__(
        self,
        config: GatewayConfig,
        store: CacheStore,
        embedder: Embedder | None,
        metrics: Metrics,
        pricing: Pricing,
        log: Any,
    ) -> None:
        c = config.cache
        self.settings = c
        self.store = store
        self.embedder = embedder
        self.metrics = metrics
        self.pricing = pricing
        self.log = log
        default = BUILTIN_THRESHOLD if isinstance(embedder, _Builtin) else NEURAL_THRESHOLD
        self.threshold = c.semantic.threshold or default
        self._key_ttl = {k.name: k.cache_ttl_seconds for k in config.auth.keys}
        self._projectors: dict[int, Projector] = {}
        self._facts: dict[str, Facts] = {}  # candidates' facts, by entry digest

    def _bypass(self, ctx: RequestContext) -> bool:
        body = ctx.body
        if body.get("n", 1) != 1 or ctx.redacted:
            return True  # redacted placeholders look alike across different values
        temperature = body.get("temperature")
        if temperature is None:
            temperature = _NO_TEMPERATURE
        if not isinstance(temperature, int | float) or temperature > self.settings.max_temperature:
            return True
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
            return ctx.endpoint != "responses" or _responses_bypass(body)
        return messages[-1].get("role") in ("tool", "function")

    async def lookup(self, ctx: RequestContext) -> None:
        """Sets ctx.cache_status, and ctx.cached on a hit or ctx.cache_plan on a miss."""
        control = _cache_control(ctx.header(b"cache-control"))
        if self._bypass(ctx) or ("no-cache" in control and "no-store" in control):
            return self._result(ctx, "bypass")
        tenant = tenant_of(ctx, self.settings.scope)
        keys = cache_keys(tenant, ctx.provider, ctx.model, ctx.body)
        key = ctx.key
        ttl = (self._key_ttl.get(key.name) if key else None) or self.settings.ttl_seconds
        plan = CachePlan(keys, tenant_prefix(tenant), ttl)
        ctx.cache_plan = None if "no-store" in control else plan
        if "no-cache" in control:
            if ctx.cache_plan is not None and self._semantic_ok(ctx, keys):
                await self._embed(plan)  # the refreshed answer is filed for paraphrases too
            return self._result(ctx, "bypass")
        try:
            entry = await self.store.get(plan.prefix + "x:" + keys.exact)
            if entry is not None:
                return self._hit(ctx, entry, "hit_exact", None)
            if self._semantic_ok(ctx, keys):
                await self._semantic(ctx, plan)
                return None
        except StoreUnavailable as exc:
            self._failed("lookup", "store_unavailable", exc)
            ctx.cache_plan = None
            return self._result(ctx, "bypass")
        return self._result(ctx, "miss")

    def _semantic_ok(self, ctx: RequestContext, keys: CacheKeys) -> bool:
        """Whether the semantic layer may read this request's last question."""
        semantic = self.settings.semantic
        return bool(
            keys.context
            and self.embedder is not None
            and semantic.enabled
            and len(keys.question) <= semantic.max_question_chars
            # a question kept local must not reach a cloud embedder
            and (self.embedder.local or not ctx.keep_local)
        )

    async def _embed(self, plan: CachePlan) -> bool:
        """The question's embedding, SimHash and band lists into `plan`; False if the
        embedder failed (the request goes on, exact layer only)."""
        assert self.embedder is not None
        embedder = self.embedder
        if isinstance(embedder, _Builtin):
            plan.nonzero = embedder.sparse_embed(plan.keys.question)
            plan.dimensions = embedder.dimensions
        else:
            try:
                vector = await embedder.embed(plan.keys.question)
            except Exception as exc:  # timeout, upstream error, odd payload: skip, never fail
                self._failed("embed", type(exc).__name__, exc)
                return False
            plan.vector = array("f", vector)
            plan.dimensions = len(vector)
            plan.nonzero = sparse(plan.vector)
        plan.simhash = self._projector(plan.dimensions).simhash(plan.vector or (), plan.nonzero)
        plan.lists = [
            plan.prefix + "s:" + name for name in band_keys(plan.keys.context, plan.simhash)
        ]
        return True

    async def _semantic(self, ctx: RequestContext, plan: CachePlan) -> None:
        if not await self._embed(plan):
            return self._result(ctx, "miss")
        question, nonzero, lists = plan.keys.question, plan.nonzero, plan.lists or []
        band_lists = await self.store.read_lists(lists)
        names = close_items(band_lists, plan.simhash, _MAX_COMPARED)[:_MAX_COMPARED]
        if not names:
            return self._result(ctx, "miss")
        entries = await self.store.get_many([plan.prefix + "x:" + n for n in names])
        best: tuple[float, Entry] | None = None
        digits = digits_of(question)
        for name, entry in zip(names, entries, strict=True):
            if entry is None or entry.vector is None or len(entry.vector) != plan.dimensions:
                continue  # not an entry, or another embedder's (before a reload)
            similarity = cosine(plan.vector or (), entry.vector, nonzero)
            if similarity < self.threshold or (best is not None and similarity <= best[0]):
                continue
            if other_digits(digits, entry.facts.get(DIGITS, "")):
                continue  # other numbers: a near miss, known without the guard's full read
            if plan.facts is None:
                plan.facts = facts(question)  # only when a candidate is close enough
            if conflict(plan.facts, self._facts_of(name, entry.facts)) is None:
                best = (similarity, entry)
        if best is None:
            return self._result(ctx, "miss")
        return self._hit(ctx, best[1], "hit_semantic", best[0])

    def _facts_of(self, name: str, stored: dict[str, Any]) -> Facts:
        """A candidate's facts: read from its question the first time it is a candidate
        (saving an entry stores the question, not its facts: most are never compared)."""
        question = stored.get(QUESTION)
        if question is None:
            return Facts.from_json(stored)  # written by an earlier version
        found = self._facts.get(name)
        if found is None:
            if len(self._facts) >= _FACTS_KEPT:
                self._facts.clear()
            found = self._facts[name] = facts(question)
        return found

    def _projector(self, dimensions: int) -> Projector:
        projector = self._projectors.get(dimensions)
        if projector is None:
            projector = self._projectors[dimensions] = Projector(dimensions)
        return projector

    def _hit(
        self, ctx: RequestContext, entry: Entry, status: str, similarity: float | None
    ) -> None:
        answer = Answer.from_json(entry.answer)
        ctx.cached = answer
        ctx.cache_similarity = similarity
        ctx.cache_plan = None
        self._result(ctx, status)
        usage = answer.usage or {}
        for kind in ("prompt", "completion"):
            value = usage.get(f"{kind}_tokens")
            if isinstance(value, int) and value > 0:
                self.metrics.cache_saved_tokens.labels(kind).inc(value)
        nano = self.pricing.cost_nano(ctx.provider, ctx.model, usage)
        if nano:
            self.metrics.cache_saved_usd.inc(nano / NANO)

    def _result(self, ctx: RequestContext, status: str) -> None:
        ctx.cache_status = status
        child(self.metrics.cache_lookups, status).inc()

    async def save(self, ctx: RequestContext, answer: Answer) -> None:
        """File a completed answer (after its last byte reached the client)."""
        plan = ctx.cache_plan
        if plan is None:
            return
        facts_json = None
        vector = plan.vector
        if plan.lists is not None:  # a semantic entry
            question = plan.keys.question
            facts_json = {QUESTION: question, DIGITS: digits_of(question)}
            if vector is None:
                vector = array("f", bytes(4 * plan.dimensions))
                for index, value in plan.nonzero or ():
                    vector[index] = value
        entry = Entry(answer.to_json(), vector, facts_json, time.time())
        raw = entry.to_bytes()
        if len(raw) > self.settings.max_entry_bytes:
            return
        try:
            await self.store.put(
                plan.prefix + "x:" + plan.keys.exact,
                entry,
                plan.ttl,
                plan.lists or (),
                (plan.keys.exact, plan.simhash),
                self.settings.semantic.bucket_size,
                raw,
            )
        except StoreUnavailable as exc:
            self._failed("store", "store_unavailable", exc)
            return
        self.metrics.cache_stores.inc()
        usage = self.store.usage()
        if usage is not None:
            self.metrics.cache_entries.set(usage[0])
            self.metrics.cache_bytes.set(usage[1])

    async def purge(self, tenant: str | None) -> int:
        """Remove one tenant's answers (`key:<name>`, `team:<name>`, `shared`) or all."""
        removed = await self.store.purge(tenant_prefix(tenant) if tenant else "")
        usage = self.store.usage()
        if usage is not None:
            self.metrics.cache_entries.set(usage[0])
            self.metrics.cache_bytes.set(usage[1])
        return removed

    def _failed(self, op: str, reason: str, exc: BaseException) -> None:
        self.metrics.cache_errors.labels(op, reason).inc()
        self.log.warning("cache_skipped", op=op, reason=reason, error=str(exc)[:200])

    async def aclose(self) -> None:
        await self.store.aclose()


def _responses_bypass(body: dict[str, Any]) -> bool:
    """A Responses request (exact layer only; its input holds any resolved conversation):
    as for chat, one whose last item is a tool's output is not cached."""
    items = body.get("input")
    if isinstance(items, str):
        return not items
    if not isinstance(items, list) or not items or not isinstance(items[-1], dict):
        return True
    return items[-1].get("type") == "function_call_output"


def _cache_control(value: bytes | None) -> frozenset[str]:
    if not value:
        return frozenset()
    return frozenset(p.strip().split("=")[0] for p in value.decode("latin-1").lower().split(","))


def build_cache(
    config: GatewayConfig,
    providers: dict[str, Provider],
    metrics: Metrics,
    pricing: Pricing,
    log: Any,
    store: CacheStore | None = None,
) -> ResponseCache | None:
    """The cache, on `store` when given (a reload keeps the entries), else a new one."""
    c = config.cache
    if not c.enabled:
        return None
    if store is None:
        if config.state.redis_url:
            store = RedisCacheStore(config.state.redis_url, config.state.key_prefix + "cache:")
        else:
            store = MemoryCacheStore(c.max_items)
    elif isinstance(store, MemoryCacheStore):
        store.entries.max_items = c.max_items  # a reload may resize it
    embedder: Embedder | None = None
    if c.semantic.enabled:
        if c.semantic.embedder == "builtin":
            embedder = _Builtin()
        else:
            provider, _, model = c.semantic.embedder.partition(":")
            embedder = ProviderEmbedder(providers[provider], model, c.semantic.timeout_ms / 1000)
    return ResponseCache(config, store, embedder, metrics, pricing, log)
