"""python -m bench [--quick] [--rounds N] [--only NAME,...] [--report-only]

Runs the benchmark, then rewrites docs/BENCHMARKS.md and docs/bench-latency.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import contenders as bench_contenders
from bench.contenders import CONTENDERS, REPO, Unavailable, install_litellm, start_upstreams
from bench.environment import describe
from bench.report import render, summary_lines
from bench.runner import Settings, raise_fd_limit, run

WORKDIR = REPO / "bench" / ".work"
NOTES = REPO / "bench" / "NOTES.md"


def write_docs(results: dict[str, Any], docs: Path) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    notes = NOTES.read_text() if NOTES.exists() else ""
    render(results, docs, notes)
    print("\n".join(summary_lines(results)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short round (about a minute)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 1 quick, 3)")
    parser.add_argument("--only", default="", help="comma-separated contenders (direct is kept)")
    parser.add_argument("--docs", type=Path, default=REPO / "docs", help="where to write")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the docs from the last results"
    )
    args = parser.parse_args(argv)
    if args.report_only:
        results = json.loads((WORKDIR / "results.json").read_text())
        write_docs(results, args.docs)
        return 0

    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    chosen = [
        c
        for c in CONTENDERS
        if not args.only or c.name == "direct" or c.name in args.only.split(",")
    ]
    settings = Settings.make(args.quick, args.rounds)
    WORKDIR.mkdir(parents=True, exist_ok=True)
    print(f"open files limit: {raise_fd_limit()}")

    litellm: dict[str, str] = {}
    if any(c.kind == "litellm" for c in chosen):
        print("LiteLLM: checking its venv (the first run installs it)")
        try:
            version, note = install_litellm(WORKDIR)
            litellm = {"version": version, "note": note}
        except (Unavailable, OSError, Exception) as exc:  # the run goes on without it
            litellm = {"version": "", "note": f"install failed: {exc}"}
            print(f"LiteLLM unavailable: {exc}")

    upstreams = start_upstreams(WORKDIR)
    try:
        outcome = run(settings, upstreams, WORKDIR, chosen)
    finally:
        upstreams.stop()

    results = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": asdict(settings),
        "environment": describe(REPO),
        "litellm": litellm,
        "litellm_spec": bench_contenders.LITELLM_SPEC,
        **outcome,
    }
    if litellm.get("note", "").startswith("install failed"):
        results["contenders"].get("litellm", {})["reason"] = litellm["note"]
    (WORKDIR / "results.json").write_text(json.dumps(results, indent=1))
    write_docs(results, args.docs)
    print(
        f"wrote {args.docs / 'BENCHMARKS.md'} and {args.docs / 'bench-latency.png'} "
        f"in {outcome['elapsed_s'] / 60:.1f} minutes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
