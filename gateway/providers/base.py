"""Provider: one upstream (OpenAI, Ollama, or the built-in demo) behind one httpx client."""

from __future__ import annotations

import errno
import time
from typing import Any

import httpx

from gateway.config import ProviderConfig
from gateway.context import RequestContext
from gateway.errors import GatewayError, ProviderUnavailable, UpstreamError, UpstreamTimeout
from gateway.providers.breaker import CircuitBreaker
from gateway.providers.upstream import AiohttpUpstream

# Client headers never sent upstream: credentials, hop-by-hop, and what the gateway sets.
_DROP_HEADERS = frozenset(
    {
        b"authorization", b"api-key", b"cookie", b"proxy-authorization", b"host",
        b"content-length", b"content-type", b"accept-encoding", b"connection", b"keep-alive",
        b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"expect",
        b"x-request-id", b"openai-organization",
    }
)  # fmt: skip


def _transport(cfg: ProviderConfig, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    if cfg.type == "mock":
        from gateway.providers.demo import DemoTransport

        return DemoTransport()
    if cfg.transport == "aiohttp":
        return AiohttpUpstream(cfg.timeouts, limits=limits)
    return httpx.AsyncHTTPTransport(limits=limits)


def api_base(cfg: ProviderConfig) -> str:
    """The URL the OpenAI-style paths hang off: Ollama's is `<host>/v1`."""
    if cfg.type == "mock":
        return "http://demo.invalid/v1"
    base = cfg.base_url.rstrip("/")
    if cfg.type == "ollama" and not base.endswith("/v1"):
        base += "/v1"
    return base


class Provider:
    def __init__(self, name: str, cfg: ProviderConfig) -> None:
        self.name = name
        self.type = cfg.type
        self.local = cfg.is_local  # data sent here stays in-house
        self.breaker = CircuitBreaker(cfg.breaker)  # the Gateway adds metrics and logs
        self.base_url = api_base(cfg)
        self.display_url = self.base_url if cfg.type != "mock" else "built-in"
        hint = " (set OPENAI_API_KEY)" if name == "openai" else ""
        self.missing = (
            f"provider {name!r} has no api_key{hint} for {self.base_url}"
            if cfg.type == "openai" and not cfg.api_key
            else None
        )
        headers: dict[str, str] = {"content-type": "application/json"}
        headers["accept-encoding"] = "identity"  # bytes pass through to the client unchanged
        if cfg.api_key:
            headers["authorization"] = f"Bearer {cfg.api_key}"
        if cfg.organization:
            headers["openai-organization"] = cfg.organization
        headers.update({k.lower(): v for k, v in cfg.headers.items()})
        self._headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        # A client header the provider sets itself would reach the upstream twice.
        self._drop = _DROP_HEADERS | {k for k, _ in self._headers}
        self._get_headers = {k: v for k, v in headers.items() if k != "content-type"}
        t = cfg.timeouts
        limits = httpx.Limits(
            max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections
        )
        # The hot path calls the pool-owning transport directly: httpx.AsyncClient's layers
        # (URL merging, cookies, auth and redirect wrappers) cost ~80 us a request (bench/).
        self.transport = _transport(cfg, limits)
        self._timeout = {"connect": t.connect, "read": t.read, "write": t.write, "pool": t.pool}
        self._urls: dict[str, httpx.URL] = {}
        self.client = httpx.AsyncClient(
            transport=self.transport, timeout=httpx.Timeout(**self._timeout)
        )

    def _request_headers(self, ctx: RequestContext) -> list[tuple[bytes, bytes]]:
        drop = self._drop
        connection = ctx.header(b"connection")
        if connection:  # headers the client marked hop-by-hop
            drop = drop | {t.strip().lower() for t in connection.split(b",")}
        out = [(k, v) for k, v in ctx.headers if k not in drop]
        out.extend(self._headers)
        out.append((b"x-request-id", ctx.request_id.encode()))
        return out

    async def send(self, ctx: RequestContext, body: bytes) -> httpx.Response:
        """POST the body to `<base_url><ctx.upstream_path>`; the response body is not read yet."""
        if self.missing:
            raise ProviderUnavailable(self.missing)
        if isinstance(self.transport, AiohttpUpstream):
            try:
                return await self.transport.post(
                    self.base_url, ctx.upstream_path, self._request_headers(ctx), body
                )
            except httpx.HTTPError as exc:
                raise self.failure(exc) from None
        url = self._urls.get(ctx.upstream_path)
        if url is None:
            url = self._urls[ctx.upstream_path] = httpx.URL(self.base_url + ctx.upstream_path)
        request = httpx.Request(
            "POST",
            url,
            content=body,
            headers=self._request_headers(ctx),
            extensions={"timeout": self._timeout},
        )
        try:
            return await self.transport.handle_async_request(request)
        except httpx.HTTPError as exc:
            raise self.failure(exc) from None

    def failure(self, exc: BaseException) -> GatewayError:
        """Turn a transport exception into the error the client sees."""
        kind = classify(exc)
        where = f"provider {self.name!r} at {self.base_url}"
        if kind == "refused":
            return ProviderUnavailable(f"{where} is not reachable (connection refused).")
        if kind == "timeout":
            return UpstreamTimeout(f"{where} timed out: {type(exc).__name__}.")
        detail = str(exc) or type(exc).__name__
        return UpstreamError(f"{where} failed: {detail}.")

    async def probe(self, timeout: float = 2.0) -> dict[str, Any]:
        """Readiness: can the provider answer GET /models?"""
        result: dict[str, Any] = {"type": self.type, "base_url": self.display_url}
        if self.missing:
            return result | {"ok": False, "error": self.missing}
        started = time.perf_counter()
        try:
            response = await self._get(self.base_url + "/models", timeout)
            status = response.status_code
            ok = status < 500 and status not in (401, 403)
            error = None if ok else f"GET /models answered HTTP {status}"
        except (httpx.HTTPError, OSError) as exc:
            ok, error = False, self.failure(exc).message
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return result | {"ok": ok, "error": error}

    async def _get(self, url: str, timeout: float | None = None) -> httpx.Response:
        options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        return await self.client.get(url, headers=self._get_headers, **options)

    async def embed(self, model: str, text: str, timeout: float) -> list[float]:
        """One embedding from `<base_url>/embeddings`, for the semantic cache."""
        if self.missing:
            raise ProviderUnavailable(self.missing)
        response = await self.client.post(
            self.base_url + "/embeddings",
            json={"model": model, "input": text},
            headers=self._get_headers,
            timeout=timeout,
        )
        response.raise_for_status()
        vector = response.json()["data"][0]["embedding"]
        if not isinstance(vector, list) or not vector:
            raise ValueError("the upstream answered no embedding")
        return [float(x) for x in vector]

    async def discover(self, timeout: float = 2.0) -> list[str]:
        """Models an Ollama host has pulled (`/api/tags`, else `/v1/models`); [] if unknown."""
        if self.type != "ollama":
            return []
        root = self.base_url.removesuffix("/v1")
        try:
            response = await self._get(root + "/api/tags", timeout)
            if response.status_code == 200:
                return [m["name"] for m in response.json().get("models", []) if "name" in m]
            response = await self._get(self.base_url + "/models", timeout)
            if response.status_code == 200:
                return [m["id"] for m in response.json().get("data", []) if "id" in m]
        except (httpx.HTTPError, ValueError, TypeError, AttributeError):
            pass  # an unreachable or odd upstream just lists nothing extra
        return []

    async def aclose(self) -> None:
        await self.client.aclose()


def classify(exc: BaseException) -> str:
    """'refused' (nothing listening), 'timeout', or 'error', looking through causes.

    httpx-aiohttp maps some aiohttp errors to misleading httpx classes, so the aiohttp
    exception underneath is asked first.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for e in chain:
        if isinstance(e, ConnectionRefusedError) or (
            isinstance(e, OSError) and e.errno == errno.ECONNREFUSED
        ):
            return "refused"
    for e in chain:
        module = type(e).__module__
        if module.startswith("aiohttp"):
            name = type(e).__name__
            if "Timeout" in name:
                return "timeout"
            return "error"
    if any(isinstance(e, (httpx.TimeoutException, TimeoutError)) for e in chain):
        return "timeout"
    return "error"
