"""python -m bench.disconnect: how soon the upstream learns that a streaming client left.

Starts the fake upstream and the gateway, opens a stream (100 chunks 2 s apart), reads the
first event, hangs up, and times until the fake upstream counts the stream as cancelled.
The figure includes one stats poll (a loopback HTTP call, about a millisecond).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.procs import free_port, start, wait_ready

REPO = Path(__file__).resolve().parent.parent


def main(rounds: int = 20) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-disconnect-"))
    fake_port, gw_port = free_port(), free_port()
    fake_cmd = [sys.executable, "-m", "tests.fake_upstream", "--port", str(fake_port)]
    fake = start("fake", fake_cmd, tmp / "fake.log", None, REPO)
    config = tmp / "gateway.yaml"
    config.write_text(
        "logging: {level: warning}\nrouting: {default_model: m}\nproviders:\n"
        f"  openai: {{type: openai, base_url: 'http://127.0.0.1:{fake_port}/v1', api_key: k,"
        " models: [m]}\n"
    )
    gw_cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    gateway = start("gateway", [*gw_cmd, "--port", str(gw_port)], tmp / "gateway.log", None, REPO)
    try:
        wait_ready(fake, "127.0.0.1", fake_port, "GET", "/health", None, {}, 30)
        wait_ready(gateway, "127.0.0.1", gw_port, "GET", "/healthz", None, {}, 30)
        stats_url = f"http://127.0.0.1:{fake_port}/_fake/stats"
        url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
            "fake": {"chunks": 100, "interval_ms": 2000},
        }
        times = []
        with httpx.Client() as client:
            for _ in range(rounds):
                before = client.get(stats_url).json()["cancelled_streams"]
                with client.stream("POST", url, json=body) as response:
                    next(response.iter_lines())
                hung_up = time.perf_counter()
                deadline = hung_up + 5
                while client.get(stats_url).json()["cancelled_streams"] == before:
                    if time.perf_counter() > deadline:
                        print("the upstream stream was not cancelled within 5 s")
                        return 1
                    time.sleep(0.001)
                times.append((time.perf_counter() - hung_up) * 1000)
        print(
            f"client hang-up to upstream cancel: median {statistics.median(times):.1f} ms, "
            f"max {max(times):.1f} ms over {rounds} streams"
        )
        return 0
    finally:
        gateway.stop()
        fake.stop()


if __name__ == "__main__":
    raise SystemExit(main())
