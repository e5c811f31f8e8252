"""`python -m tools.deploy [--check] [--catalog FILE] [--chart DIR]`: generate or check the chart files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from svc.kit import catalog as catalog_module
from tools.deploy import paths
from tools.deploy.generate import render_all, stale, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.deploy", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    parser.add_argument("--catalog", type=Path, default=paths.CATALOG)
    parser.add_argument("--descriptors", type=Path, default=paths.DESCRIPTOR_SET)
    parser.add_argument("--chart", type=Path, default=paths.CHART_DIR)
    arguments = parser.parse_args(argv)
    files = render_all(catalog_module.load(arguments.catalog), arguments.descriptors, arguments.chart)
    if arguments.check:
        outdated = stale(files)
        for path in outdated:
            print(f"stale: {path}: run '.venv/bin/python -m tools.deploy' and commit", file=sys.stderr)
        return 1 if outdated else 0
    write(files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
