"""The ledger service: double-entry books of every money movement of the platform."""

# The contract's CEL rules in Python, registered with the kit's validator before any request
# arrives (svc/ledger/rules.py).
from svc.ledger import rules as _rules  # noqa: F401
