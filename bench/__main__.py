"""`python -m bench [name]`: runs every benchmark, or the one named."""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import chain_follower, custodial_wallet, custody, gateway, identity, kit, ledger, validation
from bench.results import Figure, record

BENCHMARKS: dict[str, Callable[[], list[Figure]]] = {
    "chain_follower": chain_follower.run,
    "custodial_wallet": custodial_wallet.run,
    "custody": custody.run,
    "gateway": gateway.run,
    "identity": identity.run,
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
