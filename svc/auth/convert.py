"""Translation between the auth domain and the contract's messages."""

from __future__ import annotations

from typing import Any

from finmesh.auth.v1 import auth_resources_pb2 as resources
from google.protobuf import timestamp_pb2

from svc.auth.domain import ApiKey, Session, SigningKey


def timestamp(time_us: int) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp from microseconds since the epoch."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(time_us)
    return stamp


def _set_time(message: object, field: str, time_us: int | None) -> None:
    if time_us is not None:
        getattr(message, field).CopyFrom(timestamp(time_us))


def session_message(session: Session, current_session_id: str = "") -> resources.Session:
    """The contract's Session."""
    message = resources.Session(
        session_id=session.session_id,
        user_id=session.user_id,
        state=int(session.state),  # type: ignore[arg-type]
        device=resources.DeviceInfo(
            device_id=session.device_id,
            device_name=session.device_name,
            platform=session.platform,  # type: ignore[arg-type]
        ),
        login_ip=session.login_ip,
        last_ip=session.last_ip,
        user_agent=session.user_agent,
        auth_methods=[int(method) for method in session.methods],  # type: ignore[misc]
        current=session.session_id == current_session_id,
        create_time=timestamp(session.create_time_us),
        last_refresh_time=timestamp(session.last_refresh_time_us),
        expire_time=timestamp(session.expire_time_us),
    )
    _set_time(message, "revoke_time", session.revoke_time_us)
    if session.revoke_reason is not None:
        message.revoke_reason = int(session.revoke_reason)  # type: ignore[assignment]
    return message


def jwk_message(jwk: dict[str, str]) -> resources.JsonWebKey:
    """The contract's JsonWebKey (its JSON form is the JWK)."""
    return resources.JsonWebKey(
        kty=jwk["kty"],
        crv=jwk["crv"],
        x=jwk["x"],
        y=jwk.get("y", ""),
        kid=jwk["kid"],
        use=jwk["use"],
        alg=jwk["alg"],
    )


def signing_key_message(key: SigningKey) -> resources.SigningKey:
    """The contract's SigningKey: public parts only."""
    message = resources.SigningKey(
        kid=key.kid,
        algorithm=key.algorithm,
        state=int(key.state),  # type: ignore[arg-type]
        public_key=jwk_message(key.public_jwk),
        create_time=timestamp(key.create_time_us),
    )
    if key.state is not key.state.PENDING:
        _set_time(message, "activate_time", key.activate_time_us)
    _set_time(message, "retire_time", key.retire_time_us)
    _set_time(message, "remove_time", key.remove_time_us)
    return message


def api_key_message(key: ApiKey, now_us: int) -> resources.ApiKey:
    """The contract's ApiKey; never the secret."""
    message = resources.ApiKey(
        api_key_id=key.api_key_id,
        user_id=key.user_id,
        display_name=key.display_name,
        scopes=list(key.scopes),
        allowed_ip_ranges=list(key.allowed_ip_ranges),
        expire_time=timestamp(key.expire_time_us),
        state=int(key.effective_state(now_us)),  # type: ignore[arg-type]
        secret_fingerprint=key.secret_fingerprint,
        create_time=timestamp(key.create_time_us),
        last_used_ip=key.last_used_ip,
    )
    _set_time(message, "last_used_time", key.last_used_time_us)
    _set_time(message, "revoke_time", key.revoke_time_us)
    return message


def two_factor_message(row: Any, recovery_left: int) -> resources.TwoFactorStatus:
    """The contract's TwoFactorStatus of a stored authenticator row (or none)."""
    if row is None:
        return resources.TwoFactorStatus()
    enabled = row.state == 2
    message = resources.TwoFactorStatus(
        totp_enabled=enabled,
        recovery_codes_remaining=recovery_left if enabled else 0,
        enrollment_pending=not enabled,
    )
    _set_time(message, "totp_confirm_time", row.confirm_time_us)
    return message


def attempt_message(row: Any) -> resources.LoginAttempt:
    """The contract's LoginAttempt of a stored attempt row."""
    return resources.LoginAttempt(
        login_attempt_id=row.login_attempt_id,
        outcome=row.outcome,
        ip=row.ip,
        user_agent=row.user_agent,
        device=resources.DeviceInfo(device_id=row.device_id),
        new_device_or_ip=row.new_device_or_ip,
        session_id=row.session_id,
        attempt_time=timestamp(row.attempt_time_us),
    )


def assignment_message(row: Any) -> resources.RoleAssignment:
    """The contract's RoleAssignment of a stored row."""
    message = resources.RoleAssignment(
        role_assignment_id=row.role_assignment_id,
        user_id=row.user_id,
        role=row.role,
        state=row.state,
        justification=row.justification,
        requested_by=row.requested_by,
        decided_by=row.decided_by,
        revoked_by=row.revoked_by,
        decision_note=row.decision_note,
        create_time=timestamp(row.create_time_us),
    )
    _set_time(message, "expire_time", row.expire_time_us)
    _set_time(message, "decide_time", row.decide_time_us)
    _set_time(message, "revoke_time", row.revoke_time_us)
    return message
