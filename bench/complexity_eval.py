"""python -m bench.complexity_eval [--data PATH] [--threshold T] [--misses]

How well the complexity score separates the labelled prompts in
tests/data/complexity_prompts.jsonl, against prompt length alone, and what it costs on
the request path. Prints markdown tables (docs/ROUTING.md keeps a copy).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.complexity import ComplexityScorer, ComplexitySettings

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "complexity_prompts.jsonl"


def load_rows(path: Path = DATA) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def request_body(row: dict[str, Any]) -> dict[str, Any]:
    """The chat request a client would send: the row's history, then its prompt."""
    user = {"role": "user", "content": row["prompt"]}
    return {"model": "auto", "messages": [*row.get("history", []), user]}


def roc_auc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """ROC AUC as the Mann-Whitney U statistic: P(score of a positive > score of a negative).

    Tied scores get their average rank, which counts a tie as half a win.
    """
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # ranks are 1-based
        i = j + 1
    n_pos = sum(positives)
    n_neg = len(positives) - n_pos
    if not n_pos or not n_neg:
        raise ValueError("ROC AUC needs both labels")
    rank_sum = sum(rank for rank, positive in zip(ranks, positives, strict=True) if positive)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def evaluate(rows: Sequence[dict[str, Any]], scorer: ComplexityScorer) -> dict[str, float]:
    positives = [row["label"] == "complex" for row in rows]
    scores = [scorer.score("chat", request_body(row)).score for row in rows]
    lengths = [float(len(row["prompt"])) for row in rows]
    hits = sum((s > scorer.threshold) == p for s, p in zip(scores, positives, strict=True))
    return {
        "n": len(rows),
        "complex": sum(positives),
        "accuracy": hits / len(rows),
        "auc": roc_auc(scores, positives),
        "length_auc": roc_auc(lengths, positives),
    }


def conversation(size: int) -> dict[str, Any]:
    """A chat body of about `size` bytes: a system prompt, earlier turns, a last question."""
    rows = load_rows()
    texts = [row["prompt"] for row in rows]
    system = {"role": "system", "content": "You are a helpful assistant. " * 12}
    messages: list[dict[str, Any]] = [system]
    used = len(system["content"])
    i = 0
    last = "Compare these two approaches and explain which one scales better, step by step."
    while used < size - len(last):
        text = texts[i % len(texts)][: size - len(last) - used]
        role = "user" if len(messages) % 2 else "assistant"
        messages.append({"role": role, "content": text})
        used += len(text)
        i += 1
    messages.append({"role": "user", "content": last})
    return {"model": "auto", "messages": messages}


def one_message(size: int) -> dict[str, Any]:
    """The worst case for the scorer: all `size` bytes in the last user message."""
    text = "\n\n".join(row["prompt"] for row in load_rows())
    while len(text) < size:
        text += "\n\n" + text
    return {"model": "auto", "messages": [{"role": "user", "content": text[:size]}]}


def timings(scorer: ComplexityScorer, runs: int = 2000) -> list[tuple[str, float, float]]:
    """(case, p50 µs, p99 µs) for each request shape; perf_counter_ns around score() only."""
    cases = [
        ("4 KB conversation (last user message 80 B)", conversation(4096), runs),
        ("4 KB in the last user message", one_message(4096), runs),
        ("100 KB in the last user message", one_message(100_000), max(runs // 20, 20)),
        ("1 MB in the last user message", one_message(1_000_000), max(runs // 200, 5)),
    ]
    out = []
    for name, body, n in cases:
        for _ in range(min(n, 50)):  # warm up
            scorer.score("chat", body)
        samples = []
        for _ in range(n):
            start = time.perf_counter_ns()
            scorer.score("chat", body)
            samples.append((time.perf_counter_ns() - start) / 1000)
        samples.sort()
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        out.append((name, statistics.median(samples), p99))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.complexity_eval", description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--misses", action="store_true", help="list the misclassified prompts")
    parser.add_argument("--runs", type=int, default=2000, help="timed runs of the 4 KB cases")
    args = parser.parse_args(argv)

    settings = ComplexitySettings()
    if args.threshold is not None:
        settings = dataclasses.replace(settings, threshold=args.threshold)
    scorer = ComplexityScorer(settings)
    rows = load_rows(args.data)
    halves = {"all": rows, "even rows": rows[0::2], "odd rows": rows[1::2]}
    results = {name: evaluate(part, scorer) for name, part in halves.items()}

    shown = args.data.relative_to(REPO) if args.data.is_relative_to(REPO) else args.data
    print(f"Complexity score on {shown}")
    print(f"(threshold {scorer.threshold}; complex when the score is strictly greater)\n")
    print("| measure | " + " | ".join(halves) + " |")
    print("| --- |" + " ---: |" * len(halves))
    counts = " | ".join(f"{r['n']} ({r['complex']})" for r in results.values())
    print(f"| prompts (complex) | {counts} |")
    labels = {
        "accuracy": "accuracy at the threshold",
        "auc": "ROC AUC, complexity score",
        "length_auc": "ROC AUC, prompt length in chars (baseline)",
    }
    for key, label in labels.items():
        print(f"| {label} | " + " | ".join(f"{r[key]:.3f}" for r in results.values()) + " |")

    if args.misses:
        print("\nMisclassified:")
        for row in rows:
            result = scorer.score("chat", request_body(row))
            if scorer.is_complex(result) != (row["label"] == "complex"):
                strong = {k: round(v, 2) for k, v in result.factors.items() if v}
                prompt = row["prompt"].replace("\n", " ")[:90]
                print(f"  {row['label']:7s} {result.score:.2f} {prompt!r} {strong}")

    print("\nCost of ComplexityScorer.score (this machine, one process):\n")
    print("| request | p50 µs | p99 µs |")
    print("| --- | ---: | ---: |")
    for name, p50, p99 in timings(scorer, args.runs):
        print(f"| {name} | {p50:.1f} | {p99:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
