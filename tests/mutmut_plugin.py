"""pytest plugin for `mutmut run` (pyproject.toml [tool.mutmut]; docs/TESTING.md).

mutmut 3 runs against each mutant only the tests that reached the mutated function during
its stats pass, as recorded in the pytest process. Most tests drive gateways in processes
of their own, so the gateway code they reach would go unseen and have "no tests". During
the stats pass this plugin has every child process load tests/mutmut_site/sitecustomize.py,
and after each test asks each child (SIGUSR1) for the functions it reached meanwhile and
credits the test with them. In the mutant runs it does nothing: the children inherit
MUTANT_UNDER_TEST and run the mutant themselves.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

SITE = Path(__file__).resolve().parent / "mutmut_site"
_last_seq: dict[int, int] = {}


def _collecting() -> bool:
    return os.environ.get("MUTANT_UNDER_TEST") == "stats"


def pytest_configure(config: pytest.Config) -> None:
    if not _collecting():
        return
    os.environ["MUTMUT_HITS_DIR"] = tempfile.mkdtemp(prefix="mutmut-hits-")
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(SITE) + (os.pathsep + path if path else "")


def _ours(pid: int, hits_dir: str) -> bool:
    """A live process started under this stats pass (not a reused pid)."""
    try:
        return hits_dir.encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def _gather(hits_dir: str) -> set[str]:
    asked: dict[int, Path] = {}
    for pid_file in Path(hits_dir).glob("*.pid"):
        pid = int(pid_file.stem)
        if not _ours(pid, hits_dir):
            continue
        seq = _last_seq.get(pid, 0) + 1
        try:
            os.kill(pid, 10)  # SIGUSR1
        except ProcessLookupError:
            continue
        _last_seq[pid] = seq
        asked[pid] = Path(hits_dir, f"{pid}.{seq}.hits")
    hits: set[str] = set()
    deadline = time.monotonic() + 5
    for pid, path in asked.items():
        while not path.exists() and time.monotonic() < deadline and _ours(pid, hits_dir):
            time.sleep(0.002)
        if path.exists():
            hits |= {line for line in path.read_text().splitlines() if line}
            path.unlink()
    return hits


@pytest.hookimpl(tryfirst=True)  # before mutmut's own teardown hook reads the record
def pytest_runtest_teardown(item: pytest.Item) -> None:
    hits_dir = os.environ.get("MUTMUT_HITS_DIR")
    if not _collecting() or not hits_dir:
        return
    from mutmut.state import state

    state()._stats |= _gather(hits_dir)
