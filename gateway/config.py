"""YAML config with ${VAR} / ${VAR:-default} interpolation, loaded into frozen dataclasses.

Unknown keys and wrong types are errors, reported with their key path and line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SECRET_KEYS = frozenset({"api_key", "api_keys", "admin_keys", "redis_url", "sha256"})
# Header values under these names (a provider's `headers:`) are credentials too.
_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie|password", re.IGNORECASE)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 10 * 1024 * 1024
    readiness_cache_seconds: float = 5.0
    # /readyz shows upstream URLs and errors to anyone; else only to an admin key.
    expose_details: bool = False
    # On SIGTERM/SIGINT /readyz answers 503 at once, and the listener stays open this long
    # so that a load balancer that saw it stops sending before connections are refused.
    drain_delay_seconds: float = 0.5
    # Then in-flight requests and streams get this long to finish; what is left is ended.
    drain_seconds: float = 30.0


@dataclass(frozen=True)
class KeyConfig:
    """A virtual key: known by the sha256 of the key, never the key itself."""

    name: str
    sha256: str
    tier: str = ""  # empty: auth.default_tier
    team: str = ""
    models: tuple[str, ...] = ()  # allow-list; empty allows every model
    monthly_budget_usd: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    privacy_level: Literal["", "standard", "high", "max"] = ""  # raises the global level
    cache_ttl_seconds: float | None = None  # this key's cached answers; empty: cache.ttl_seconds


@dataclass(frozen=True)
class AuthConfig:
    # Plain client keys (`Authorization: Bearer <key>` or `api-key: <key>`); with no keys
    # here and none in `keys`, auth is off.
    api_keys: tuple[str, ...] = ()
    keys: tuple[KeyConfig, ...] = ()
    default_tier: str = "unlimited"
    admin_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class TierConfig:
    """Limits per key; an absent limit is unlimited."""

    requests_per_minute: int | None = None
    requests_per_hour: int | None = None
    requests_per_day: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    privacy_level: Literal["", "standard", "high", "max"] = ""  # raises the global level


@dataclass(frozen=True)
class ProviderLimitConfig:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True)
class LimitsConfig:
    # Completion tokens reserved when a request sets no max_tokens / max_completion_tokens.
    default_completion_tokens: int = 1024
    # A concurrency lease lapses after this long, so a crashed replica cannot hold it.
    lease_seconds: float = 900.0


@dataclass(frozen=True)
class TeamConfig:
    monthly_budget_usd: float | None = None


@dataclass(frozen=True)
class PriceConfig:
    """USD per 1M tokens."""

    input_per_1m: float
    output_per_1m: float = 0.0


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
    access_log: bool = True


@dataclass(frozen=True)
class StateConfig:
    redis_url: str = ""
    # Redis unreachable: `allow` serves without limits (logged, counted), `deny` answers 503.
    on_redis_error: Literal["allow", "deny"] = "allow"
    key_prefix: str = "llm-gateway:"  # every Redis key starts with it


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 120.0
    write: float = 30.0
    pool: float = 10.0


@dataclass(frozen=True)
class BreakerConfig:
    """Per provider: stop calling an upstream that keeps failing, probe it after a cooldown."""

    enabled: bool = True
    failures: int = 5  # consecutive failures that open the circuit
    failure_rate: float = 0.5  # or this share of failures over window_seconds ...
    min_requests: int = 20  # ... once the window holds at least this many calls
    window_seconds: float = 30.0
    cooldown_seconds: float = 15.0  # open this long, then one probe (half-open)


@dataclass(frozen=True)
class ProviderConfig:
    type: Literal["openai", "ollama", "mock"]
    base_url: str = ""
    api_key: str = ""
    organization: str = ""
    models: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    transport: Literal["aiohttp", "httpx"] = "aiohttp"
    max_connections: int = 1024  # each open stream holds one
    timeouts: Timeouts = field(default_factory=Timeouts)
    # Local: data sent there stays in-house (default: ollama and mock are, openai is not).
    local: bool | None = None
    # model -> capabilities (tools, vision, json_schema); "*" for every model. A model
    # with no entry is assumed to have all of them.
    capabilities: dict[str, tuple[str, ...]] = field(default_factory=dict)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    # POST /v1/responses: `native` forwards it to the upstream's /responses, `translate`
    # serves it through the upstream's /chat/completions; empty: native for type openai.
    responses: Literal["", "native", "translate"] = ""

    @property
    def is_local(self) -> bool:
        return self.type != "openai" if self.local is None else self.local

    @property
    def responses_mode(self) -> str:
        if self.responses:
            return self.responses
        return "native" if self.type == "openai" else "translate"


@dataclass(frozen=True)
class RuleWhen:
    """Conditions of a routing rule; all given ones must hold."""

    keys: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()  # the model name the client asked for, e.g. auto
    privacy: tuple[str, ...] = ()  # categories found (secret, pii, keyword, ...), any, none
    complexity_above: float | None = None
    complexity_below: float | None = None
    tools: bool | None = None
    prompt_tokens_above: int | None = None
    prompt_tokens_below: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    latency_preference: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleConfig:
    name: str
    when: RuleWhen = field(default_factory=RuleWhen)
    route: str = ""  # a model name: alias, provider:model or bare
    block: str = ""  # or refuse with this message
    fallback: tuple[str, ...] = ()  # models to try, in order, when `route` fails


@dataclass(frozen=True)
class RoutingConfig:
    # What "auto" means when no rule matches.
    default_model: str = "demo"
    # Rules for `auto`, in order, first match wins.
    rules: tuple[RuleConfig, ...] = ()
    # Where a request goes whose model lacks a capability it needs (tools, vision, ...).
    capability_model: str = ""
    # Every `auto` request to this provider's first model (env FORCE_OLLAMA/FORCE_OPENAI).
    force_provider: str = ""
    # A model name no provider lists or matches: `reject` (404 model_not_found) or `auto`
    # (through the rules, as if the request said `auto`).
    unknown_model: Literal["reject", "auto"] = "reject"
    # Per model (alias, provider:model or bare name): what to try, in order, when it fails
    # before the first byte. A rule's own `fallback` takes precedence.
    fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class DetectorConfig:
    name: str
    regex: str
    category: str = "pii"


@dataclass(frozen=True)
class PrivacyConfig:
    enabled: bool = True
    level: Literal["standard", "high", "max"] = "standard"
    # Per category (secret, pii, keyword, a custom one, or `default`):
    # route_local | redact | block | allow.
    actions: dict[str, Literal["route_local", "redact", "block", "allow"]] = field(
        default_factory=lambda: {
            "secret": "route_local",
            "pii": "route_local",
            "keyword": "route_local",
        }
    )
    # Where route_local sends a request bound for the cloud; empty: the first model of
    # the first local provider.
    local_model: str = ""
    restore: bool = True  # redact: put the values back into the answer
    detectors: tuple[DetectorConfig, ...] = ()
    keywords: tuple[str, ...] = ()  # empty: the built-in list


@dataclass(frozen=True)
class ComplexityConfig:
    threshold: float = 0.65
    weights: dict[str, float] = field(default_factory=dict)  # factor -> weight, over defaults
    extra_terms: tuple[str, ...] = ()  # reasoning terms added to the built-in list


@dataclass(frozen=True)
class SemanticCacheConfig:
    enabled: bool = True
    # builtin (no dependency, no network) or a provider's embeddings model, such as
    # `ollama:nomic-embed-text`.
    embedder: str = "builtin"
    # Cosine similarity at or above which a paraphrase is served; empty: the embedder's
    # measured default (docs/CACHE.md).
    threshold: float | None = None
    timeout_ms: float = 200.0  # embedding slower than this: the lookup is skipped
    bucket_size: int = 64  # newest entries kept per index bucket (bounds a lookup's work)
    # Longer last questions are cached exactly only: embedding and the guard's read grow
    # with the text, and long prompts are rarely asked again in other words.
    max_question_chars: int = 2000


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = True
    # tenant: a virtual key (each plain key is its own); team: a key's team; shared: everyone.
    scope: Literal["tenant", "team", "shared"] = "tenant"
    ttl_seconds: float = 3600.0
    max_items: int = 10_000  # in memory (LRU); Redis evicts by TTL and its own maxmemory
    max_temperature: float = 1.0  # a request above this is not cached
    max_entry_bytes: int = 1 << 20  # a larger answer is not stored
    semantic: SemanticCacheConfig = field(default_factory=SemanticCacheConfig)


@dataclass(frozen=True)
class ResponsesConfig:
    """Responses the gateway keeps for `previous_response_id` and GET /v1/responses/{id}."""

    store_ttl_seconds: float = 86400.0  # a stored response is forgotten after this
    max_items: int = 10_000  # in memory (least recently used go first); Redis: by TTL


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    state: StateConfig = field(default_factory=StateConfig)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    tiers: dict[str, TierConfig] = field(default_factory=dict)
    teams: dict[str, TeamConfig] = field(default_factory=dict)
    provider_limits: dict[str, ProviderLimitConfig] = field(default_factory=dict)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    pricing: dict[str, PriceConfig] = field(default_factory=dict)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    complexity: ComplexityConfig = field(default_factory=ComplexityConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    responses: ResponsesConfig = field(default_factory=ResponsesConfig)


class ConfigError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid config:\n  " + "\n  ".join(errors))
        self.errors = errors


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Replace ${VAR} and ${VAR:-default}; an unset or empty VAR takes the default."""

    def sub(m: re.Match[str]) -> str:
        value = env.get(m.group(1), "")
        return value if value or m.group(2) is None else m.group(2)

    return _VAR.sub(sub, text) if "${" in text else text


class _Builder:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[str] = []
        self.lines: dict[str, int] = {}

    def fail(self, path: str, node: yaml.Node, message: str) -> None:
        self.errors.append(f"{path or '<root>'}: {message} (line {node.start_mark.line + 1})")

    def build(self, tp: Any, node: yaml.Node, path: str) -> Any:
        self.lines[path] = node.start_mark.line + 1
        origin = get_origin(tp)
        if dataclasses.is_dataclass(tp):
            return self.dataclass(tp, node, path)
        if origin is dict:
            return self.mapping(get_args(tp)[1], node, path)
        if origin is tuple:
            return self.sequence(get_args(tp)[0], node, path)
        if origin in (Union, types.UnionType):
            if _is_null(node) and type(None) in get_args(tp):
                return None  # an explicit null: the default (None) stands
            return self.build(next(a for a in get_args(tp) if a is not type(None)), node, path)
        if not isinstance(node, yaml.ScalarNode):
            self.fail(path, node, f"expected {_type_name(tp)}, got a {_node_kind(node)}")
            return None
        return self.scalar(tp, node, path)

    def dataclass(self, cls: Any, node: yaml.Node, path: str) -> Any:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return cls() if _all_defaulted(cls) else self.fail(path, node, "must not be empty")
        if not isinstance(node, yaml.MappingNode):
            self.fail(path, node, f"expected a mapping, got a {_node_kind(node)}")
            return None
        hints = get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            sub = f"{path}.{key}" if path else key
            if key not in names:
                self.fail(sub, key_node, f"unknown key (allowed: {', '.join(sorted(names))})")
                continue
            value = self.build(hints[key], value_node, sub)
            if value is not None:  # a bad value is reported; its default stands in
                values[key] = value
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        for name in required:
            if name not in values:
                self.fail(f"{path}.{name}" if path else name, node, "required key is missing")
                return None
        try:
            return cls(**values)
        except TypeError as exc:  # pragma: no cover - guarded by the checks above
            self.fail(path, node, str(exc))
            return None

    def mapping(self, value_tp: Any, node: yaml.Node, path: str) -> dict[str, Any] | None:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.fail(path, node, f"expected a mapping, got a {_node_kind(node)}")
            return None
        out = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            value = self.build(value_tp, value_node, f"{path}.{key}")
            if value is not None:
                out[key] = value
        return out

    def sequence(self, item_tp: Any, node: yaml.Node, path: str) -> tuple[Any, ...] | None:
        if isinstance(node, yaml.ScalarNode):
            # A scalar list comes from the environment: "a,b,c" (empty means none).
            text = interpolate(node.value, self.env)
            return tuple(part.strip() for part in text.split(",") if part.strip())
        if not isinstance(node, yaml.SequenceNode):
            self.fail(path, node, f"expected a list, got a {_node_kind(node)}")
            return None
        items = [self.build(item_tp, n, f"{path}[{i}]") for i, n in enumerate(node.value)]
        return tuple(items)

    def scalar(self, tp: Any, node: yaml.ScalarNode, path: str) -> Any:
        text = interpolate(node.value, self.env)
        is_null = node.tag.endswith(":null") and node.style is None
        if get_origin(tp) is Literal:
            choices = get_args(tp)
            if text not in choices:
                self.fail(path, node, f"must be one of {', '.join(choices)}, got {text!r}")
                return None
            return text
        if tp is str:
            return "" if is_null else text
        if tp is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
        elif tp in (int, float):
            try:
                return tp(text.strip())
            except ValueError:
                pass
        self.fail(path, node, f"expected {_type_name(tp)}, got {text!r}")
        return None


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null") and node.style is None


def _all_defaulted(cls: Any) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
    )


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(get_args(tp))
    return {int: "an integer", float: "a number", bool: "a boolean", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return f"scalar {node.value!r}"


def parse_config(text: str, env: Mapping[str, str] | None = None) -> GatewayConfig:
    env = os.environ if env is None else env
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"]) from exc
    if node is None:
        return GatewayConfig()
    builder = _Builder(env)
    config = builder.build(GatewayConfig, node, "")
    errors = builder.errors
    if config is not None:
        # Model names are only checked on a sound config: a dropped provider would
        # make every name that points at it look wrong too.
        errors = errors + _check(config, builder.lines, models=not errors)
    if errors or config is None:
        raise ConfigError(errors or ["config is empty"])
    return config  # type: ignore[no-any-return]


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read config file {path}: {exc.strerror}"]) from exc
    return parse_config(text, env)


def _check(config: GatewayConfig, lines: dict[str, int], *, models: bool) -> list[str]:
    """Checks that span keys: provider fields by type, positive numbers, model names."""
    from gateway.catalog import ModelCatalog

    errors: list[str] = []
    s = config.server
    if not 0 < s.port < 65536:
        errors.append(f"server.port: must be between 1 and 65535, got {s.port}")
    if s.workers < 1:
        errors.append(f"server.workers: must be at least 1, got {s.workers}")
    if s.max_body_bytes < 1024:
        errors.append(f"server.max_body_bytes: must be at least 1024, got {s.max_body_bytes}")
    errors += _positive("server.drain_seconds", s.drain_seconds)
    if s.drain_delay_seconds < 0:
        errors.append(
            f"server.drain_delay_seconds: must not be negative, got {s.drain_delay_seconds}"
        )
    errors += workers_problems(config, s.workers)
    for name, p in config.providers.items():
        where = f"providers.{name}"
        if ":" in name:
            errors.append(f"{where}: provider names cannot contain ':'")
        if p.type != "mock" and not re.match(r"^https?://[^/\s]+", p.base_url):
            errors.append(f"{where}.base_url: must be an http(s) URL, got {p.base_url!r}")
        elif re.match(r"^https?://[^/\s]*@", p.base_url):
            errors.append(
                f"{where}.base_url: must not carry a user or password (the transports would "
                "drop or refuse them); put the credential in api_key or headers"
            )
        if p.max_connections < 1:
            errors.append(f"{where}.max_connections: must be at least 1")
        for key, value in dataclasses.asdict(p.timeouts).items():
            if value <= 0:
                errors.append(f"{where}.timeouts.{key}: must be positive, got {value}")
    errors.extend(_check_policy(config))
    errors.extend(_check_routing(config, models=models))
    errors.extend(_check_cache(config))
    if models:
        errors.extend(ModelCatalog.from_config(config).problems())
    return [_with_line(e, lines) for e in errors]


_CAPABILITIES = ("tools", "vision", "json_schema")


def _check_routing(config: GatewayConfig, *, models: bool) -> list[str]:
    """Rules, privacy and complexity settings: everything a request would trip over later."""
    from gateway.catalog import ModelCatalog
    from gateway.complexity import ComplexityWeights
    from gateway.rules import fallback_problems, rule_problems

    errors = _privacy_problems(config.privacy)
    try:
        ComplexityWeights(**config.complexity.weights)
    except (TypeError, ValueError) as exc:
        errors.append(f"complexity.weights: {exc}")
    if not 0 <= config.complexity.threshold <= 1:
        errors.append("complexity.threshold: must be between 0 and 1")
    for name, provider in config.providers.items():
        for model, caps in provider.capabilities.items():
            for cap in caps:
                if cap not in _CAPABILITIES:
                    errors.append(
                        f"providers.{name}.capabilities.{model}: unknown capability {cap!r} "
                        f"(allowed: {', '.join(_CAPABILITIES)})"
                    )
    routing = config.routing
    if routing.force_provider and routing.force_provider not in config.providers:
        errors.append(f"routing.force_provider: no provider is called {routing.force_provider!r}")
    if not models:
        return errors
    catalog = ModelCatalog.from_config(config)
    categories = tuple(d.category for d in config.privacy.detectors)
    errors += rule_problems(routing.rules, catalog, categories)
    errors += fallback_problems(config, catalog)
    if routing.capability_model and catalog.resolve(routing.capability_model) is None:
        errors.append(f"routing.capability_model: {routing.capability_model!r} is not a "
                      "configured model")  # fmt: skip
    if config.privacy.local_model:
        local = catalog.resolve(config.privacy.local_model)
        if local is None:
            errors.append(f"privacy.local_model: {config.privacy.local_model!r} is not a "
                          "configured model")  # fmt: skip
        elif not config.providers[local.provider].is_local:
            errors.append(f"privacy.local_model: {config.privacy.local_model!r} is served by "
                          f"{local.provider!r}, which is not a local provider")  # fmt: skip
    return errors


def _check_cache(config: GatewayConfig) -> list[str]:
    c = config.cache
    errors = _positive("cache.ttl_seconds", c.ttl_seconds)
    errors += _positive("cache.max_items", c.max_items)
    errors += _positive("cache.max_entry_bytes", c.max_entry_bytes)
    errors += _positive("cache.semantic.timeout_ms", c.semantic.timeout_ms)
    errors += _positive("cache.semantic.bucket_size", c.semantic.bucket_size)
    errors += _positive("cache.semantic.max_question_chars", c.semantic.max_question_chars)
    errors += _positive("responses.store_ttl_seconds", config.responses.store_ttl_seconds)
    errors += _positive("responses.max_items", config.responses.max_items)
    for i, key in enumerate(config.auth.keys):
        errors += _positive(f"auth.keys[{i}].cache_ttl_seconds", key.cache_ttl_seconds)
    if c.max_temperature < 0:
        errors.append("cache.max_temperature: must not be negative")
    threshold = c.semantic.threshold
    if threshold is not None and not 0 < threshold <= 1:
        errors.append(f"cache.semantic.threshold: must be in (0, 1], got {threshold}")
    embedder = c.semantic.embedder
    if embedder != "builtin" and c.enabled and c.semantic.enabled:
        provider, _, model = embedder.partition(":")
        if not model or provider not in config.providers:
            errors.append(
                f"cache.semantic.embedder: {embedder!r} must be `builtin` or "
                f"`provider:model` with a configured provider ({', '.join(config.providers)})"
            )
    return errors


def _privacy_problems(privacy: PrivacyConfig) -> list[str]:
    """Keywords, then each custom detector in turn, so an error names the one at fault."""
    from gateway.privacy import PrivacyDetectorSpec, PrivacyScanner

    errors: list[str] = []
    try:
        PrivacyScanner((), privacy.keywords or None)
    except ValueError as exc:
        errors.append(f"privacy.keywords: {exc}")
    specs: list[PrivacyDetectorSpec] = []
    for i, d in enumerate(privacy.detectors):
        spec = PrivacyDetectorSpec(d.name, d.regex, d.category)
        try:
            PrivacyScanner([*specs, spec])
        except ValueError as exc:
            errors.append(f"privacy.detectors[{i}]: {exc}")
        else:
            specs.append(spec)
    return errors


def _positive(where: str, value: object) -> list[str]:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return []  # not a limit (e.g. a tier's privacy_level)
    return [f"{where}: must be positive, got {value}"] if value <= 0 else []


def _check_policy(config: GatewayConfig) -> list[str]:
    """Keys, tiers, teams, limits and prices: every reference resolves, every digest is unique."""
    errors: list[str] = []
    auth = config.auth
    tiers = config.tiers
    for name, tier in tiers.items():
        for setting, value in dataclasses.asdict(tier).items():
            errors += _positive(f"tiers.{name}.{setting}", value)
    if auth.default_tier not in tiers and auth.default_tier != "unlimited":
        errors.append(
            f"auth.default_tier: unknown tier {auth.default_tier!r} "
            f"(tiers: {', '.join(tiers) or 'none'}; 'unlimited' needs no entry)"
        )
    seen: dict[str, str] = {}
    names: set[str] = set()
    for plain in auth.api_keys:
        seen.setdefault(hashlib.sha256(plain.encode()).hexdigest(), "auth.api_keys")
    for i, key in enumerate(auth.keys):
        where = f"auth.keys[{i}]"
        label = f"{where} ({key.name!r})"
        digest = key.sha256.strip().lower()
        if not key.name:
            errors.append(f"{where}.name: must not be empty")
        elif key.name in names:
            errors.append(f"{where}.name: {key.name!r} is used by another key")
        names.add(key.name)
        if not _HEX64.match(digest):
            errors.append(
                f"{where}.sha256: {label} must be the 64-hex-digit sha256 of the key "
                "(`gateway hash-key` prints it)"
            )
        elif digest in seen:
            errors.append(f"{where}.sha256: {label} has the same digest as {seen[digest]}")
        else:
            seen[digest] = label
        if key.tier and key.tier not in tiers and key.tier != "unlimited":
            errors.append(f"{where}.tier: {label} names unknown tier {key.tier!r}")
        errors += _positive(f"{where}.monthly_budget_usd", key.monthly_budget_usd)
    for name, team in config.teams.items():
        errors += _positive(f"teams.{name}.monthly_budget_usd", team.monthly_budget_usd)
    for name, limit in config.provider_limits.items():
        if name not in config.providers:
            errors.append(f"provider_limits.{name}: no provider is called {name!r}")
        for setting, value in dataclasses.asdict(limit).items():
            errors += _positive(f"provider_limits.{name}.{setting}", value)
    for name, price in config.pricing.items():
        if price.input_per_1m < 0 or price.output_per_1m < 0:
            errors.append(f"pricing.{name}: prices must not be negative")
    errors += _positive("limits.default_completion_tokens", config.limits.default_completion_tokens)
    errors += _positive("limits.lease_seconds", config.limits.lease_seconds)
    return errors


def per_process_limits(config: GatewayConfig) -> list[str]:
    """The limits and budgets in effect: in memory, each process would keep its own."""
    auth = config.auth
    used = {auth.default_tier} | {key.tier or auth.default_tier for key in auth.keys}
    found = [
        f"tiers.{name}"
        for name, tier in config.tiers.items()
        if name in used and any(_is_limit(v) for v in dataclasses.asdict(tier).values())
    ]
    found += [
        f"provider_limits.{name}"
        for name, limit in config.provider_limits.items()
        if any(_is_limit(v) for v in dataclasses.asdict(limit).values())
    ]
    found += [
        f"auth.keys[{i}].monthly_budget_usd"
        for i, key in enumerate(auth.keys)
        if key.monthly_budget_usd is not None
    ]
    found += [
        f"teams.{name}.monthly_budget_usd"
        for name, team in config.teams.items()
        if team.monthly_budget_usd is not None
    ]
    return found


def _is_limit(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def workers_problems(config: GatewayConfig, workers: int) -> list[str]:
    """Several workers with limits in memory would each admit the whole limit."""
    if workers <= 1 or config.state.redis_url:
        return []
    found = per_process_limits(config)
    if not found:
        return []
    shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    return [
        f"server.workers: {workers} workers with in-memory state would each keep their own "
        f"limits and budgets ({shown}), letting through up to {workers} times as much; "
        "set state.redis_url (REDIS_URL) to share them, or run 1 worker per replica"
    ]


def _with_line(error: str, lines: dict[str, int]) -> str:
    path = error.split(":", 1)[0]
    while path and path not in lines:
        path = path.rpartition(".")[0]
    return f"{error} (line {lines[path]})" if path else error


def redacted(config: GatewayConfig) -> dict[str, Any]:
    """The resolved config as plain data, with secrets masked."""

    def mask(key: str, value: Any) -> Any:
        if key in SECRET_KEYS and value:
            if isinstance(value, (list, tuple)):
                return [_mask(v) for v in value]
            return _mask(str(value))
        if isinstance(value, dict):
            if key == "headers":
                return {k: _mask(v) if _SECRET_HEADER.search(k) else v for k, v in value.items()}
            return {k: mask(k, v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [mask("", v) for v in value]
        if isinstance(value, str) and _URL_CREDENTIALS.match(value):
            return _mask(value)  # any URL with a user or password in it (a base_url too)
        return value

    return mask("", dataclasses.asdict(config))  # type: ignore[no-any-return]


_URL_CREDENTIALS = re.compile(r"^\w+://[^/@\s]*@")


def _mask(secret: str) -> str:
    match = re.match(r"^(\w+://)([^@]*@)?(.*)$", secret)
    if match:  # a URL: keep scheme and host, hide credentials
        return match.group(1) + ("***@" if match.group(2) else "") + match.group(3)
    return secret[:3] + "***" if len(secret) > 8 else "***"
