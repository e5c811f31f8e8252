"""Fixtures of the user tests: the user and auth services on each backend (tests.harness.identity)."""

from tests.harness.identity import identity, identity_templates

__all__ = ["identity", "identity_templates"]
