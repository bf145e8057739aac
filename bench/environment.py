"""What machine and which versions a run used."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

PACKAGES = (
    "starlette",
    "uvicorn",
    "httpx",
    "httpx-aiohttp",
    "aiohttp",
    "orjson",
    "uvloop",
    "httptools",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def command_output(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or done.stderr).strip()


def describe(repo: Path) -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    revision = command_output(["git", "rev-parse", "--short", "HEAD"], repo)
    dirty = command_output(["git", "status", "--porcelain", "gateway"], repo)
    wrk = command_output(["wrk", "-v"]).splitlines()
    return {
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
        "memory": f"{memory_gib():.0f} GiB",
        "os": f"{os_name()}, Linux {platform.release()}",
        "python": platform.python_version(),
        "gateway_revision": (revision if revision and "fatal" not in revision else "no commit")
        + (" + uncommitted changes" if dirty else ""),
        "wrk": wrk[0].split(" [")[0] if wrk else "unknown",
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }
