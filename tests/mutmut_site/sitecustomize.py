"""Loaded by every Python child of a `mutmut run` stats pass (tests/mutmut_plugin.py puts
this directory on PYTHONPATH then, and only then).

mutmut records which of the mutated functions each test reaches in the pytest process; a
gateway process records its own, where mutmut never looks. Here, SIGUSR1 makes this
process write the functions reached since the last signal to `<pid>.<n>.hits` in
$MUTMUT_HITS_DIR, which the plugin adds to the test that just ran.
"""

from __future__ import annotations

import os

_DIR = os.environ.get("MUTMUT_HITS_DIR")

if _DIR and os.environ.get("MUTANT_UNDER_TEST") == "stats":
    import atexit
    import signal
    from pathlib import Path
    from types import FrameType

    _seq = 0

    def _hand_over(signum: int, frame: FrameType | None) -> None:
        global _seq
        from mutmut.state import state

        hits = sorted(state()._stats)
        state()._stats.clear()
        _seq += 1
        path = Path(_DIR, f"{os.getpid()}.{_seq}.hits")
        path.with_suffix(".tmp").write_text("\n".join(hits))
        path.with_suffix(".tmp").replace(path)  # whole, or not there yet

    signal.signal(signal.SIGUSR1, _hand_over)
    _pid_file = Path(_DIR, f"{os.getpid()}.pid")
    _pid_file.write_text("")  # written once the handler is in place: safe to signal
    atexit.register(lambda: _pid_file.unlink(missing_ok=True))
