"""The operators' console: GET /console (static page) and the JSON it reads, all behind
an admin key: /admin/overview, /admin/decisions and /admin/config.

With several workers, each request is answered by one of them: the totals, rates and
percentiles are the whole server's (the metrics' multiprocess files), but the feed of
recent decisions, the breakers and the last reload are that worker's own.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import time
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.config import redacted
from gateway.endpoints import credentials, json_response
from gateway.errors import GatewayError, InvalidRequest
from gateway.feed import FEED_SIZE
from gateway.overview import Overview

if TYPE_CHECKING:
    from gateway.runtime import Runtime

# The page, its script and its style: read once, served from memory.
_ASSETS = {
    "": ("index.html", "text/html; charset=utf-8"),
    "console.js": ("console.js", "text/javascript; charset=utf-8"),
    "console.css": ("console.css", "text/css; charset=utf-8"),
}
# Only the page's own files; no inline script, nothing from elsewhere, never in a frame.
_PAGE_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
DEFAULT_LIMIT = 50
# A probe's error names the provider's URL, with any user and password in it.
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]*@")


def load_assets() -> dict[str, tuple[bytes, str]]:
    folder = importlib.resources.files("gateway") / "console"
    return {path: ((folder / name).read_bytes(), media) for path, (name, media) in _ASSETS.items()}


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}.", param=name)
    return value


class Admin:
    """One per process: reads whichever Gateway the runtime serves now."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.overview_reader = Overview()  # its rate snapshots outlive a reload
        self.assets = load_assets()

    def _authenticate(self, request: Request) -> None:
        self.runtime.gateway.auth.authenticate_admin(*credentials(request))

    async def console(self, request: Request) -> Response:
        """The page itself needs no key: it asks for one, and every call it makes sends it."""
        name = request.path_params.get("name", "")
        asset = self.assets.get(name)
        if asset is None:
            raise HTTPException(404)
        body, media = asset
        return Response(body, 200, _PAGE_HEADERS, media_type=media)

    async def overview(self, request: Request) -> Response:
        """Providers, routes, cache, spend and budgets, rejections, and the last reload."""
        self._authenticate(request)
        served = self.runtime.served
        gw = served.gateway
        readiness = await served.endpoints.readiness()
        usage: dict[str, Any]
        try:
            usage = await served.endpoints.usage_report()
        except GatewayError as exc:  # Redis down: the rest is still worth seeing
            usage = exc.to_dict()
        metrics = self.overview_reader.read(gw.metrics.exposition, list(gw.providers))
        for row in metrics["providers"]:
            provider = gw.providers[row["name"]]
            probe = readiness["providers"].get(row["name"], {})
            row |= {
                "type": provider.type,
                "local": provider.local,
                "ready": probe.get("ok"),
                "probe_error": _URL_CREDENTIALS.sub(r"\1***@", probe.get("error") or "") or None,
                "breaker": provider.breaker.state,
            }
        report: dict[str, Any] = {
            "object": "overview",
            "at": time.time(),
            "pid": os.getpid(),
            "workers": _workers(),
            "status": "draining" if _draining(request) else readiness["status"],
            "cache_enabled": gw.cache is not None,
        }
        if "redis" in readiness:
            report["redis"] = {"ok": readiness["redis"]["ok"]}
        return json_response(report | metrics | {"usage": usage, "reload": self._reload()})

    async def decisions(self, request: Request) -> Response:
        """The feed: this worker's last finished requests, newest first, no prompt text."""
        self._authenticate(request)
        limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, FEED_SIZE)
        after = _int_param(request, "after", 0, 0, 2**62)
        feed = self.runtime.gateway.feed
        return json_response(
            {
                "object": "list",
                "data": feed.latest(limit, after),
                "recorded": feed.recorded,
                "capacity": feed.size,
                "pid": os.getpid(),
            }
        )

    async def config(self, request: Request) -> Response:
        """The running config, resolved, secrets masked; and the last reload."""
        self._authenticate(request)
        runtime = self.runtime
        return json_response(
            {
                "object": "config",
                "path": str(runtime.path) if runtime.path else None,
                "pid": os.getpid(),
                "workers": _workers(),
                "reload": self._reload(),
                "config": redacted(runtime.gateway.config),
            }
        )

    def _reload(self) -> dict[str, Any]:
        last = self.runtime.last_reload
        return {
            "at": last["at"],
            "ok": last["ok"],
            "trigger": last["trigger"],
            "errors": last["errors"],
            "started_at": self.runtime.started_at,
        }


def _draining(request: Request) -> bool:
    drain = getattr(request.app.state, "drain", None)
    return bool(drain is not None and drain.draining)


def _workers() -> int:
    return int(os.environ.get("GATEWAY_WORKERS") or 1)
