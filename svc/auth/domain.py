"""The auth service's rules: login lockout, sessions and their refresh-token families, signing
keys, second factors, step-up tokens and API keys, with their state machines. Pure: nothing
here does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass, replace
from enum import IntEnum

import grpc

from svc.kit import errors

S_US = 1_000_000
MINUTE_US = 60 * S_US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US

# Lockout (finmesh.auth.v1.AuthService.Login).
IDENTIFIER_FAILURES_FREE = 5
IDENTIFIER_LOCK_FIRST_US = 15 * MINUTE_US
IDENTIFIER_LOCK_MAX_US = DAY_US
# Consecutive failures are forgotten after a day without one, like the longest lock.
IDENTIFIER_FAILURE_MEMORY_US = DAY_US
IP_FAILURES_PER_WINDOW_MAX = 50
IP_WINDOW_US = HOUR_US
IP_LOCK_US = HOUR_US

ACCESS_TOKEN_TTL_S = 300
API_ACCESS_TOKEN_TTL_S = 60
REFRESH_IDLE_US = 30 * DAY_US
SESSION_ABSOLUTE_US = 90 * DAY_US
REFRESH_RETRY_WINDOW_US = 60 * S_US
CHALLENGE_TTL_US = 5 * MINUTE_US
CHALLENGE_FAILURES_MAX = 5
STEP_UP_TTL_US = 5 * MINUTE_US
ENROLLMENT_TTL_US = 10 * MINUTE_US
RECOVERY_CODES_PER_USER = 10
API_KEYS_ACTIVE_PER_USER_MAX = 20
SIGNING_ACTIVATION_DELAY_DEFAULT_US = 10 * MINUTE_US
# A RETIRED key stays published until every token it signed has expired, plus the verifiers'
# clock leeway.
SIGNING_RETIRED_PUBLISHED_US = (ACCESS_TOKEN_TTL_S + 60) * S_US
USER_AGENT_CHARS_MAX = 256

TOKEN_BYTES = 32
RECOVERY_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud to support
BASE62 = string.ascii_letters + string.digits


class RateLimited(errors.DomainError):
    """Too many failures: attempts are refused until `retry_after_s` has passed."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, metadata={"retry_after_s": str(retry_after_s)})
        self.retry_after_s = retry_after_s


class UserNotActive(errors.PermissionDenied):
    """The user is FROZEN or CLOSED."""

    reason = "FROZEN"


class StepUpRequired(errors.DomainError):
    """A sensitive action without a valid step-up (or without 2FA to give one)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "STEP_UP_REQUIRED"


def wrong_credentials() -> errors.Unauthenticated:
    """The one answer for an unknown identifier and a wrong password alike."""
    return errors.Unauthenticated("the identifier or the password is wrong")


class Outcome(IntEnum):
    """finmesh.auth.v1.LoginOutcome."""

    SUCCEEDED = 1
    CHALLENGED = 2
    WRONG_PASSWORD = 3
    WRONG_SECOND_FACTOR = 4
    LOCKED_OUT = 5
    USER_NOT_ACTIVE = 6


class Method(IntEnum):
    """finmesh.auth.v1.AuthMethod, with its RFC 8176 `amr` value."""

    PASSWORD = 1
    TOTP = 2
    RECOVERY_CODE = 3
    API_KEY_SIGNATURE = 4

    @property
    def amr(self) -> str:
        return {1: "pwd", 2: "otp", 3: "otp", 4: "hmac"}[int(self)]


class SessionState(IntEnum):
    """finmesh.auth.v1.SessionState: ACTIVE -> REVOKED | EXPIRED."""

    ACTIVE = 1
    REVOKED = 2
    EXPIRED = 3


class RevokeReason(IntEnum):
    """finmesh.auth.v1.RevokeReason."""

    LOGOUT = 1
    USER_REVOKED = 2
    ADMIN_REVOKED = 3
    PASSWORD_CHANGED = 4
    REFRESH_TOKEN_REUSE = 5
    USER_STATUS = 6
    TWO_FACTOR_CHANGED = 7


class TokenState(IntEnum):
    """A refresh token: ACTIVE -> ROTATED (spent by a refresh) | REVOKED (its session ended)."""

    ACTIVE = 1
    ROTATED = 2
    REVOKED = 3


class KeyState(IntEnum):
    """finmesh.auth.v1.SigningKeyState."""

    PENDING = 1
    ACTIVE = 2
    RETIRED = 3
    REMOVED = 4
    REVOKED = 5


KEY_TRANSITIONS = {
    (KeyState.PENDING, KeyState.ACTIVE),
    (KeyState.ACTIVE, KeyState.RETIRED),
    (KeyState.RETIRED, KeyState.REMOVED),
    (KeyState.PENDING, KeyState.REVOKED),
    (KeyState.ACTIVE, KeyState.REVOKED),
    (KeyState.RETIRED, KeyState.REVOKED),
}
PUBLISHED_KEY_STATES = (KeyState.PENDING, KeyState.ACTIVE, KeyState.RETIRED)


class Factor(IntEnum):
    """finmesh.auth.v1.SecondFactor."""

    TOTP = 1
    RECOVERY_CODE = 2


class TotpState(IntEnum):
    """A user's authenticator: PENDING (enrolled, unconfirmed) -> ENABLED; removed when disabled."""

    PENDING = 1
    ENABLED = 2


class ApiKeyState(IntEnum):
    """finmesh.auth.v1.ApiKeyState: ACTIVE -> REVOKED | EXPIRED."""

    ACTIVE = 1
    REVOKED = 2
    EXPIRED = 3


class SignatureFailure(IntEnum):
    """finmesh.auth.v1.SignatureFailure, with the status each is reported with."""

    UNKNOWN_KEY = 1
    KEY_NOT_ACTIVE = 2
    BAD_SIGNATURE = 3
    TIMESTAMP_OUT_OF_WINDOW = 4
    NONCE_REUSED = 5
    IP_NOT_ALLOWED = 6
    SCOPE_NOT_GRANTED = 7

    def error(self, message: str) -> errors.DomainError:
        refused: errors.DomainError
        if self in (SignatureFailure.IP_NOT_ALLOWED, SignatureFailure.SCOPE_NOT_GRANTED):
            refused = errors.PermissionDenied(message)
        else:
            refused = errors.Unauthenticated(message)
        refused.metadata["failure"] = f"SIGNATURE_FAILURE_{self.name}"
        return refused


class StepUpPurpose(IntEnum):
    """finmesh.auth.v1.StepUpPurpose (the values this service itself redeems)."""

    API_KEY_CREATE = 3
    API_KEY_UPDATE = 4
    TWO_FACTOR_CHANGE = 5
    PASSWORD_CHANGE = 6


def check_key_transition(current: KeyState, target: KeyState) -> None:
    """The one place that says which signing-key state change is allowed."""
    if (current, target) not in KEY_TRANSITIONS:
        raise errors.InvalidState(
            f"a {current.name} signing key cannot become {target.name}",
            metadata={"state": current.name, "requested_state": target.name},
        )


# Lockout


@dataclass(frozen=True)
class Counter:
    """Failed logins counted for one identifier hash (`id:...`) or one IP (`ip:...`).

    For an identifier, `failures` is the consecutive failures and `window_start_us` the time of
    the last one; for an IP, the failures in the hour window starting at `window_start_us`.
    """

    key: str
    failures: int = 0
    window_start_us: int = 0
    locked_until_us: int = 0

    def retry_after_s(self, now_us: int) -> int:
        """Seconds until attempts are accepted again; 0 when not locked."""
        return max(0, -(-(self.locked_until_us - now_us) // S_US))


def identifier_failed(counter: Counter, now_us: int) -> Counter:
    """One more consecutive failure: 15 minutes locked after the fifth, doubling up to a day."""
    failures = 1 if now_us - counter.window_start_us > IDENTIFIER_FAILURE_MEMORY_US else counter.failures + 1
    locked_until = counter.locked_until_us
    if failures >= IDENTIFIER_FAILURES_FREE:
        lock = IDENTIFIER_LOCK_FIRST_US << min(failures - IDENTIFIER_FAILURES_FREE, 16)
        locked_until = now_us + min(lock, IDENTIFIER_LOCK_MAX_US)
    return replace(counter, failures=failures, window_start_us=now_us, locked_until_us=locked_until)


def ip_failed(counter: Counter, now_us: int) -> Counter:
    """One more failure from an IP: more than 50 in an hour lock it for an hour."""
    if now_us - counter.window_start_us >= IP_WINDOW_US:
        counter = replace(counter, failures=0, window_start_us=now_us)
    failures = counter.failures + 1
    locked_until = counter.locked_until_us
    if failures > IP_FAILURES_PER_WINDOW_MAX:
        locked_until = now_us + IP_LOCK_US
    return replace(counter, failures=failures, locked_until_us=locked_until)


# Secrets and their hashes


def new_token(prefix: str) -> str:
    """An opaque bearer secret: a prefix and 256 random bits, URL-safe."""
    return prefix + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What is stored for a 256-bit random token: SHA-256 suffices, there is nothing to guess."""
    return hashlib.sha256(token.encode()).hexdigest()


def keyed_hash(key: bytes, value: str) -> str:
    """HMAC-SHA256 under a service key: for low-entropy values (identifiers, recovery codes)."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def new_recovery_code() -> str:
    """`XXXXX-XXXXX` from a 31-letter alphabet (about 50 bits)."""
    letters = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(10))
    return f"{letters[:5]}-{letters[5:]}"


def normal_recovery_code(code: str) -> str:
    return code.replace("-", "").upper()


def new_api_key_id() -> str:
    return "ak_" + "".join(secrets.choice(BASE62) for _ in range(24))


def new_api_secret() -> str:
    """`sk_` and 43 base62 characters (256 bits)."""
    return "sk_" + "".join(secrets.choice(BASE62) for _ in range(43))


# Records


@dataclass(frozen=True)
class Session:
    """One login session: one refresh-token family."""

    session_id: str
    user_id: str
    state: SessionState
    device_id: str
    device_name: str
    platform: int
    login_ip: str
    last_ip: str
    user_agent: str
    methods: tuple[Method, ...]
    roles: tuple[int, ...]
    create_time_us: int
    last_refresh_time_us: int
    expire_time_us: int
    revoke_time_us: int | None = None
    revoke_reason: RevokeReason | None = None


@dataclass(frozen=True)
class RefreshToken:
    """A stored refresh token (its hash) in a session's family."""

    token_hash: str
    session_id: str
    user_id: str
    state: TokenState
    issue_time_us: int
    expire_time_us: int
    rotate_time_us: int | None = None


@dataclass(frozen=True)
class SigningKey:
    """A token-signing key; the private key sealed."""

    kid: str
    algorithm: str
    state: KeyState
    public_jwk: dict[str, str]
    private_sealed: bytes
    create_time_us: int
    activate_time_us: int | None
    retire_time_us: int | None = None
    remove_time_us: int | None = None


@dataclass(frozen=True)
class ApiKey:
    """A partner API key; the secret sealed (HMAC verification needs it), a fingerprint shown."""

    api_key_id: str
    user_id: str
    display_name: str
    scopes: tuple[str, ...]
    allowed_ip_ranges: tuple[str, ...]
    expire_time_us: int
    state: ApiKeyState
    secret_sealed: bytes
    secret_fingerprint: str
    create_time_us: int
    last_used_time_us: int | None = None
    last_used_ip: str = ""
    revoke_time_us: int | None = None

    def effective_state(self, now_us: int) -> ApiKeyState:
        """EXPIRED once past the expiry, even before a sweep records it."""
        if self.state is ApiKeyState.ACTIVE and now_us >= self.expire_time_us:
            return ApiKeyState.EXPIRED
        return self.state


class TwoFactorRequired(errors.DomainError):
    """A step-up was asked for by a user without TOTP: sensitive actions require 2FA."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "STEP_UP_REQUIRED"


class AssignmentState(IntEnum):
    """finmesh.auth.v1.RoleAssignmentState (see ASSIGNMENT_TRANSITIONS)."""

    PENDING_APPROVAL = 1
    ACTIVE = 2
    REJECTED = 3
    EXPIRED = 4
    REVOKED = 5


ASSIGNMENT_TRANSITIONS = {
    (AssignmentState.PENDING_APPROVAL, AssignmentState.ACTIVE),
    (AssignmentState.PENDING_APPROVAL, AssignmentState.REJECTED),
    (AssignmentState.PENDING_APPROVAL, AssignmentState.EXPIRED),
    (AssignmentState.ACTIVE, AssignmentState.REVOKED),
}
ASSIGNMENT_APPROVAL_US = 72 * HOUR_US


def check_assignment_transition(current: AssignmentState, target: AssignmentState) -> None:
    """The one place that says which role-assignment state change is allowed."""
    if (current, target) not in ASSIGNMENT_TRANSITIONS:
        raise errors.InvalidState(
            f"a {current.name} role assignment cannot become {target.name}",
            metadata={"state": current.name, "requested_state": target.name},
        )
