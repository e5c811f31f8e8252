"""Figures of a benchmark run: a readable table on stdout, one JSON line each in .bench/results.jsonl."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_FILE = Path(".bench/results.jsonl")


@dataclass(frozen=True)
class Figure:
    bench: str
    figure: str
    value: float
    unit: str
    goal: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def record(figures: list[Figure]) -> None:
    """Prints the figures as a table and appends them to RESULTS_FILE."""
    commit = _commit()
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    width = max((len(f"{f.bench}/{f.figure}") for f in figures), default=10)
    print(f"{'figure':<{width}}  {'value':>12}  {'unit':<8}  goal")
    with RESULTS_FILE.open("a") as handle:
        for item in figures:
            print(
                f"{item.bench + '/' + item.figure:<{width}}  {item.value:>12.3f}  {item.unit:<8}  {item.goal}"
            )
            handle.write(
                json.dumps(
                    {
                        "bench": item.bench,
                        "figure": item.figure,
                        "value": round(item.value, 4),
                        "goal": item.goal,
                        "unit": item.unit,
                        "commit": commit,
                        "detail": item.detail,
                    },
                    sort_keys=True,
                )
                + "\n"
            )
