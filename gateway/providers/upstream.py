"""The aiohttp transport with a shorter hot path for the proxied POSTs.

httpx-aiohttp turns each `httpx.Request` back into an aiohttp call: it parses the URL
string again, builds a ClientTimeout and reads the httpx header model, and the body comes
back through httpx's byte-stream layers. `post` calls the aiohttp session directly with a
parsed URL, a timeout built once and plain header pairs, and still answers an
`httpx.Response` (the proxy's one API for every transport); `read_all` reads a body in one
aiohttp call. About 60-80 us less per request in process (bench/NOTES.md). Other calls
(probes, discovery, embeddings) keep the httpx client over the same pool.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx
import yarl
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import AiohttpResponseStream, map_aiohttp_exceptions

from gateway.config import Timeouts

_EXTENSIONS = {"http_version": b"HTTP/1.1"}


class UpstreamStream(AiohttpResponseStream):
    """The response body as httpx reads it, with the aiohttp response at hand."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        super().__init__(response)
        self.response = response


class AiohttpUpstream(AiohttpTransport):
    def __init__(self, timeouts: Timeouts, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._timeout = aiohttp.ClientTimeout(
            sock_connect=timeouts.connect, sock_read=timeouts.read, connect=timeouts.pool
        )
        self._urls: dict[str, yarl.URL] = {}

    async def post(
        self, base_url: str, path: str, pairs: list[tuple[bytes, bytes]], body: bytes
    ) -> httpx.Response:
        """POST `<base_url><path>` as `handle_async_request` would, the same errors mapped
        to httpx's."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = yarl.URL(base_url + path)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in pairs]
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        with map_aiohttp_exceptions():
            response = await self.client.request(
                "POST",
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                auto_decompress=False,  # bytes pass through to the client unchanged
                compress=False,
                timeout=self._timeout,
            )
        extensions = _EXTENSIONS
        if response.reason:
            extensions = {**_EXTENSIONS, "reason_phrase": response.reason.encode()}
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=UpstreamStream(response),
            extensions=extensions,
        )


async def read_all(response: httpx.Response) -> bytes:
    """The whole body: one aiohttp read when the fast path sent the request."""
    stream = response.stream
    if isinstance(stream, UpstreamStream):
        with map_aiohttp_exceptions():
            return await stream.response.read()
    return await response.aread()
