"""The local LLM server's build is portable, and its death is reported in one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import llm_server
from tests.conftest import require

SKYLAKE_SERVER = frozenset(
    ["sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512_vnni"]
)
SAPPHIRE_RAPIDS = SKYLAKE_SERVER | {"amx_tile", "amx_int8", "amx_bf16", "avx512_bf16"}


@pytest.mark.parametrize(
    ("flags", "level"),
    [
        (SAPPHIRE_RAPIDS, "x86-64-v3"),
        (SKYLAKE_SERVER, "x86-64-v3"),
        (frozenset({"sse4_2", "avx"}), "x86-64-v2"),  # Sandy Bridge: no AVX2
        (frozenset(), "x86-64"),
    ],
)
def test_the_build_is_portable_whatever_cpu_builds_it(flags: frozenset[str], level: str) -> None:
    if llm_server.platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-64 instruction-set levels")
    spec = llm_server.build_spec(flags)
    assert spec.level == level
    args = set(spec.cmake_args)
    assert "-DGGML_NATIVE=OFF" in args  # never -march=native
    for isa in ("AVX512", "AVX512_VNNI", "AVX512_BF16", "AMX_TILE", "AMX_INT8", "AMX_BF16"):
        assert f"-DGGML_{isa}=OFF" in args
    assert ("-DGGML_AVX2=ON" in args) == (level == "x86-64-v3")
    # The cache key names what the binary depends on, so no other CPU class reuses it.
    assert level in spec.key and llm_server.LLAMA_CPP_VERSION in spec.key
    assert spec.wheel_dir.name == spec.key


def test_a_binary_built_for_another_cpu_is_named() -> None:
    info = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 |"
    assert llm_server.missing_features(info, SKYLAKE_SERVER | {"pni", "ssse3"}) == ["AMX_INT8"]
    assert llm_server.missing_features(info, SAPPHIRE_RAPIDS | {"pni", "ssse3"}) == []
    assert llm_server.missing_features(info, frozenset({"pni", "ssse3", "avx"})) == [
        "AVX2",
        "AVX512",
        "AMX_INT8",
    ]


def test_the_installed_build_runs_on_this_cpu() -> None:
    reason = llm_server.available()
    if reason and "missing" in reason:
        require(reason)
    assert llm_server.build_problem() is None


def crashing_server(tmp_path: Path) -> llm_server.Server:
    log = tmp_path / "server.log"
    code = "import os, signal, sys; print('loading model', flush=True); os.kill(os.getpid(), signal.SIGSEGV)"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)
    proc.wait(timeout=30)
    return llm_server.Server(proc, "http://127.0.0.1:9", log)


def test_a_server_that_dies_is_reported_with_its_signal_and_log(tmp_path: Path) -> None:
    server = crashing_server(tmp_path)
    death = server.death()
    assert death is not None
    first = death.splitlines()[0]
    assert "was killed by SIGSEGV (exit status 139)" in first
    assert "loading model" in death  # the log's tail follows


def test_a_server_that_never_starts_is_reported_the_same_way(tmp_path: Path) -> None:
    server = crashing_server(tmp_path)
    with pytest.raises(RuntimeError) as info:
        llm_server.wait_ready(server.url, timeout=5, proc=server.proc, log_path=server.log_path)
    assert "was killed by SIGSEGV" in str(info.value)
    assert "loading model" in str(info.value)


def test_a_server_that_crashes_on_its_first_generation_is_caught_by_the_warm_up(
    tmp_path: Path,
) -> None:
    server = crashing_server(tmp_path)
    with pytest.raises(RuntimeError, match="killed by SIGSEGV"):
        llm_server.warm_up(server, timeout=2)


def test_exit_reasons() -> None:
    assert llm_server.exit_reason(1) == "exited with status 1"
    assert llm_server.exit_reason(-9) == "was killed by SIGKILL (exit status 137)"
