"""The user service's rules: identifiers and their normal form, the user record, and the status
state machine with its freeze reasons. Pure: nothing here does I/O.

Status transitions (finmesh.user.v1.UserStatus):
    ACTIVE -> FROZEN     a first freeze reason (FreezeUser)
    FROZEN -> FROZEN     another reason added, or one of several lifted
    FROZEN -> ACTIVE     the last reason lifted (UnfreezeUser)
    ACTIVE | FROZEN -> CLOSED   (CloseUser, CloseMyAccount); terminal.
A user is frozen exactly while at least one freeze reason is in force, so that two independent
freezes (a compliance hold and a court order) each need their own release.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from enum import IntEnum

from svc.kit import errors

# User ids derive from the registration's request_id, so that a retry after a failure between
# the auth service's commit (the password) and ours reuses the same id.
USER_ID_NAMESPACE = uuid.UUID("0c5e7d7a-2f31-5a57-8d0b-6f4f3b1a9e21")
PROFILE_FIELDS = ("display_name", "language", "time_zone", "country_of_residence", "marketing_consent")


class Status(IntEnum):
    """finmesh.user.v1.UserStatus."""

    ACTIVE = 1
    FROZEN = 2
    CLOSED = 3


class Reason(IntEnum):
    """finmesh.user.v1.StatusReason."""

    USER_REQUEST = 1
    SECURITY = 2
    FRAUD_SUSPECTED = 3
    COMPLIANCE = 4
    SANCTIONS = 5
    LEGAL_ORDER = 6
    DORMANT = 7
    OTHER = 8


class Channel(IntEnum):
    """finmesh.user.v1.ContactChannel."""

    EMAIL = 1
    PHONE = 2


class Actor(IntEnum):
    """finmesh.user.v1.ActorType."""

    USER = 1
    OPERATOR = 2
    SYSTEM = 3


TRANSITIONS = {
    (Status.ACTIVE, Status.FROZEN),
    (Status.FROZEN, Status.FROZEN),
    (Status.FROZEN, Status.ACTIVE),
    (Status.ACTIVE, Status.CLOSED),
    (Status.FROZEN, Status.CLOSED),
}


def check_transition(current: Status, target: Status) -> None:
    """The one place that says which status change is allowed."""
    if (current, target) not in TRANSITIONS:
        raise errors.InvalidState(
            f"a {current.name} user cannot become {target.name}",
            metadata={"status": current.name, "requested_status": target.name},
        )


def user_id_for(request_id: str) -> str:
    """The id of the user a registration request creates."""
    return str(uuid.uuid5(USER_ID_NAMESPACE, request_id))


@dataclass(frozen=True)
class Profile:
    """The part of a user the user edits."""

    display_name: str = ""
    language: str = ""
    time_zone: str = ""
    country_of_residence: str = ""
    marketing_consent: bool = False


@dataclass(frozen=True)
class User:
    """A user record as stored."""

    user_id: str
    email: str
    phone: str
    profile: Profile
    status: Status
    reasons: tuple[Reason, ...]
    accepted_terms_version: str
    referrer_user_id: str
    create_time_us: int
    update_time_us: int
    close_time_us: int | None
    version: int
    email_verified: bool = False
    phone_verified: bool = False
    pending_email: str = ""
    pending_phone: str = ""

    @property
    def channel(self) -> Channel:
        return Channel.EMAIL if self.email else Channel.PHONE


@dataclass(frozen=True)
class StatusChange:
    """One status change (or freeze reason added/lifted), kept for support and audit."""

    change_id: str
    user_id: str
    previous_status: Status
    new_status: Status
    reason: Reason
    note: str
    actor_type: Actor
    actor_id: str
    approval_id: str
    change_time_us: int
    version: int
    revoke_sessions: bool = False
    active_reasons: tuple[Reason, ...] = field(default=())


def update_profile(profile: Profile, changes: Profile, paths: list[str]) -> Profile:
    """The profile with the named fields taken from `changes`; unknown paths are INVALID_ARGUMENT."""
    unknown = [path for path in paths if path not in PROFILE_FIELDS]
    if unknown or not paths:
        raise errors.InvalidArgument(
            [
                errors.FieldViolation(
                    "update_mask", f"paths must be among {', '.join(PROFILE_FIELDS)}; got {unknown or 'none'}"
                )
            ]
        )
    return replace(profile, **{path: getattr(changes, path) for path in paths})


def freeze(user: User, reason: Reason) -> User:
    """The user with a freeze reason added; ACTIVE -> FROZEN on the first."""
    check_transition(user.status, Status.FROZEN)
    assert reason not in user.reasons, (user, reason)
    return replace(user, status=Status.FROZEN, reasons=tuple(sorted((*user.reasons, reason))))


def close(user: User, reason: Reason, now_us: int) -> User:
    """The user CLOSED for `reason` (which becomes the only reason on record); terminal."""
    check_transition(user.status, Status.CLOSED)
    return replace(user, status=Status.CLOSED, reasons=(reason,), close_time_us=now_us)


def unfreeze(user: User, reason: Reason) -> User:
    """The user with one freeze reason lifted; FROZEN -> ACTIVE when none remains."""
    if user.status is not Status.FROZEN or reason not in user.reasons:
        raise errors.InvalidState(
            f"the user is not frozen for {reason.name}",
            metadata={"status": user.status.name, "reason": reason.name},
        )
    remaining = tuple(held for held in user.reasons if held is not reason)
    target = Status.FROZEN if remaining else Status.ACTIVE
    check_transition(user.status, target)
    return replace(user, status=target, reasons=remaining)


def verify_contact(user: User, channel: Channel, destination: str) -> tuple[User, bool]:
    """The user with `destination` verified on `channel`: the pending contact becomes the
    current one (returns True for "replaced"), or the current one is marked verified."""
    if channel is Channel.EMAIL:
        if user.pending_email and destination == user.pending_email:
            return replace(user, email=destination, email_verified=True, pending_email=""), bool(user.email)
        if destination == user.email:
            return replace(user, email_verified=True), False
    else:
        if user.pending_phone and destination == user.pending_phone:
            return replace(user, phone=destination, phone_verified=True, pending_phone=""), bool(user.phone)
        if destination == user.phone:
            return replace(user, phone_verified=True), False
    raise errors.InvalidState(
        "the code was sent to a contact the user no longer has: ask for a new one",
        metadata={"channel": channel.name},
    )
