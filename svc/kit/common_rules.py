"""Python forms of CEL rules that several contracts share under one id, registered once here so
that two services loaded in one process (tests, a local mesh) never register one id twice.

    amount_on_chain   this.amount.asset.startsWith(this.chain + ':')
    amount_positive   this.amount.amount != '0'

A service whose contract uses them imports this module (importing registers them).
"""

from __future__ import annotations

from typing import Any

from svc.kit.validation import register_cel_rule


def amount_on_chain(message: Any) -> bool:
    """The amount's asset is an asset of the message's chain."""
    return bool(message.amount.asset.startswith(message.chain + ":"))


def amount_positive(message: Any) -> bool:
    """The amount is not zero (the pattern already excludes negative and malformed amounts)."""
    return bool(message.amount.amount != "0")


register_cel_rule("amount_on_chain", amount_on_chain)
register_cel_rule("amount_positive", amount_positive)
