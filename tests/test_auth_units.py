"""The auth stage in process: plain keys, virtual keys by sha256, admin keys, tiers.

What docs/CONFIG.md (`auth`) and docs/API.md (401, 403) promise, checked on an AuthStage
built from a parsed config as gateway/runtime.py builds it, so a mutation run of
gateway/chain/auth.py (docs/TESTING.md) has fast tests; tests/test_policy.py checks the
same through a gateway process.
"""

from __future__ import annotations

import hashlib

import pytest

from gateway.chain.auth import AuthStage, Principal, credential, key_digest, key_name
from gateway.config import parse_config
from gateway.context import RequestContext
from gateway.errors import AuthenticationFailed, GatewayError, PermissionDenied

PLAIN, OTHER_PLAIN = "sk-plain-1", "sk-plain-2"
ALICE, BOB = "sk-virtual-alice", "sk-virtual-bob"
ADMIN = "sk-admin"
HOW = "send 'Authorization: Bearer <key>' or 'api-key: <key>'"
EMPTY = f"Empty Authorization header: {HOW}."
MALFORMED = f"Malformed Authorization header: expected 'Bearer <key>'; {HOW}."
NOT_ADMIN = "This endpoint needs an admin key (auth.admin_keys); a client key cannot open it."
NO_ADMINS = "Invalid admin key: no admin keys are configured (auth.admin_keys, GATEWAY_ADMIN_KEYS)."
UNSUPPORTED = f"Unsupported Authorization scheme: only 'Bearer' is accepted; {HOW}."


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def auth_stage(
    auth: str, tiers: str = "{standard: {requests_per_minute: 2}, gold: {}}"
) -> AuthStage:
    config = parse_config(
        f"auth: {auth}\ntiers: {tiers}\nproviders: {{mock: {{type: mock, models: [demo]}}}}\n",
        env={},
    )
    return AuthStage(config.auth)


EVERYONE = f"""
  api_keys: ["{PLAIN}", "{OTHER_PLAIN}"]
  admin_keys: ["{ADMIN}"]
  default_tier: standard
  keys:
    - name: alice
      sha256: "  {sha(ALICE).upper()}  "
      tier: gold
      team: research
      models: [demo, "mock:*"]
      monthly_budget_usd: 2.5
      privacy_level: high
    - {{name: bob, sha256: {sha(BOB)}}}
"""


def everyone() -> AuthStage:
    """An AuthStage of all the keys above, built in the test (as a mutation run needs)."""
    return auth_stage(EVERYONE)


def failure(error: GatewayError, status: int, code: str, message: str) -> None:
    assert (error.status, error.code, error.message) == (status, code, message)
    assert error.to_dict()["error"]["type"] == "invalid_request_error"


def test_key_digest_and_the_name_logs_show() -> None:
    assert key_digest(PLAIN) == sha(PLAIN) == key_digest(PLAIN.encode())
    assert key_name(PLAIN) == "key-" + sha(PLAIN)[:8]


@pytest.mark.parametrize(
    ("authorization", "api_key", "sent"),
    [
        (b"Bearer k1", None, b"k1"),
        (b"bearer k1", None, b"k1"),
        (b"BEARER k1", None, b"k1"),
        (b"  Bearer \t k1  ", None, b"k1"),
        (b"Bearer\tk1", None, b"k1"),
        (b"Bearer k1 k2", None, b"k1 k2"),  # everything after the scheme is the key
        (b"Bearer k1", b"k2", b"k1"),  # Authorization wins over api-key
        (None, b"k2", b"k2"),
        (None, b" k2 ", b"k2"),
    ],
)
def test_the_key_a_client_sends(
    authorization: bytes | None, api_key: bytes | None, sent: bytes
) -> None:
    assert credential(authorization, api_key) == sent


@pytest.mark.parametrize(
    ("authorization", "api_key", "message"),
    [
        (b"", None, EMPTY),
        (b"  \t ", b"k2", EMPTY),
        (b"k1", None, MALFORMED),
        (b"Bearer", b"k2", MALFORMED),
        (b"Bearer   ", None, MALFORMED),
        (b"Basic dXNlcjpwYXNz", None, UNSUPPORTED),
        (b"Bearerx k1", None, UNSUPPORTED),
        (None, None, f"Missing API key: {HOW}."),
        (None, b"", f"Missing API key: {HOW}."),
        (None, b"  ", f"Missing API key: {HOW}."),
    ],
)
def test_headers_that_carry_no_key_say_what_is_wrong(
    authorization: bytes | None, api_key: bytes | None, message: str
) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        credential(authorization, api_key)
    failure(caught.value, 401, "invalid_api_key", message)


def test_a_plain_key_is_known_by_its_fingerprint_with_the_default_tier() -> None:
    for key in (PLAIN, OTHER_PLAIN):
        principal = everyone().authenticate(f"Bearer {key}".encode(), None)
        assert principal == Principal(key_name(key), "standard")
        assert principal == everyone().authenticate(None, key.encode())  # api-key: the same caller
        assert (principal.team, principal.models, principal.monthly_budget_usd) == ("", (), None)
        assert principal.privacy_level == ""


def test_a_virtual_key_is_known_by_its_sha256() -> None:
    alice = everyone().authenticate(f"Bearer {ALICE}".encode(), None)
    # The digest in the config was upper case with spaces around: it still matches.
    assert alice == Principal("alice", "gold", "research", ("demo", "mock:*"), 2.5, "high")
    bob = everyone().authenticate(None, BOB.encode())
    assert bob == Principal("bob", "standard")  # no tier: auth.default_tier


@pytest.mark.parametrize(
    "key",
    [sha(ALICE), ADMIN, "sk-unknown", ALICE.upper(), ALICE + " x", "\u00e9t\u00e9"],
)
def test_anything_else_is_an_invalid_key(key: str) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        everyone().authenticate(b"Bearer " + key.encode(), None)
    failure(caught.value, 401, "invalid_api_key", "Invalid API key.")


async def test_the_stage_puts_the_caller_on_the_request() -> None:
    ctx = RequestContext("req_1", "chat", "/chat/completions", [], 0.0)
    ctx.headers = [(b"content-type", b"application/json"), (b"api-key", ALICE.encode())]
    await everyone()(ctx)
    assert ctx.key is not None and ctx.key.name == "alice" and ctx.principal == "alice"
    ctx.headers = [(b"authorization", f"Bearer {PLAIN}".encode()), (b"api-key", b"junk")]
    await everyone()(ctx)
    assert ctx.principal == key_name(PLAIN) and ctx.key == everyone().authenticate(
        None, PLAIN.encode()
    )
    ctx.headers = [(b"api-key", b"junk")]
    with pytest.raises(AuthenticationFailed):
        await everyone()(ctx)


def test_with_no_client_keys_auth_is_off() -> None:
    off = auth_stage(f'{{admin_keys: ["{ADMIN}"], default_tier: gold}}')
    assert not off.enabled and off.principals() == []
    for headers in ((None, None), (b"Basic xyz", None), (b"Bearer whatever", b"k")):
        assert off.authenticate(*headers) == Principal("-", "gold")
    # Admin endpoints still need an admin key.
    off.authenticate_admin(f"Bearer {ADMIN}".encode(), None)
    with pytest.raises(AuthenticationFailed):
        off.authenticate_admin(b"Bearer whatever", None)
    assert auth_stage(f"{{keys: [{{name: v, sha256: {sha(BOB)}}}]}}").enabled  # virtual only
    assert auth_stage(f'{{api_keys: ["{PLAIN}"]}}').enabled  # plain only


def test_admin_keys_open_admin_endpoints_and_client_keys_do_not() -> None:
    assert everyone().authenticate_admin(f"Bearer {ADMIN}".encode(), None) is None
    assert everyone().authenticate_admin(None, ADMIN.encode()) is None
    for key in (PLAIN, ALICE):
        with pytest.raises(PermissionDenied) as caught:
            everyone().authenticate_admin(None, key.encode())
        failure(caught.value, 403, "admin_key_required", NOT_ADMIN)
    with pytest.raises(AuthenticationFailed) as unknown:
        everyone().authenticate_admin(b"Bearer sk-unknown", None)
    failure(unknown.value, 401, "invalid_api_key", "Invalid admin key.")
    with pytest.raises(AuthenticationFailed) as missing:
        everyone().authenticate_admin(None, None)
    failure(missing.value, 401, "invalid_api_key", f"Missing API key: {HOW}.")
    none = auth_stage(f'{{api_keys: ["{PLAIN}"]}}')
    with pytest.raises(AuthenticationFailed) as unset:
        none.authenticate_admin(f"Bearer {ADMIN}".encode(), None)
    failure(unset.value, 401, "invalid_api_key", NO_ADMINS)
    with pytest.raises(PermissionDenied):  # a client key is still told it is not an admin's
        none.authenticate_admin(f"Bearer {PLAIN}".encode(), None)


def test_principals_by_name() -> None:
    assert everyone().principal_named("alice") == everyone().authenticate(None, ALICE.encode())
    assert everyone().principal_named(key_name(PLAIN)) == Principal(key_name(PLAIN), "standard")
    assert everyone().principal_named("carol") is None
    assert everyone().principal_named("-") is None
    names = [p.name for p in everyone().principals()]
    assert sorted(names) == sorted(["alice", "bob", key_name(PLAIN), key_name(OTHER_PLAIN)])
