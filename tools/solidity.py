"""`python -m tools.solidity`: rebuilds the committed build of the development token
(svc/chain_gateway/contracts/TestToken.json: ABI and creation bytecode) from its source with the
pinned solc from npm, which `make test` installs into .build/npm/hardhat.

The build is committed so that `make run` and `make demo` need nothing but Python;
tests/chain_gateway/test_dev_token.py rebuilds it and fails on any difference, so a change to the
source or to the pinned solc comes with a rebuilt artifact.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from svc.chain_gateway import dev_token
from tests.harness.hardhat import compile_solidity

REGENERATE = "python -m tools.solidity"
# The end of solc's CBOR metadata: the key "solc" and a 3-byte version (major, minor, patch).
SOLC_KEY = b"\x64solc\x43"


def compiler_version(bytecode: str) -> str:
    """The solc version recorded in the metadata that ends a contract's bytecode."""
    code = bytes.fromhex(bytecode.removeprefix("0x"))
    length = int.from_bytes(code[-2:], "big")
    metadata = code[-2 - length : -2]
    at = metadata.find(SOLC_KEY)
    if at < 0:
        raise ValueError("the bytecode carries no solc version in its metadata")
    version = metadata[at + len(SOLC_KEY) : at + len(SOLC_KEY) + 3]
    return ".".join(str(part) for part in version)


def build(source: Path, scratch: Path) -> dict[str, Any]:
    """The artifact of the contract named like its source file, compiled in `scratch`."""
    compiled = compile_solidity(source, scratch)[source.stem]
    return {
        "contract": source.stem,
        "source": source.name,
        "compiler": f"solc {compiler_version(compiled['bytecode'])} (npm solc, optimizer on)",
        "regenerate": REGENERATE,
        "abi": compiled["abi"],
        "bytecode": compiled["bytecode"],
    }


def render(artifact: dict[str, Any]) -> str:
    """The artifact as it is committed: indented JSON, one trailing newline."""
    return json.dumps(artifact, indent=2) + "\n"


def main(argv: Sequence[str]) -> int:
    if argv:
        print(f"usage: {REGENERATE}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="finmesh-solc-") as scratch:
        artifact = build(dev_token.SOURCE, Path(scratch))
    dev_token.ARTIFACT.write_text(render(artifact))
    print(f"{dev_token.ARTIFACT}: {artifact['contract']}, {artifact['compiler']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
