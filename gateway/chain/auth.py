"""AuthStage: who is calling. Virtual keys (by sha256), plain keys, admin keys.

A key arrives as `Authorization: Bearer <key>` or as `api-key: <key>` (Azure-style
clients). Keys are looked up by their sha256, so neither the config nor a comparison
ever holds the key itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.config import AuthConfig
from gateway.context import RequestContext
from gateway.errors import AuthenticationFailed, PermissionDenied

_HOW = "send 'Authorization: Bearer <key>' or 'api-key: <key>'"


def key_digest(key: str | bytes) -> str:
    raw = key.encode() if isinstance(key, str) else key
    return hashlib.sha256(raw).hexdigest()


def key_name(key: str) -> str:
    """What logs may say about a plain key: a short fingerprint, never the key."""
    return "key-" + key_digest(key)[:8]


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as the rest of the chain sees it."""

    name: str  # a virtual key's name, or a plain key's fingerprint; "-" with auth off
    tier: str
    team: str = ""
    models: tuple[str, ...] = ()  # allow-list; empty allows all
    monthly_budget_usd: float | None = None
    privacy_level: str = ""


def credential(authorization: bytes | None, api_key: bytes | None) -> bytes:
    """The key the client sent, or a 401 that says what is wrong with the headers."""
    if authorization is not None:
        value = authorization.strip()
        if not value:
            raise AuthenticationFailed(f"Empty Authorization header: {_HOW}.")
        parts = value.split(None, 1)
        if len(parts) == 1:
            raise AuthenticationFailed(
                f"Malformed Authorization header: expected 'Bearer <key>'; {_HOW}."
            )
        if parts[0].lower() != b"bearer":
            raise AuthenticationFailed(
                f"Unsupported Authorization scheme: only 'Bearer' is accepted; {_HOW}."
            )
        return parts[1].strip()
    if api_key is not None and api_key.strip():
        return api_key.strip()
    raise AuthenticationFailed(f"Missing API key: {_HOW}.")


class AuthStage:
    """Resolves the caller's key to a Principal; with no keys configured, auth is off."""

    def __init__(self, cfg: AuthConfig) -> None:
        self._by_digest: dict[str, Principal] = {}
        for plain in cfg.api_keys:
            self._by_digest[key_digest(plain)] = Principal(key_name(plain), cfg.default_tier)
        for key in cfg.keys:
            self._by_digest[key.sha256.strip().lower()] = Principal(
                key.name,
                key.tier or cfg.default_tier,
                key.team,
                key.models,
                key.monthly_budget_usd,
                key.privacy_level,
            )
        self._admin = {key_digest(k) for k in cfg.admin_keys}
        self.enabled = bool(self._by_digest)
        self.anonymous = Principal("-", cfg.default_tier)

    def principal_named(self, name: str) -> Principal | None:
        return next((p for p in self._by_digest.values() if p.name == name), None)

    def principals(self) -> list[Principal]:
        return list(self._by_digest.values())

    def authenticate(self, authorization: bytes | None, api_key: bytes | None) -> Principal:
        if not self.enabled:
            return self.anonymous
        principal = self._by_digest.get(key_digest(credential(authorization, api_key)))
        if principal is None:
            raise AuthenticationFailed("Invalid API key.")
        return principal

    def authenticate_admin(self, authorization: bytes | None, api_key: bytes | None) -> None:
        """Admin endpoints: only an admin key opens them; a client key gets 403."""
        digest = key_digest(credential(authorization, api_key))
        if digest in self._admin:
            return
        if digest in self._by_digest:
            raise PermissionDenied(
                "This endpoint needs an admin key (auth.admin_keys); a client key cannot open it.",
                code="admin_key_required",
            )
        raise AuthenticationFailed(
            "Invalid admin key."
            if self._admin
            else "Invalid admin key: no admin keys are configured (auth.admin_keys, "
            "GATEWAY_ADMIN_KEYS)."
        )

    async def __call__(self, ctx: RequestContext) -> None:
        principal = self.authenticate(ctx.header(b"authorization"), ctx.header(b"api-key"))
        ctx.key = principal
        ctx.principal = principal.name
