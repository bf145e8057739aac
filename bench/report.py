"""docs/BENCHMARKS.md and docs/bench-latency.png from a run's results."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Rounds = list[dict[str, Any]]
Getter = Callable[[dict[str, Any]], float | None]

INTRO = """\
# Benchmarks

**How to run.** From the repository root, with the dev environment (`pip install -e '.[bench]'`)
and `wrk` (`apt-get install wrk`): `python -m bench --quick` takes about a minute and
`python -m bench` (the full run, 3 rounds) about {full_minutes} minutes. The harness starts the fake
upstream (`tests/fake_upstream.py`), then each contender in turn on loopback, drives it with `wrk`
and a small streaming client, prints progress and the target table, and rewrites this file and
`docs/bench-latency.png`. The first run also installs LiteLLM's proxy into
`bench/.work/litellm-venv` (a minute or two, once). Working files and logs go to `bench/.work/`.
The section "Under load and faults" comes from `python -m bench.soak --write-docs` (about 6
minutes) and is kept as it stands by `python -m bench`.
"""


# Written by `python -m bench.soak --write-docs`, not by this run: kept as it stands.
KEPT_SECTION = "## Under load and faults"
_BEFORE_KEPT = "\n## Findings and profile\n"


def kept_section(text: str) -> str:
    """The KEPT_SECTION of a BENCHMARKS.md, up to the next `## ` heading; '' if absent."""
    start = text.find(KEPT_SECTION + "\n")
    if start < 0:
        return ""
    end = text.find("\n## ", start + len(KEPT_SECTION))
    return text[start : end + 1 if end >= 0 else len(text)].rstrip("\n") + "\n"


def replace_section(text: str, section: str) -> str:
    """`text` with its KEPT_SECTION replaced by `section`, or `section` put before the
    findings (at the end if there are none)."""
    old = kept_section(text)
    if old:
        return text.replace(old, section.rstrip("\n") + "\n", 1)
    at = text.find(_BEFORE_KEPT)
    if at < 0:
        return text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    return text[: at + 1] + section.rstrip("\n") + "\n" + text[at:]


def get(path: str) -> Getter:
    keys = path.split(".")

    def getter(round_: dict[str, Any]) -> float | None:
        value: Any = round_
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return float(value) if isinstance(value, int | float) else None

    return getter


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass
class View:
    """Medians over rounds, and differences against `direct` in the same round."""

    results: dict[str, Any]

    @property
    def contenders(self) -> dict[str, dict[str, Any]]:
        contenders: dict[str, dict[str, Any]] = self.results["contenders"]
        return contenders

    def rounds(self, name: str) -> Rounds:
        rounds: Rounds = self.contenders.get(name, {}).get("rounds", [])
        return rounds

    def value(self, name: str, path: str) -> float | None:
        return median([get(path)(r) for r in self.rounds(name)])

    def added(self, name: str, path: str) -> float | None:
        direct, mine = self.rounds("direct"), self.rounds(name)
        diffs = []
        for ours, base in zip(mine, direct, strict=False):
            a, b = get(path)(ours), get(path)(base)
            if a is not None and b is not None:
                diffs.append(a - b)
        return median(list(diffs))

    def measured(self) -> list[str]:
        return [n for n, c in self.contenders.items() if c["rounds"]]


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Target:
    text: str
    figure: float | None
    limit: float
    unit: str
    higher_is_better: bool = False

    def verdict(self) -> str:
        if self.figure is None:
            return "not measured"
        if self.higher_is_better:
            if self.figure >= self.limit:
                return "pass"
            return f"miss by {self.limit - self.figure:,.2f}{self.unit} ({self.figure / self.limit:.0%} of target)"
        if self.figure < self.limit or (self.figure == self.limit and "<=" in self.text):
            return "pass"
        return f"miss by {self.figure - self.limit:,.2f}{self.unit} ({self.figure / self.limit:.1f}x the limit)"


def targets(view: View, name: str) -> list[Target]:
    gateway = view.contenders.get(name, {})
    litellm_rps = view.value("litellm", "fast.32.rps")
    ours_rps = view.value(name, "fast.32.rps")
    ratio = ours_rps / litellm_rps if ours_rps and litellm_rps else None
    open_streams = gateway.get("open_streams") or {}
    starts = gateway.get("starts") or []
    return [
        Target("added p50 at concurrency 1 < 1 ms", view.added(name, "fast.1.p50_ms"), 1, " ms"),
        # the developers' guide: the whole shipped chain within 0.5 ms at the median
        Target(
            "added p50 at concurrency 1 <= 0.5 ms", view.added(name, "fast.1.p50_ms"), 0.5, " ms"
        ),
        Target("added p99 at concurrency 1 < 3 ms", view.added(name, "fast.1.p99_ms"), 3, " ms"),
        Target("requests/s at concurrency 32 >= 5x LiteLLM's", ratio, 5, "x", True),
        Target(
            "added time to first token < 1 ms", view.added(name, "stream.ttft_p50_ms"), 1, " ms"
        ),
        Target("1,000 open streams < 200 MB RSS", open_streams.get("peak_rss_mb"), 200, " MB"),
        Target("ready (first 200) < 1 s", median([s.get("first_200_s") for s in starts]), 1, " s"),
    ]


def targets_table(view: View, name: str) -> str:
    rows = []
    for target in targets(view, name):
        digits = 1 if target.unit in (" MB", "x") else 2
        rows.append([target.text, fmt(target.figure, digits, target.unit), target.verdict()])
    return table(["target (one worker each)", name, "result"], rows)


def latency_table(view: View) -> str:
    rows = []
    for name in view.measured():
        rows.append(
            [
                name,
                fmt(view.value(name, "fast.1.p50_ms")),
                fmt(view.value(name, "fast.1.p99_ms")),
                "—" if name == "direct" else fmt(view.added(name, "fast.1.p50_ms")),
                "—" if name == "direct" else fmt(view.added(name, "fast.1.p99_ms")),
            ]
        )
    return table(["contender", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms"], rows)


def throughput_table(view: View, settings: dict[str, Any]) -> str:
    columns = [("fast", c) for c in (32, 64)] + [("slow", c) for c in settings["slow_concurrency"]]
    header = ["contender"]
    for scenario, conns in columns:
        delay = "0 ms" if scenario == "fast" else "20 ms"
        header += [f"req/s c{conns} {delay}", f"p99 ms c{conns} {delay}"]
    header.append("req/s c32 0 ms vs LiteLLM")
    litellm = view.value("litellm", "fast.32.rps")
    rows = []
    for name in view.measured():
        row = [name]
        for scenario, conns in columns:
            row += [
                fmt(view.value(name, f"{scenario}.{conns}.rps"), 0),
                fmt(view.value(name, f"{scenario}.{conns}.p99_ms"), 1),
            ]
        ours = view.value(name, "fast.32.rps")
        row.append(fmt(ours / litellm, 1, "x") if ours and litellm else "n/a")
        rows.append(row)
    return table(header, rows)


def streaming_table(view: View) -> str:
    rows = []
    for name in view.measured():
        complete = [r["stream"]["complete"] for r in view.rounds(name) if "stream" in r]
        total = [r["stream"]["streams"] for r in view.rounds(name) if "stream" in r]
        rows.append(
            [
                name,
                fmt(view.value(name, "stream.ttft_p50_ms")),
                "—" if name == "direct" else fmt(view.added(name, "stream.ttft_p50_ms")),
                fmt(view.value(name, "stream.ttft_p99_ms")),
                fmt(view.value(name, "stream.ttft_concurrent_p50_ms")),
                fmt(view.value(name, "stream.gap_p50_ms"), 1),
                fmt(view.value(name, "stream.gap_p99_ms"), 1),
                fmt(view.value(name, "stream.bunched_pct"), 1, " %"),
                f"{sum(complete)}/{sum(total)}",
            ]
        )
    return table(
        [
            "contender",
            "TTFT p50 ms",
            "added TTFT p50 ms",
            "TTFT p99 ms",
            "TTFT p50 ms, 8 at once",
            "gap p50 ms",
            "gap p99 ms",
            "bunched",
            "complete",
        ],
        rows,
    )


def resources_table(view: View) -> str:
    rows = []
    for name in view.measured():
        c = view.contenders[name]
        if c["kind"] == "direct":
            continue
        starts, streams = c["starts"], c["open_streams"] or {}
        failures = ", ".join(f"{k} {v}" for k, v in (streams.get("failures") or {}).items())
        rows.append(
            [
                name,
                fmt(median([s.get("ready_s") for s in starts]), 2, " s"),
                fmt(median([s.get("first_200_s") for s in starts]), 2, " s"),
                fmt(median(c["rss_idle_mb"]), 1, " MB"),
                fmt(streams.get("peak_rss_mb"), 1, " MB"),
                f"{streams.get('established', 'n/a')}/{streams.get('requested', 'n/a')}"
                + (f" ({failures})" if failures else ""),
                fmt(streams.get("seconds_to_establish"), 1, " s"),
                str(streams.get("upstream_open_2s_after_close", "n/a")),
            ]
        )
    return table(
        [
            "contender",
            "ready (health 200)",
            "first chat 200",
            "RSS idle",
            "peak RSS, open streams",
            "streams open",
            "time to open them",
            "upstream streams still open 2 s after clients left",
        ],
        rows,
    )


def sizes_table(view: View) -> str:
    sizes = ["1 KB", "10 KB", "100 KB"]
    rows = []
    for name in view.measured():
        row = [name]
        for size in sizes:
            p50 = view.value(name, f"sizes.{size}.p50_ms")
            added = None if name == "direct" else view.added(name, f"sizes.{size}.p50_ms")
            row.append(fmt(p50) + ("" if added is None else f" (+{fmt(added)})"))
        rows.append(row)
    return table(["contender"] + [f"p50 ms {s} (added)" for s in sizes], rows)


def chart(view: View, settings: dict[str, Any], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "_The chart needs matplotlib (`pip install -e '.[bench]'`); it was not drawn._"
    conns = list(settings["concurrency"])
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for name in view.measured():
        p50 = [view.value(name, f"fast.{c}.p50_ms") or float("nan") for c in conns]
        p99 = [view.value(name, f"fast.{c}.p99_ms") or float("nan") for c in conns]
        line = ax.plot(conns, p50, marker="o", label=f"{name} p50")[0]
        ax.plot(
            conns,
            p99,
            marker=".",
            linestyle="--",
            color=line.get_color(),
            alpha=0.6,
            label=f"{name} p99",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(conns, [str(c) for c in conns])
    ax.set_xlabel("concurrent connections (wrk)")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title("Chat completion latency against concurrency, 0 ms upstream")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return f"![latency against concurrency]({path.name})"


def render(results: dict[str, Any], docs: Path, notes: str) -> str:
    view = View(results)
    settings = results["settings"]
    env = results["environment"]
    chart_md = chart(view, settings, docs / "bench-latency.png")
    missing = [
        f"- **{name}** is missing from this run: {c['reason'] or 'every round failed (errors below)'}"
        for name, c in view.contenders.items()
        if not c["available"] or not c["rounds"]
    ]
    errors = [f"- {name}: {error}" for name, c in view.contenders.items() for error in c["errors"]]
    failed = []
    for name in view.measured():
        for r in view.rounds(name):
            for group in ("fast", "slow", "sizes"):
                for key, load in r.get(group, {}).items():
                    if load.get("errors") or load.get("non_2xx"):
                        failed.append(
                            f"- {name} {group} {key}: {load['errors']:.0f} socket "
                            f"errors, {load['non_2xx']:.0f} non-2xx answers"
                        )
    gateway_names = [n for n in view.measured() if view.contenders[n]["kind"] == "gateway"]
    kind = "quick run (--quick)" if settings["quick"] else "full run"
    litellm = results.get("litellm", {})
    parts = [
        INTRO.format(full_minutes=results.get("full_minutes", "6")),
        f"## Result of the last run\n\n{results['date']}, a {kind}: {settings['rounds']} "
        f"round(s), contenders interleaved in each round, medians over rounds; "
        f"the run took {results['elapsed_s'] / 60:.1f} minutes.\n",
        *([*missing, ""] if missing else []),
        "### Targets\n",
        "Each target is a figure on this machine with one worker process each, not a timed "
        "test. Added means the contender's figure minus the direct figure of the same round.\n",
    ]
    for name in gateway_names:
        parts += [targets_table(view, name), ""]
    parts += [
        "### Added latency at concurrency 1 (0 ms upstream, `wrk -t1 -c1`)\n",
        latency_table(view),
        "\n### Throughput (`wrk -t2`), 0 ms and 20 ms upstream\n",
        throughput_table(view, settings),
        f"\n### Streaming: 64 chunks 20 ms apart, {settings['stream_concurrency']} concurrent "
        f"streams x {settings['stream_batches']} batch(es) a round\n",
        f"TTFT: from writing the request to reading the first non-empty content delta, "
        f"{settings['ttft_streams']} streams one at a time a round (the client hangs up after "
        "the first token); the upstream sends its role chunk and first content chunk at once, "
        "so no upstream timer sits in this figure. The 8-at-once column and the gaps come from "
        "the concurrent batches read to the end. Gaps: between consecutive content deltas as "
        "read by the client. Bunched: gaps under 5 ms (a quarter of the interval), that is "
        "chunks that arrived together instead of as sent.\n",
        streaming_table(view),
        f"\n### Memory and start-up ({settings['open_streams']:,} open streams)\n",
        f"RSS is the sum over the contender's process tree (/proc), idle after its first answer; "
        f"peak RSS is the highest sample while {settings['open_streams']:,} streams "
        f"(a long stream: 120 chunks 500 ms apart) were open at once. Start-up is from the "
        f"process start to the first 200.\n",
        resources_table(view),
        "\n### Cost growth with prompt size (concurrency 1, 0 ms upstream)\n",
        sizes_table(view),
        "\n### Latency against concurrency\n",
        chart_md,
        "\n## Findings and profile\n",
        notes.strip() or "_No notes._",
        "\n## Method\n",
        f"- Machine: {env['cpu']}, {env['memory']}, {env['os']}; Python {env['python']}; "
        f"{env['wrk']}.",
        f"- Gateway: revision {env['gateway_revision']}; {env['packages']}.",
        f"- LiteLLM: {litellm.get('version') or 'not installed or not in this run'}"
        + (f" ({litellm['note']})" if litellm.get("note") else "")
        + ", its own venv, `litellm --num_workers 1`, master key, "
        "`LITELLM_LOCAL_MODEL_COST_MAP=True`, no database, upstream pool raised like the "
        "gateway's (`AIOHTTP_CONNECTOR_LIMIT_PER_HOST=2048`; its default of 500 caps open "
        "streams at 500).",
        "- Upstream: `tests/fake_upstream.py`, one uvicorn worker per scenario (0 ms, 20 ms, "
        "64x20 ms stream, long stream), each its own process; called directly it served "
        f"{fmt(view.value('direct', 'fast.32.rps'), 0)} small chat completions a second at "
        "concurrency 32 in this run, so it is not the bottleneck.",
        "- Everything shares the machine's 2 cores: wrk (1 thread at concurrency 1, 2 threads "
        "otherwise), the fake upstream, the contender and the streaming client. Nothing is "
        "pinned.",
        f"- Each wrk run: {settings['duration_s']} s after a {settings['warmup_s']} s warm-up "
        f"at concurrency 8 on each start; prompt-size runs {settings['size_duration_s']} s. "
        "Each contender is started afresh each round.",
        "- Gateway config: generated (see `bench/contenders.py`): one worker, logging level "
        "warning, auth off, openai-type providers at the fake upstreams with api_key sk-fake, "
        "`max_connections: 2048` (the default 256 would queue 1,000 streams), routing "
        "default_model gpt-4o-mini; `gateway-httpx` sets `transport: httpx`.",
        "",
    ]
    if failed or errors:
        parts += ["### Errors seen during the run\n", *errors, *failed, ""]
    text = "\n".join(parts)
    target = docs / "BENCHMARKS.md"
    kept = kept_section(target.read_text()) if target.exists() else ""
    if kept:
        text = replace_section(text, kept)
    target.write_text(text)
    return text


def summary_lines(results: dict[str, Any]) -> list[str]:
    view = View(results)
    lines = []
    for name in view.measured():
        if view.contenders[name]["kind"] != "gateway":
            continue
        for target in targets(view, name):
            digits = 1 if target.unit in (" MB", "x") else 2
            lines.append(
                f"{name:14} {target.text:48} {fmt(target.figure, digits, target.unit):>12}"
                f"  {target.verdict()}"
            )
    return lines
