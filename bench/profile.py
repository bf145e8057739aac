"""python -m bench.profile [--contender gateway] [--seconds 8] [--connections 32] [--stream]

Profiles one contender with py-spy while wrk loads it; writes bench/.work/profile-<name>.txt
(the functions with the most samples, own and total) and a flame graph SVG beside it.
py-spy: `pip install py-spy` into the venv that runs the gateway.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import orjson

from bench.contenders import CHAT_PATH, CONTENDERS, HOST, launch, start_upstreams
from bench.runner import raise_fd_limit
from bench.wrk import run_wrk, write_script

WORKDIR = Path(__file__).resolve().parent / ".work"


def top_functions(raw: Path, limit: int = 30) -> str:
    """Own and total sample counts per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        samples += count
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[-1] if " (" in f else f
            for f in stack.split(";")
        ]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples", "", "own %  function"]
    lines += [f"{100 * n / samples:5.1f}  {f}" for f, n in own.most_common(limit)]
    lines += ["", "total %  function"]
    lines += [f"{100 * n / samples:5.1f}  {f}" for f, n in total.most_common(limit)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--contender", default="gateway")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--scenario", default="fast", choices=["fast", "slow"])
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy is missing: pip install py-spy", file=sys.stderr)
        return 2
    contender = next(c for c in CONTENDERS if c.name == args.contender)
    raise_fd_limit()
    WORKDIR.mkdir(exist_ok=True)
    upstreams = start_upstreams(WORKDIR)
    try:
        running = launch(contender, upstreams, WORKDIR)
        try:
            assert running.process is not None, "profile a contender, not direct"
            port, model = running.routes[args.scenario]
            body_path = WORKDIR / "profile-body.json"
            body_path.write_bytes(
                orjson.dumps(
                    {"model": model, "messages": [{"role": "user", "content": "hello there"}]}
                )
            )
            script = write_script(WORKDIR / "profile.lua", body_path, contender.headers)
            url = f"http://{HOST}:{port}{CHAT_PATH}"
            run_wrk(url, script, 8, 1)  # warm-up
            raw = WORKDIR / f"profile-{contender.name}.raw"
            svg = WORKDIR / f"profile-{contender.name}.svg"
            result: dict[str, object] = {}
            load = threading.Thread(
                target=lambda: result.update(
                    load=run_wrk(url, script, args.connections, args.seconds + 1)
                )
            )
            load.start()
            for fmt, out in (("raw", raw), ("flamegraph", svg)):
                seconds = max(1, args.seconds // 2)
                subprocess.run(
                    [
                        py_spy,
                        "record",
                        "--pid",
                        str(running.process.pid),
                        "--duration",
                        str(seconds),
                        "--rate",
                        "200",
                        "--nonblocking",
                        "--format",
                        fmt,
                        "--output",
                        str(out),
                    ],
                    check=True,
                    capture_output=True,
                    timeout=seconds + 30,
                )
            load.join()
            report = WORKDIR / f"profile-{contender.name}.txt"
            report.write_text(
                f"{contender.name}, wrk c{args.connections} {args.scenario}: "
                f"{result.get('load')}\n\n{top_functions(raw)}\n"
            )
            print(report.read_text())
            print(f"flame graph: {svg}")
        finally:
            running.stop()
    finally:
        upstreams.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
