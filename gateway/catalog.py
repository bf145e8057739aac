"""Model names clients may send, and where each one goes.

`auto`, aliases from YAML, `provider:model` (split at the first colon, only when the
prefix is a configured provider: `ollama:llama3.2:8b` is model `llama3.2:8b`), bare
names a provider lists, and names matching a provider's patterns (`gpt-*`, `o[0-9]*`:
shell-style, tried in config order after every listed name).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str


def is_pattern(model: str) -> bool:
    return any(c in model for c in "*?[")


class ModelCatalog:
    def __init__(
        self,
        providers: dict[str, tuple[str, ...]],
        aliases: dict[str, str],
        default_model: str,
    ) -> None:
        self.providers = providers
        self.aliases = aliases
        self.default_model = default_model
        self._bare: dict[str, Target] = {}
        self._patterns: list[tuple[str, str]] = []  # (pattern, provider)
        self._duplicates: list[str] = []
        for provider, models in providers.items():
            for model in models:
                if is_pattern(model):
                    self._patterns.append((model, provider))
                    continue
                if model in self._bare:
                    self._duplicates.append(
                        f"providers.{provider}.models: {model!r} is also listed by provider "
                        f"{self._bare[model].provider!r}; use '{provider}:{model}' instead"
                    )
                    continue
                self._bare[model] = Target(provider, model)

    @classmethod
    def from_config(cls, config: GatewayConfig) -> ModelCatalog:
        providers = {name: p.models for name, p in config.providers.items()}
        return cls(providers, dict(config.aliases), config.routing.default_model)

    def resolve(self, name: str) -> Target | None:
        if name == AUTO:
            name = self.default_model
        name = self.aliases.get(name, name)
        prefix, colon, rest = name.partition(":")
        if colon and rest and prefix in self.providers:
            return Target(prefix, rest)
        target = self._bare.get(name)
        if target is None and name:
            for pattern, provider in self._patterns:
                if fnmatchcase(name, pattern):
                    return Target(provider, name)
        return target

    def first_model(self, provider: str) -> Target | None:
        """The provider's first listed model that is a name, not a pattern."""
        for model in self.providers.get(provider, ()):
            if not is_pattern(model):
                return Target(provider, model)
        return None

    def listing(self) -> list[tuple[str, str]]:
        """(model id, owner) for GET /v1/models: auto, aliases, then every provider model."""
        out: list[tuple[str, str]] = []
        default = self.resolve(AUTO)
        if default:
            out.append((AUTO, default.provider))
        for alias in self.aliases:
            target = self.resolve(alias)
            if target:
                out.append((alias, target.provider))
        seen = {model_id for model_id, _ in out}
        for model, target in self._bare.items():
            if model not in seen:
                out.append((model, target.provider))
        return out

    def problems(self) -> list[str]:
        errors = list(self._duplicates)
        for alias, target in self.aliases.items():
            if alias == AUTO:
                errors.append("aliases.auto: 'auto' is reserved for the router")
            elif self.resolve(target) is None or target in self.aliases:
                errors.append(f"aliases.{alias}: {target!r} is not a configured model")
        if self.resolve(AUTO) is None:
            errors.append(
                f"routing.default_model: {self.default_model!r} is not a configured model"
            )
        return errors
