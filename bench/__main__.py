"""`python -m bench [name]`: runs every benchmark, or the one named."""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import kit, ledger, validation
from bench.results import Figure, record

BENCHMARKS: dict[str, Callable[[], list[Figure]]] = {
    "kit": kit.run,
    "ledger": ledger.run,
    "validation": validation.run,
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in names:
        record(BENCHMARKS[name]())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
