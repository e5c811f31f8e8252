"""Who an RPC acts for, and the role checks on it, the same in every service.

An end user is the subject of the verified access token the edge forwarded; a call without one
comes from a service that the catalog admitted (mTLS identity). Staff are end users holding one
of the staff roles (support, operator, approver, admin, auditor).
"""

from __future__ import annotations

from svc.kit import errors
from svc.kit.context import EndUser, call


def end_user() -> EndUser | None:
    """The end user of the RPC being served, None for a service calling on its own account."""
    served = call()
    return served.user if served is not None else None


def require_end_user() -> EndUser:
    """The end user; UNAUTHENTICATED when the call carries no end-user token."""
    user = end_user()
    if user is None:
        raise errors.Unauthenticated("this method acts for the signed-in user: no end-user token")
    return user


def require_roles(roles: frozenset[str], what: str) -> EndUser:
    """An end user holding one of `roles`; PERMISSION_DENIED naming the roles otherwise."""
    user = require_end_user()
    if not user.roles & roles:
        raise errors.PermissionDenied(
            f"{what} needs one of the roles {', '.join(sorted(roles))}",
            metadata={"required_roles": ",".join(sorted(roles))},
        )
    return user


def service_or_roles(roles: frozenset[str], what: str) -> EndUser | None:
    """A service (no end user: None) or an end user holding one of `roles`."""
    return None if end_user() is None else require_roles(roles, what)
