"""AuthStage: the client's `Authorization: Bearer <key>` must be one of the configured keys."""

from __future__ import annotations

import hashlib

from gateway.context import RequestContext
from gateway.errors import AuthenticationFailed


def key_digest(key: str | bytes) -> str:
    raw = key.encode() if isinstance(key, str) else key
    return hashlib.sha256(raw).hexdigest()


def key_name(key: str) -> str:
    """What logs may say about a key: a short fingerprint, never the key."""
    return "key-" + key_digest(key)[:8]


class AuthStage:
    def __init__(self, keys: tuple[str, ...]) -> None:
        # Looked up by digest so the comparison does not leak the key byte by byte.
        self._names = {key_digest(k): key_name(k) for k in keys}

    def principal(self, authorization: bytes | None) -> str:
        if not authorization:
            raise AuthenticationFailed("Missing API key: send 'Authorization: Bearer <key>'.")
        scheme, _, token = authorization.partition(b" ")
        name = self._names.get(key_digest(token.strip())) if scheme.lower() == b"bearer" else None
        if name is None:
            raise AuthenticationFailed("Invalid API key.")
        return name

    async def __call__(self, ctx: RequestContext) -> None:
        ctx.principal = self.principal(ctx.header(b"authorization"))
