"""Real processes on loopback: the fake cloud upstream, gateways, the local LLM server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.procs import Process, free_port, start, wait_ready
from tests import llm_server

REPO = Path(__file__).resolve().parent.parent
# In CI a missing dependency must fail the run instead of quietly skipping tests.
STRICT = os.environ.get("GATEWAY_TEST_STRICT") == "1"
CLIENT_KEY = "test-key-1"
UPSTREAM_KEY = "sk-upstream-secret"
ADMIN_KEY = "test-admin-key"


def require(reason: str | None) -> None:
    """Skip (or, under GATEWAY_TEST_STRICT=1, fail) when `reason` says something is missing."""
    if reason:
        if STRICT:
            pytest.fail(f"{reason} (GATEWAY_TEST_STRICT=1 forbids skipping)")
        pytest.skip(reason)


async def redis_or_skip() -> Any:
    """An asyncio client of the Redis at 127.0.0.1:6379; skips (strict: fails) if it is not
    answering."""
    import redis.asyncio

    client = redis.asyncio.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1)
    try:
        await client.ping()
    except redis.RedisError as exc:
        await client.aclose()
        require(f"Redis is not answering at 127.0.0.1:6379 ({exc})")
    return client


@dataclass
class FakeUpstream:
    process: Process
    url: str  # root, e.g. http://127.0.0.1:1234

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def requests(self) -> list[dict[str, Any]]:
        return httpx.get(self.url + "/_fake/requests").json()  # type: ignore[no-any-return]

    def last_request(self) -> dict[str, Any]:
        return self.requests()[-1]

    def clear(self) -> None:
        httpx.delete(self.url + "/_fake/requests")

    def stats(self) -> dict[str, int]:
        return httpx.get(self.url + "/_fake/stats").json()  # type: ignore[no-any-return]


@dataclass
class GatewayProcess:
    process: Process
    url: str

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")


def run_process(
    name: str,
    cmd: list[str],
    tmp: Path,
    env: dict[str, str] | None = None,
    ready_path: str = "/healthz",
    timeout: float = 30.0,
) -> tuple[Process, str]:
    port = free_port()
    proc = start(name, [*cmd, "--port", str(port)], tmp / f"{name}-{port}.log", env, REPO)
    try:
        wait_ready(proc, "127.0.0.1", port, "GET", ready_path, None, {}, timeout)
    except Exception:
        proc.stop()
        raise
    return proc, f"http://127.0.0.1:{port}"


def start_gateway(config: str, tmp: Path, env: dict[str, str] | None = None) -> GatewayProcess:
    """A gateway on `config`; without a `cache:` section, with the cache off: tests of
    proxying, limits and routing repeat identical requests that must reach the upstream
    (the cache has its own tests, tests/test_cache.py)."""
    path = tmp / f"gateway-{free_port()}.yaml"
    text = textwrap.dedent(config)
    if not any(line.startswith("cache:") for line in text.splitlines()):
        text += "\ncache: {enabled: false}\n"
    path.write_text(text)
    clean = {"GATEWAY_API_KEYS": "", "OPENAI_API_KEY": "", "REDIS_URL": "", "GATEWAY_PORT": ""}
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(path)]
    proc, url = run_process("gateway", cmd, tmp, clean | (env or {}))
    return GatewayProcess(proc, url)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("procs")


@pytest.fixture(scope="session")
def fake_upstream(workdir: Path) -> Iterator[FakeUpstream]:
    cmd = [sys.executable, "-m", "tests.fake_upstream", "--require-key", UPSTREAM_KEY]
    proc, url = run_process("fake-upstream", cmd, workdir, ready_path="/health")
    yield FakeUpstream(proc, url)
    proc.stop()


def local_config(local_llm: str, routing: str = "default_model: local") -> str:
    """A gateway on the local llama.cpp server alone, as `ollama` (alias `local`)."""
    return f"""
        providers:
          ollama:
            type: ollama
            base_url: {local_llm}
            models: ["{llm_server.MODEL_ID}"]
            timeouts: {{connect: 2, read: 120}}
        aliases: {{local: "ollama:{llm_server.MODEL_ID}"}}
        routing: {{{routing}}}
        """


def gateway_config(upstream: FakeUpstream, transport: str = "aiohttp") -> str:
    dead_port = free_port()  # nothing listens there
    return f"""
    server: {{max_body_bytes: 65536}}
    auth: {{api_keys: "{CLIENT_KEY},test-key-2", admin_keys: "{ADMIN_KEY}"}}
    logging: {{level: info, format: json}}
    providers:
      openai:
        type: openai
        base_url: {upstream.base_url}
        transport: {transport}
        api_key: {UPSTREAM_KEY}
        models: [gpt-4o-mini, text-embedding-3-small]
        timeouts: {{connect: 2, read: 3, write: 5, pool: 5}}
        # Tests inject upstream faults on purpose, many in a row; a breaker that opened
        # would answer the next test for them (breakers: tests/test_resilience.py).
        breaker: {{enabled: false}}
      ollama:
        type: ollama
        base_url: {upstream.url}
        api_key: {UPSTREAM_KEY}
        models: ["llama3.2:8b"]
      mock:
        type: mock
        models: [demo]
      dead:
        type: openai
        base_url: http://127.0.0.1:{dead_port}/v1
        api_key: sk-dead
        models: [dead-model]
    aliases:
      cloud: openai:gpt-4o-mini
    routing:
      default_model: gpt-4o-mini
    """


@pytest.fixture(scope="session")
def gateway(fake_upstream: FakeUpstream, workdir: Path) -> Iterator[GatewayProcess]:
    """The gateway most tests talk to: auth on, the fake as `openai`, the demo, a dead provider."""
    gw = start_gateway(gateway_config(fake_upstream), workdir)
    yield gw
    gw.process.stop()


_LOCAL_LLM: list[llm_server.Server] = []  # the running server, for the per-test check


@pytest.fixture(scope="session")
def local_llm(workdir: Path) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server with Gemma 3 270M: the Ollama stand-in."""
    require(llm_server.available())
    port = free_port()
    log_path = workdir / f"llama-{port}.log"
    server = llm_server.Server(llm_server.start(port, log_path=log_path),
                               f"http://127.0.0.1:{port}", log_path)  # fmt: skip
    try:
        try:
            llm_server.wait_ready(server.url, timeout=120, proc=server.proc, log_path=log_path)
            llm_server.warm_up(server)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(str(exc), pytrace=False)
        _LOCAL_LLM.append(server)
        yield server.url
    finally:
        _LOCAL_LLM.clear()
        llm_server.stop(server.proc)


def _local_llm_death() -> str | None:
    return _LOCAL_LLM[0].death() if _LOCAL_LLM else None


@pytest.fixture(autouse=True)
def _local_llm_alive(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that uses the local LLM server says so in one line if the server died."""
    uses = "local_llm" in request.fixturenames
    death = _local_llm_death() if uses else None
    if death:
        pytest.fail(f"(before this test) {death}", pytrace=False)
    yield
    death = _local_llm_death() if uses else None
    if death:
        pytest.fail(death, pytrace=False)


@pytest.fixture
def client_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEY}"}


@contextlib.asynccontextmanager
async def in_process(
    text: str, base_url: str = "http://gateway.test", headers: dict[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The app `create_app` builds from config `text`, in this process, with its lifespan
    run by hand (httpx.ASGITransport does not run it), and a client for it. Built inside
    the test, so that mutation testing runs the mutated code (docs/TESTING.md)."""
    from gateway.app import create_app
    from gateway.config import parse_config

    app = create_app(parse_config(text, env={}))
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, inbox.get, outbox.put))  # type: ignore[arg-type]
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url=base_url, headers=headers) as c:
        yield c
    await inbox.put({"type": "lifespan.shutdown"})
    assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
    await task
