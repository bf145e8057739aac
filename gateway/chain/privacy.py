"""PrivacyStage: scan every text the upstream would see; decide what the findings allow.

The level is the strictest of the global one, the key's tier, the key, and the request
(`routing_preferences.privacy_level` or `x-gateway-privacy-level`): a request may raise
its level, never lower it. `standard`: secrets, personal data and custom categories act;
`high`: keywords too; `max`: every request stays local. Each acting category's action
(`privacy.actions`) applies, the strongest winning: block > route_local > redact > allow.
The router then keeps `route_local` requests on a local provider whatever was asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config import GatewayConfig
from gateway.context import RequestContext
from gateway.errors import InvalidRequest, PrivacyBlocked
from gateway.observability import Metrics
from gateway.privacy import PrivacyDetectorSpec, PrivacyScanner, TextRef, texts_of

LEVELS = ("standard", "high", "max")
_RANK = {level: i for i, level in enumerate(LEVELS)}
_STRENGTH = {"allow": 0, "redact": 1, "route_local": 2, "block": 3}


def build_scanner(config: GatewayConfig) -> PrivacyScanner:
    """Raises ValueError naming a custom detector whose regex does not compile."""
    specs = [PrivacyDetectorSpec(d.name, d.regex, d.category) for d in config.privacy.detectors]
    keywords = config.privacy.keywords or None
    return PrivacyScanner(specs, keywords)


class PrivacyStage:
    def __init__(self, config: GatewayConfig, scanner: PrivacyScanner, metrics: Metrics) -> None:
        privacy = config.privacy
        self.scanner = scanner
        self.metrics = metrics
        self.level: str = privacy.level
        self.actions = dict(privacy.actions)
        self.tier_levels = {n: t.privacy_level for n, t in config.tiers.items() if t.privacy_level}
        self._findings = metrics.privacy_findings

    def level_for(self, ctx: RequestContext) -> str:
        level: str = self.level
        key = ctx.key
        if key is not None:
            level = _stricter(level, self.tier_levels.get(key.tier, ""))
            level = _stricter(level, key.privacy_level)
        level = _stricter(level, (ctx.routing_preferences or {}).get("privacy_level") or "")
        header = ctx.header(b"x-gateway-privacy-level")
        if header is not None:
            asked = header.decode("latin-1").strip().lower()
            if asked not in _RANK:
                raise InvalidRequest(
                    f"Invalid x-gateway-privacy-level {asked[:32]!r}: use one of "
                    f"{', '.join(LEVELS)}.",
                    param="x-gateway-privacy-level",
                    code="invalid_value",
                )
            level = _stricter(level, asked)
        return level

    async def __call__(self, ctx: RequestContext) -> None:
        level = self.level_for(ctx)
        texts = texts_of(ctx.endpoint, ctx.body)
        texts += unread_texts(ctx.endpoint, ctx.body, texts)
        findings = self.scanner.scan(texts)
        ctx.privacy_level = level
        ctx.privacy_texts = texts
        ctx.findings = findings
        if not findings and level != "max":
            return
        categories = tuple(sorted({f.category for f in findings}))
        ctx.privacy_categories = categories
        for category in categories:
            self._findings.labels(_label(category)).inc()
        acting = [c for c in categories if level != "standard" or c != "keyword"]
        action = max((self.action_for(c) for c in acting), key=_STRENGTH.__getitem__,
                     default="allow")  # fmt: skip
        if action == "block":
            blocked = [c for c in acting if self.action_for(c) == "block"]
            raise PrivacyBlocked(
                f"Request blocked by the gateway's privacy policy: it contains "
                f"{', '.join(blocked)} data (privacy level {level}). Remove it and retry.",
            )
        if level == "max":
            action = "route_local"
            ctx.privacy_reason = "privacy level max keeps every request local"
        elif action != "allow":
            ctx.privacy_reason = f"{', '.join(acting)} found at privacy level {level}"
        ctx.privacy_action = action

    def action_for(self, category: str) -> str:
        return action_for(self.actions, category)


def action_for(actions: Mapping[str, str], category: str) -> str:
    """A category's action: its own, else `default`, else route_local (the router redacts by
    the same answer, so a category redacted by `default` is redacted too)."""
    return actions.get(category) or actions.get("default") or "route_local"


def unread_texts(endpoint: str, body: dict[str, Any], read: list[TextRef]) -> list[TextRef]:
    """Strings the cloud would receive that `texts_of` does not read: the model sees a
    prediction, a response schema, stop sequences and tool parameters' enums and defaults;
    OpenAI keeps `user` and `metadata`. Kept-local data must not leave through them."""
    out: list[TextRef] = []
    for key in ("user", "metadata", "stop", "prediction", "response_format"):
        value = body.get(key)
        if value is None or (endpoint == "embeddings" and key not in ("user", "metadata")):
            continue
        if key == "response_format":
            value = value.get("json_schema") if isinstance(value, dict) else None
            _strings(("response_format", "json_schema"), value, frozenset(), out)
        else:
            _strings((key,), value, frozenset(), out)
    if endpoint == "chat" and ("tools" in body or "functions" in body):
        covered = frozenset(ref.at for ref in read)  # descriptions: already read
        _strings(("tools",), body.get("tools"), covered, out)
        _strings(("functions",), body.get("functions"), covered, out)
    elif endpoint == "responses":
        _responses_unread(body, read, out)
    return out


_READ_ITEMS = frozenset({"message", "function_call", "function_call_output"})


def _responses_unread(body: dict[str, Any], read: list[TextRef], out: list[TextRef]) -> None:
    """A Responses request's other strings: the tools (names, schemas), the text format's
    schema, a prompt's variables, and every string of an item type `texts_of` does not read
    (reasoning summaries, hosted tools' calls a native upstream takes back)."""
    covered = frozenset(ref.at for ref in read)
    for key in ("tools", "text", "prompt"):
        if body.get(key) is not None:
            _strings((key,), body[key], covered, out)
    items = body.get("input")
    for i, item in enumerate(items if isinstance(items, list) else ()):
        if isinstance(item, dict):
            kind = item.get("type", "message" if "role" in item else None)
            if kind not in _READ_ITEMS:
                _strings(("input", i), item, covered, out)


def _strings(
    at: tuple[str | int, ...], node: Any, covered: frozenset[Any], out: list[TextRef]
) -> None:
    """Every string under `node` (an explicit stack: any depth orjson admits)."""
    stack = [(at, node)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if value and path not in covered:
                out.append(TextRef(path, value))
        elif isinstance(value, dict):
            stack.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))


def _stricter(a: str, b: str) -> str:
    if not b:
        return a
    return b if _RANK.get(b, -1) > _RANK.get(a, -1) else a


def _label(category: str) -> str:
    """Metric label: the three built-in categories, every custom one as `custom`."""
    return category if category in ("secret", "pii", "keyword") else "custom"
