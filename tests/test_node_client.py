"""The official `openai` npm package on Node against the gateway (tests/node/chat.mjs):
a chat completion, a stream with usage, and errors mapped to the SDK's classes. Node and
the package come from .ci/run (`npm ci --prefix tests/node`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import openai
import orjson

from tests.conftest import CLIENT_KEY, GatewayProcess, require

NODE_DIR = Path(__file__).resolve().parent / "node"


def node_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed: the JavaScript client is untested"
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        return "the openai npm package is not installed (npm ci --prefix tests/node)"
    return None


def test_the_openai_npm_package(gateway: GatewayProcess) -> None:
    require(node_missing())
    env = dict(os.environ, GATEWAY_URL=gateway.base_url, GATEWAY_KEY=CLIENT_KEY,
               GATEWAY_MODEL="gpt-4o-mini")  # fmt: skip
    run = subprocess.run(["node", str(NODE_DIR / "chat.mjs")], capture_output=True, text=True,
                         env=env, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    seen = orjson.loads(run.stdout.strip().splitlines()[-1])

    # What the Python SDK gets for the same request, through the same gateway.
    python = openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY)
    expected = python.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello from Node."}]
    )
    assert seen["content"] == expected.choices[0].message.content
    assert seen["content"]
    assert seen["usage"]["total_tokens"] == expected.usage.total_tokens  # type: ignore[union-attr]
    assert seen["streamed"] == seen["content"]
    assert seen["streamUsage"]["total_tokens"] > 0
    error = seen["error"]
    assert (error["class"], error["status"], error["code"]) == (
        "NotFoundError",
        404,
        "model_not_found",
    )
    assert seen["authError"] == {"class": "AuthenticationError", "status": 401}
