"""What a response cost: USD per 1M tokens from `pricing:`, by longest model-name prefix.

Local providers (ollama, mock) cost nothing. A cloud model with no price is unpriced:
its cost is unknown (None), never zero.
"""

from __future__ import annotations

from typing import Any

from gateway.config import GatewayConfig, PriceConfig
from gateway.stores import NANO

_LOCAL_TYPES = ("ollama", "mock")
_FREE = PriceConfig(0.0, 0.0)


class Pricing:
    def __init__(self, config: GatewayConfig) -> None:
        self._prices = sorted(config.pricing.items(), key=lambda item: -len(item[0]))
        self._local = {n for n, p in config.providers.items() if p.type in _LOCAL_TYPES}
        self._found: dict[tuple[str, str], PriceConfig | None] = {}

    def price(self, provider: str, model: str) -> PriceConfig | None:
        key = (provider, model)
        if key in self._found:
            return self._found[key]
        found: PriceConfig | None
        if provider in self._local:
            found = _FREE
        else:
            found = next((p for prefix, p in self._prices if model.startswith(prefix)), None)
        if len(self._found) > 4096:  # model names can come from clients: stay bounded
            self._found.clear()
        self._found[key] = found
        return found

    def cost_nano(self, provider: str, model: str, usage: dict[str, Any] | None) -> int | None:
        """The cost in nano-USD, 0 for local models, None if the model has no price."""
        price = self.price(provider, model)
        if price is None:
            return None
        if not usage or price is _FREE:
            return 0
        prompt = token_count(usage.get("prompt_tokens"))
        completion = token_count(usage.get("completion_tokens"))
        usd_per_token_nano = NANO / 1_000_000
        return round(
            (prompt * price.input_per_1m + completion * price.output_per_1m) * usd_per_token_nano
        )

    def known_cost_nano(
        self, provider: str, model: str, usage: dict[str, Any] | None
    ) -> int | None:
        """What a response cost, when that is known: its usage priced, 0 on a local
        provider; None when the model has no price or a priced model sent no usage (the
        limits stage then bills the estimate)."""
        if not usage and self.price(provider, model) is not _FREE:
            return None
        return self.cost_nano(provider, model, usage)


def token_count(value: Any) -> int:
    """A usage field as a count: anything but a positive integer is 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
