"""Upstream clients. Every provider is one pooled httpx client; only the transport differs."""

from __future__ import annotations

from gateway.providers.base import Provider

__all__ = ["Provider"]
