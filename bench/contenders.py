"""The upstreams and the contenders: each contender is a few lines of configuration.

A later stage joins the table with one more entry in CONTENDERS, for example
    Contender("gateway+auth", "gateway", gateway_config={"auth": {"api_keys": ["sk-b"]}},
              headers={"Authorization": "Bearer sk-b"}),
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from bench.procs import Process, free_port, start, wait_ready

REPO = Path(__file__).resolve().parent.parent
LITELLM_SPEC = "litellm[proxy]==1.108.7"
LITELLM_MASTER_KEY = "sk-bench-master"
BENCH_KEY_SHA256 = hashlib.sha256(b"sk-bench").hexdigest()
CHAT_PATH = "/v1/chat/completions"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class UpstreamSpec:
    """One fake upstream process; its CLI defaults give every request the same behaviour."""

    delay_ms: int = 0
    chunks: int = 8
    interval_ms: int = 0


# scenario -> upstream; one process each, so no contender needs to pass options through
SCENARIOS: dict[str, UpstreamSpec] = {
    "fast": UpstreamSpec(delay_ms=0),
    "slow": UpstreamSpec(delay_ms=20),
    "stream": UpstreamSpec(chunks=64, interval_ms=20),
    "long": UpstreamSpec(chunks=120, interval_ms=500),  # a minute: for 1,000 open streams
}


@dataclass(frozen=True)
class Contender:
    name: str
    kind: Literal["direct", "gateway", "litellm"]
    gateway_config: dict[str, Any] = field(default_factory=dict)  # deep-merged into the YAML
    provider_options: dict[str, Any] = field(default_factory=dict)  # into every provider
    headers: dict[str, str] = field(default_factory=dict)
    note: str = ""


CONTENDERS: list[Contender] = [
    Contender("direct", "direct", note="no gateway: the client calls the fake upstream"),
    Contender(
        "gateway",
        "gateway",
        note="this gateway as shipped (aiohttp transport, cache on: every request a miss)",
    ),
    Contender(
        "gateway-nocache",
        "gateway",
        gateway_config={"cache": {"enabled": False}},
        note="this gateway with the response cache off (the cache's cost on a miss)",
    ),
    Contender(
        "gateway-bare",
        "gateway",
        gateway_config={"cache": {"enabled": False}, "privacy": {"enabled": False}},
        note="the proxy without the privacy scan and the cache (what the policy stages add)",
    ),
    Contender(
        "gateway+policy",
        "gateway",
        gateway_config={
            "auth": {"keys": [{"name": "bench", "sha256": BENCH_KEY_SHA256, "tier": "bench"}]},
            # Limits that never refuse, so every request pays for the full admission and
            # settlement: three windows, a token budget and a concurrency lease.
            "tiers": {
                "bench": {
                    "requests_per_minute": 10**9,
                    "requests_per_hour": 10**9,
                    "tokens_per_minute": 10**12,
                    "max_concurrent": 100_000,
                }
            },
            "pricing": {"gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.6}},
        },
        headers={"Authorization": "Bearer sk-bench"},
        note="a virtual key with rate, token and concurrency limits, priced (in memory)",
    ),
    Contender(
        "gateway-httpx",
        "gateway",
        provider_options={"transport": "httpx"},
        note="this gateway with httpx's own connection pool",
    ),
    Contender(
        "litellm",
        "litellm",
        headers={"Authorization": f"Bearer {LITELLM_MASTER_KEY}"},
        note="LiteLLM proxy, master key, no database",
    ),
]


class Unavailable(Exception):
    """A contender that cannot run here; the reason goes into the report."""


@dataclass
class Upstreams:
    processes: dict[str, Process]
    ports: dict[str, int]

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()


def start_upstreams(workdir: Path) -> Upstreams:
    processes: dict[str, Process] = {}
    ports: dict[str, int] = {}
    try:
        for scenario, spec in SCENARIOS.items():
            port = free_port()
            cmd = [
                sys.executable,
                "-m",
                "tests.fake_upstream",
                "--host",
                HOST,
                "--port",
                str(port),
                "--delay-ms",
                str(spec.delay_ms),
                "--chunks",
                str(spec.chunks),
                "--interval-ms",
                str(spec.interval_ms),
                "--workers",
                "1",
            ]
            processes[scenario] = start(
                f"upstream-{scenario}", cmd, workdir / f"upstream-{scenario}.log", cwd=REPO
            )
            ports[scenario] = port
        for scenario, process in processes.items():
            wait_ready(process, HOST, ports[scenario], "GET", "/health", None, {}, 15)
    except Exception:
        for process in processes.values():
            process.stop()
        raise
    return Upstreams(processes, ports)


@dataclass
class Running:
    """A started contender: where each scenario's requests go, and how long it took to start."""

    contender: Contender
    process: Process | None
    routes: dict[str, tuple[int, str]]  # scenario -> (port, model)
    ready_s: float | None = None  # start -> health check 200
    first_200_s: float | None = None  # start -> first chat completion 200

    def stop(self) -> None:
        if self.process:
            self.process.stop()


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def chat_body(model: str) -> bytes:
    return b'{"model":"%s","messages":[{"role":"user","content":"hello"}]}' % model.encode()


def launch(contender: Contender, upstreams: Upstreams, workdir: Path) -> Running:
    if contender.kind == "direct":
        routes = {s: (port, "gpt-4o-mini") for s, port in upstreams.ports.items()}
        return Running(contender, None, routes)
    port = free_port()
    if contender.kind == "gateway":
        process, routes, health = start_gateway(contender, upstreams, port, workdir)
    else:
        process, routes, health = start_litellm(contender, upstreams, port, workdir)
    running = Running(contender, process, routes)
    try:
        running.ready_s = wait_ready(process, HOST, port, "GET", health, None, {}, 90)
        fast_model = routes["fast"][1]
        headers = {"Content-Type": "application/json", **contender.headers}
        running.first_200_s = wait_ready(
            process, HOST, port, "POST", CHAT_PATH, chat_body(fast_model), headers, 30
        )
    except Exception:
        running.stop()
        raise
    return running


def gateway_command() -> list[str]:
    if not (REPO / "gateway" / "cli.py").exists():
        raise Unavailable("gateway/cli.py does not exist yet")
    script = Path(sys.executable).parent / "gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


def gateway_provider(scenario: str) -> str:
    return "fake" if scenario == "fast" else f"fake{scenario}"


def gateway_config(contender: Contender, port: int, upstreams: Upstreams) -> dict[str, Any]:
    providers = {
        gateway_provider(scenario): {
            "type": "openai",
            "base_url": f"http://{HOST}:{up_port}/v1",
            "api_key": "sk-fake",
            "models": ["gpt-4o-mini" if scenario == "fast" else f"gpt-4o-mini-{scenario}"],
            # 1,000 open streams need 1,000 upstream connections (the default pool is 256)
            "max_connections": 2048,
            **contender.provider_options,
        }
        for scenario, up_port in upstreams.ports.items()
    }
    config = {
        "server": {"host": HOST, "port": port, "workers": 1},
        "auth": {"api_keys": []},
        "logging": {"level": "warning"},
        "providers": providers,
        "routing": {"default_model": "gpt-4o-mini"},
    }
    return deep_merge(config, contender.gateway_config)


def start_gateway(
    contender: Contender, upstreams: Upstreams, port: int, workdir: Path
) -> tuple[Process, dict[str, tuple[int, str]], str]:
    command = gateway_command()
    config_path = workdir / f"{contender.name}.yaml"
    config_path.write_text(yaml.safe_dump(gateway_config(contender, port, upstreams)))
    cmd = [*command, "serve", "--config", str(config_path), "--port", str(port)]
    process = start(contender.name, cmd, workdir / f"{contender.name}.log", cwd=REPO)
    routes = {
        s: (port, "gpt-4o-mini" if s == "fast" else f"{gateway_provider(s)}:gpt-4o-mini")
        for s in upstreams.ports
    }
    return process, routes, "/healthz"


def litellm_model(scenario: str) -> str:
    return "gpt-4o-mini" if scenario == "fast" else f"gpt-4o-mini-{scenario}"


def start_litellm(
    contender: Contender, upstreams: Upstreams, port: int, workdir: Path
) -> tuple[Process, dict[str, tuple[int, str]], str]:
    venv = workdir / "litellm-venv"
    if not (venv / "bin" / "litellm").exists():
        raise Unavailable("LiteLLM is not installed (see the install log in bench/.work/)")
    config = {
        "model_list": [
            {
                "model_name": litellm_model(scenario),
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": f"http://{HOST}:{up_port}/v1",
                    "api_key": "sk-fake",
                },
            }
            for scenario, up_port in upstreams.ports.items()
        ],
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
    }
    config_path = workdir / "litellm.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env: dict[str, str | None] = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "DATABASE_URL": None,  # no database
        # its upstream pool allows 500 connections a host; the gateway's is raised to 2,048 too
        "AIOHTTP_CONNECTOR_LIMIT": "4096",
        "AIOHTTP_CONNECTOR_LIMIT_PER_HOST": "2048",
    }
    cmd = [
        str(venv / "bin" / "litellm"),
        "--config",
        str(config_path),
        "--host",
        HOST,
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    process = start(contender.name, cmd, workdir / "litellm.log", env=env, cwd=workdir)
    routes = {s: (port, litellm_model(s)) for s in upstreams.ports}
    return process, routes, "/health/liveliness"


def install_litellm(workdir: Path) -> tuple[str, str]:
    """Install LiteLLM into its own venv once; returns (installed version, note)."""
    venv = workdir / "litellm-venv"
    version = package_version(venv, "litellm")
    if version:
        return version, ""
    log = workdir / "litellm-install.log"
    python = shutil.which("python3") or sys.executable
    subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True)
    pip = [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q"]
    note = ""
    with log.open("w") as out:
        code = subprocess.run(
            [*pip, LITELLM_SPEC], stdout=out, stderr=subprocess.STDOUT, timeout=900
        ).returncode
        if code != 0:
            nearest = nearest_litellm_version(venv)
            if nearest:
                note = f"{LITELLM_SPEC} did not install; took the nearest version, {nearest}"
                subprocess.run(
                    [*pip, f"litellm[proxy]=={nearest}"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=900,
                )
    version = package_version(venv, "litellm")
    if not version:
        raise Unavailable(f"installing {LITELLM_SPEC} failed: see bench/.work/litellm-install.log")
    return version, note


def package_version(venv: Path, name: str) -> str:
    python = venv / "bin" / "python"
    if not python.exists():
        return ""
    code = f"import importlib.metadata as m; print(m.version({name!r}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def nearest_litellm_version(venv: Path) -> str:
    wanted = tuple(int(x) for x in LITELLM_SPEC.split("==")[1].split("."))
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "index", "versions", "litellm"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = next((ln for ln in done.stdout.splitlines() if "Available versions:" in ln), "")
    versions = []
    for text in line.split(":", 1)[-1].split(","):
        try:
            versions.append(tuple(int(x) for x in text.strip().split(".")))
        except ValueError:
            continue
    if not versions:
        return ""

    def distance(v: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(abs(a - b) for a, b in zip(v, wanted, strict=False))

    return ".".join(str(x) for x in min(versions, key=distance))
