"""Requests per second and latency percentiles from `wrk`, with a Lua script per target."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA_TEMPLATE = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{headers}
local f = assert(io.open("{body_path}", "rb"))
wrk.body = f:read("*a")
f:close()

-- Every request unique (a counter at the end of the last message), so a gateway's
-- response cache misses as it would on real traffic; the same for every contender.
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local head, tail = wrk.body:match('^(.*)("}}%]}}%s*)$')
local n = 0
request = function()
  if head == nil then return wrk.format() end
  n = n + 1
  return wrk.format(nil, nil, nil, head .. " #" .. tostring(tid) .. "-" .. n .. tail)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"errors":%d,"non_2xx":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    non_2xx: int

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def write_script(path: Path, body_path: Path, headers: dict[str, str]) -> Path:
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    path.write_text(LUA_TEMPLATE.format(headers=lines, body_path=body_path))
    return path


def run_wrk(
    url: str, script: Path, connections: int, duration_s: float, threads: int = 2
) -> LoadResult:
    threads = max(1, min(threads, connections))
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 30).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    raw = json.loads(line[len("BENCH_JSON ") :])
    seconds = raw["duration_us"] / 1e6
    return LoadResult(
        requests=raw["requests"],
        rps=raw["requests"] / seconds if seconds else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors=raw["errors"],
        non_2xx=raw["non_2xx"],
    )
