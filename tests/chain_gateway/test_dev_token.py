"""The development token of the embedded chains: its committed build is what the pinned solc
(npm) makes of its source, and its address is the one the funding account's first nonce gives.
That it is there on a running embedded chain is test_providers.py (test_embedded_evm_default)."""

from __future__ import annotations

from pathlib import Path

import rlp  # type: ignore[import-untyped]
from eth_account import Account
from eth_utils.crypto import keccak

from svc.chain_gateway import dev_token
from svc.chain_gateway.config import EMBEDDED_FUNDING_KEY, EMBEDDED_TOKEN
from tools import solidity


def test_the_committed_build_is_its_source_compiled_by_the_pinned_solc(tmp_path: Path) -> None:
    rebuilt = solidity.build(dev_token.SOURCE, tmp_path)
    assert dev_token.ARTIFACT.read_text() == solidity.render(rebuilt), (
        f"{dev_token.ARTIFACT} is stale: run `{solidity.REGENERATE}` and commit it"
    )


def test_the_token_address_follows_from_the_funding_account_and_its_first_nonce() -> None:
    funder = bytes.fromhex(Account.from_key(EMBEDDED_FUNDING_KEY).address.removeprefix("0x"))
    assert EMBEDDED_TOKEN.contract == "0x" + keccak(rlp.encode([funder, 0]))[12:].hex()
