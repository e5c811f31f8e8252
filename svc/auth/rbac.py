"""Roles, the permissions each grants, and the API-key scopes each may hand out.

A permission is `<service>.<resource>.<verb>`; a grant of `<service>.<resource>.*` covers every
verb. Every user holds ROLE_USER; staff roles come from approved role assignments and all of
them require TOTP. An API key holds a permission only if its owner's roles grant it and one of
its scopes covers it: scope `<area>:read` covers the read verbs of service `<area>`, scope
`<area>:write` every verb of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class Role(IntEnum):
    """finmesh.common.v1.Role; the token claim is the lower-case name."""

    USER = 1
    SUPPORT = 2
    OPERATOR = 3
    APPROVER = 4
    ADMIN = 5
    AUDITOR = 6

    @property
    def claim(self) -> str:
        return self.name.lower()


STAFF_ROLES = frozenset(Role) - {Role.USER}
READ_VERBS = frozenset({"read", "get", "list", "search"})
API_SCOPES = (
    "account:read",
    "wallet:read",
    "deposit:read",
    "withdraw:read",
    "withdraw:write",
    "lending:read",
    "lending:write",
    "staking:read",
    "staking:write",
    "rwa:read",
    "rwa:write",
)

_SUPPORT = (
    "user.users.read",
    "user.users.search",
    "auth.sessions.read",
    "auth.login_attempts.read",
    "auth.api_keys.read",
    "kyc.applications.read",
    "account.accounts.read",
    "wallet.wallets.read",
    "deposit.deposits.read",
    "withdraw.withdrawals.read",
)
PERMISSIONS: dict[Role, tuple[str, ...]] = {
    Role.USER: (
        "user.me.*",
        "auth.me.*",
        "account.accounts.read",
        "wallet.wallets.*",
        "deposit.deposits.read",
        "withdraw.withdrawals.create",
        "withdraw.withdrawals.read",
        "withdraw.withdrawals.cancel",
        "lending.loans.*",
        "staking.stakes.*",
        "rwa.holdings.*",
        "kyc.me.*",
    ),
    Role.SUPPORT: _SUPPORT,
    Role.OPERATOR: (
        *_SUPPORT,
        "user.users.freeze",
        "auth.sessions.revoke",
        "auth.lockouts.clear",
        "auth.api_keys.revoke",
        "kyc.applications.review",
        "withdraw.withdrawals.review",
        "admin.actions.create",
    ),
    Role.APPROVER: (
        "user.users.read",
        "admin.actions.approve",
        "withdraw.withdrawals.approve",
        "kyc.applications.approve",
    ),
    Role.ADMIN: (
        "user.users.read",
        "auth.roles.*",
        "auth.role_assignments.*",
        "auth.signing_keys.*",
        "admin.config.*",
    ),
    Role.AUDITOR: (
        "audit.records.read",
        "audit.records.export",
        "report.reports.read",
        "ledger.entries.read",
        "auth.roles.read",
        "auth.role_assignments.read",
    ),
}
GRANTABLE_SCOPES: dict[Role, tuple[str, ...]] = {role: () for role in Role} | {Role.USER: API_SCOPES}


def grants(granted: str, permission: str) -> bool:
    """Whether one granted permission (possibly ending in `*`) covers `permission`."""
    if granted == permission:
        return True
    prefix, _, last = granted.rpartition(".")
    return last == "*" and permission.rpartition(".")[0] == prefix


def granting_role(roles: Iterable[Role], permission: str) -> Role | None:
    """The first role (in Role order) that grants `permission`, or None."""
    for role in sorted(roles):
        if any(grants(granted, permission) for granted in PERMISSIONS[role]):
            return role
    return None


def scope_covers(scope: str, permission: str) -> bool:
    """Whether an API-key scope covers a permission (see the module docstring)."""
    area, _, access = scope.partition(":")
    service, _, rest = permission.partition(".")
    verb = rest.rpartition(".")[2]
    return area == service and (access == "write" or verb in READ_VERBS)


def user_scopes(roles: Iterable[Role]) -> list[str]:
    """Scopes of a user's access token: every scope their roles may grant, sorted."""
    return sorted({scope for role in roles for scope in GRANTABLE_SCOPES[role]})


def permissions_of(roles: Iterable[Role]) -> list[str]:
    """Every permission the roles hold, sorted."""
    return sorted({granted for role in roles for granted in PERMISSIONS[role]})
