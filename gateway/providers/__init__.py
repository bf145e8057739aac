"""Upstream clients. Every provider is one pooled httpx client; only the transport differs."""

from __future__ import annotations

from gateway.config import GatewayConfig
from gateway.providers.base import Provider


def build_providers(config: GatewayConfig) -> dict[str, Provider]:
    return {name: Provider(name, cfg) for name, cfg in config.providers.items()}


__all__ = ["Provider", "build_providers"]
