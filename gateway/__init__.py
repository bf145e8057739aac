"""OpenAI-compatible gateway: one base_url, local or cloud per request."""

__version__ = "0.1.0"
