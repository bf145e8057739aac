"""Benchmark harness: this gateway against no gateway and LiteLLM's proxy.

Run `python -m bench --quick` (about a minute) or `python -m bench` (a few minutes);
both regenerate docs/BENCHMARKS.md and docs/bench-latency.png.
"""
