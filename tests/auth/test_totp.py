"""TOTP through the gRPC contract, and the algorithm against the RFC test vectors: enrollment and
confirmation, login with a second factor, replay of a code refused, recovery codes spent once,
a challenge voided after five wrong answers, step-up tokens redeemed once for one purpose."""

from __future__ import annotations

import time

import grpc
import pytest
from finmesh.auth.v1 import auth_resources_pb2 as resources
from finmesh.auth.v1 import auth_service_pb2 as auth
from finmesh.events.v1 import auth_events_pb2

from svc.auth import totp
from tests.harness.identity import PASSWORD, Identity, bearer, refused, rid

SHA1_SECRET = b"12345678901234567890"
SHA256_SECRET = b"12345678901234567890123456789012"
SHA512_SECRET = b"1234567890" * 6 + b"1234"
# RFC 6238 appendix B: (time, SHA1, SHA256, SHA512), 8 digits.
RFC6238 = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]
# RFC 4226 appendix D: HOTP of counters 0..9, 6 digits.
RFC4226 = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]
DENIED, WRONG = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(("unix_s", "sha1", "sha256", "sha512"), RFC6238)
def test_rfc6238_vectors(unix_s: int, sha1: str, sha256: str, sha512: str) -> None:
    assert totp.totp(SHA1_SECRET, unix_s, digits=8, algorithm="SHA1") == sha1
    assert totp.totp(SHA256_SECRET, unix_s, digits=8, algorithm="SHA256") == sha256
    assert totp.totp(SHA512_SECRET, unix_s, digits=8, algorithm="SHA512") == sha512


def test_rfc4226_vectors_and_the_replay_rule() -> None:
    assert [totp.hotp(SHA1_SECRET, counter) for counter in range(10)] == RFC4226
    now = 1111111111
    step = totp.time_step(now)
    code = totp.totp(SHA1_SECRET, now)
    assert totp.matching_step(SHA1_SECRET, code, now, last_used_step=-1) == step
    assert totp.matching_step(SHA1_SECRET, code, now, last_used_step=step) is None
    assert totp.matching_step(SHA1_SECRET, code, now + 30, last_used_step=-1) == step  # one step of drift
    assert totp.matching_step(SHA1_SECRET, code, now + 61, last_used_step=-1) is None


async def _user_with_totp(identity: Identity, email: str) -> tuple[str, bytes, list[str]]:
    await identity.register(email=email)
    access = (await identity.tokens(email)).access_token
    secret, codes = await identity.enable_totp(access)
    return access, secret, codes


async def test_enroll_confirm_and_log_in_with_a_code(identity: Identity) -> None:
    access, secret, codes = await _user_with_totp(identity, "totp@example.com")
    assert len(codes) == 10 and len(set(codes)) == 10
    status = await identity.auth.GetTwoFactorStatus(auth.GetTwoFactorStatusRequest(), metadata=bearer(access))
    assert (status.two_factor.totp_enabled, status.two_factor.recovery_codes_remaining) == (True, 10)
    again = auth.EnrollTotpRequest(request_id=rid(), current_password=PASSWORD)
    await refused(
        identity.auth.EnrollTotp(again, metadata=bearer(access)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
    challenged = await identity.login("totp@example.com")
    assert challenged.HasField("challenge") and not challenged.HasField("tokens")
    # The code used to confirm the enrollment is spent: it cannot complete this login.
    now = time.time()
    used = auth.CompleteLoginRequest(
        request_id=rid(),
        challenge_token=challenged.challenge.challenge_token,
        totp_code=totp.totp(secret, now),
    )
    await refused(identity.auth.CompleteLogin(used), WRONG, "UNAUTHENTICATED")
    next_step = auth.CompleteLoginRequest(
        request_id=rid(),
        challenge_token=challenged.challenge.challenge_token,
        totp_code=totp.totp(secret, now + 30),
    )
    completed = await identity.auth.CompleteLogin(next_step)
    assert await identity.auth.CompleteLogin(next_step) == completed
    introspected = await identity.auth.IntrospectToken(
        auth.IntrospectTokenRequest(access_token=completed.tokens.access_token)
    )
    assert set(introspected.principal.auth_methods) == {
        resources.AUTH_METHOD_PASSWORD,
        resources.AUTH_METHOD_TOTP,
    }
    # A challenge is single use.
    replay = auth.CompleteLoginRequest(
        request_id=rid(),
        challenge_token=challenged.challenge.challenge_token,
        totp_code=totp.totp(secret, now - 30),
    )
    await refused(identity.auth.CompleteLogin(replay), WRONG, "UNAUTHENTICATED")
    assert len(await identity.events(identity.auth_app, auth_events_pb2.TwoFactorEnabled)) == 1


async def test_recovery_codes_are_spent_once(identity: Identity) -> None:
    _, _, codes = await _user_with_totp(identity, "recovery@example.com")
    for expected, token in ((True, None), (False, None)):
        challenge = (await identity.login("recovery@example.com")).challenge.challenge_token
        request = auth.CompleteLoginRequest(
            request_id=rid(), challenge_token=challenge, recovery_code=codes[0].lower()
        )
        if expected:
            completed = await identity.auth.CompleteLogin(request)
            assert completed.recovery_codes_remaining == 9
        else:
            await refused(identity.auth.CompleteLogin(request), WRONG, "UNAUTHENTICATED")
        assert token is None
    used = await identity.events(identity.auth_app, auth_events_pb2.RecoveryCodeUsed)
    assert [event.remaining for event in used] == [9]


async def test_five_wrong_codes_void_the_challenge_and_count_towards_lockout(identity: Identity) -> None:
    _, secret, _ = await _user_with_totp(identity, "guess@example.com")
    challenge = (await identity.login("guess@example.com")).challenge.challenge_token
    for attempt in range(5):
        guess = auth.CompleteLoginRequest(
            request_id=rid(), challenge_token=challenge, totp_code=f"{attempt:06d}"
        )
        await refused(identity.auth.CompleteLogin(guess), WRONG, "UNAUTHENTICATED")
    right = auth.CompleteLoginRequest(
        request_id=rid(), challenge_token=challenge, totp_code=totp.totp(secret, time.time() + 30)
    )
    await refused(identity.auth.CompleteLogin(right), WRONG, "UNAUTHENTICATED")
    # Five failures on the identifier: the password step is locked out now.
    await refused(identity.login("guess@example.com"), grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")


async def test_step_up_tokens_are_single_use_and_bound(identity: Identity) -> None:
    access, secret, codes = await _user_with_totp(identity, "stepup@example.com")
    me = await identity.auth.GetMe(auth.GetMeRequest(), metadata=bearer(access))
    digest = "ab" * 32
    verify = auth.VerifyStepUpRequest(
        request_id=rid(),
        purpose=resources.STEP_UP_PURPOSE_WITHDRAWAL,
        totp_code=totp.totp(secret, time.time() + 30),
        operation_digest=digest,
    )
    stepped = await identity.auth.VerifyStepUp(verify, metadata=bearer(access))

    def redeem(request_id: str, **fields: object) -> auth.RedeemStepUpTokenRequest:
        values: dict[str, object] = {
            "request_id": request_id,
            "step_up_token": stepped.step_up_token,
            "user_id": me.principal.user_id,
            "session_id": me.principal.session_id,
            "purpose": resources.STEP_UP_PURPOSE_WITHDRAWAL,
            "operation_digest": digest,
        }
        values.update(fields)
        return auth.RedeemStepUpTokenRequest(**values)  # type: ignore[arg-type]

    await refused(
        identity.auth.RedeemStepUpToken(redeem(rid(), purpose=resources.STEP_UP_PURPOSE_API_KEY_CREATE)),
        DENIED,
        "STEP_UP_REQUIRED",
    )
    await refused(
        identity.auth.RedeemStepUpToken(redeem(rid(), operation_digest="cd" * 32)), DENIED, "STEP_UP_REQUIRED"
    )
    await refused(
        identity.auth.RedeemStepUpToken(redeem(rid(), user_id="6b0e3c52-3d3f-4e0b-9d1d-2f1f3f0e0a11")),
        DENIED,
        "STEP_UP_REQUIRED",
    )
    redeemed = await identity.auth.RedeemStepUpToken(redeem("withdrawal-1"))
    assert redeemed.factor == auth.SECOND_FACTOR_TOTP
    assert await identity.auth.RedeemStepUpToken(redeem("withdrawal-1")) == redeemed
    await refused(identity.auth.RedeemStepUpToken(redeem("withdrawal-2")), DENIED, "STEP_UP_REQUIRED")
    # The same TOTP step cannot make a second token.
    again = auth.VerifyStepUpRequest(
        request_id=rid(),
        purpose=resources.STEP_UP_PURPOSE_WITHDRAWAL,
        totp_code=totp.totp(secret, time.time() + 30),
    )
    await refused(identity.auth.VerifyStepUp(again, metadata=bearer(access)), WRONG, "UNAUTHENTICATED")
    by_code = auth.VerifyStepUpRequest(
        request_id=rid(), purpose=resources.STEP_UP_PURPOSE_TWO_FACTOR_CHANGE, recovery_code=codes[1]
    )
    token = (await identity.auth.VerifyStepUp(by_code, metadata=bearer(access))).step_up_token
    # End users cannot redeem tokens themselves: it is for the services that perform the action.
    await refused(
        identity.auth.RedeemStepUpToken(redeem(rid()), metadata=bearer(access)), DENIED, "PERMISSION_DENIED"
    )
    disable = auth.DisableTotpRequest(request_id=rid(), step_up_token=token)
    disabled = await identity.auth.DisableTotp(disable, metadata=bearer(access))
    assert not disabled.two_factor.totp_enabled
    assert (await identity.login("stepup@example.com")).HasField("tokens")


async def test_step_up_needs_two_factor(identity: Identity) -> None:
    await identity.register(email="no2fa@example.com")
    access = (await identity.tokens("no2fa@example.com")).access_token
    verify = auth.VerifyStepUpRequest(
        request_id=rid(), purpose=resources.STEP_UP_PURPOSE_WITHDRAWAL, totp_code="123456"
    )
    await refused(
        identity.auth.VerifyStepUp(verify, metadata=bearer(access)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "STEP_UP_REQUIRED",
    )
    wrong_password = auth.EnrollTotpRequest(request_id=rid(), current_password="not my password")
    await refused(identity.auth.EnrollTotp(wrong_password, metadata=bearer(access)), WRONG, "UNAUTHENTICATED")
    enrolled = await identity.auth.EnrollTotp(
        auth.EnrollTotpRequest(request_id=rid(), current_password=PASSWORD), metadata=bearer(access)
    )
    assert enrolled.otpauth_uri.startswith("otpauth://totp/finmesh%3Ano2fa%40example.com?secret=")
    wrong = auth.ConfirmTotpRequest(
        request_id=rid(), enrollment_id=enrolled.enrollment_id, totp_code="000000"
    )
    await refused(
        identity.auth.ConfirmTotp(wrong, metadata=bearer(access)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_support_reset_removes_the_second_factor(identity: Identity) -> None:
    access, _, _ = await _user_with_totp(identity, "lostphone@example.com")
    me = await identity.auth.GetMe(auth.GetMeRequest(), metadata=bearer(access))
    reset = auth.ResetTwoFactorRequest(
        request_id=rid(), user_id=me.principal.user_id, approval_id="approval-9", note="video call"
    )
    await refused(identity.auth.ResetTwoFactor(reset, metadata=bearer(access)), DENIED, "PERMISSION_DENIED")
    assert not (await identity.auth.ResetTwoFactor(reset)).two_factor.totp_enabled
    sessions = await identity.auth.ListUserSessions(
        auth.ListUserSessionsRequest(user_id=me.principal.user_id, include_inactive=True)
    )
    assert {session.revoke_reason for session in sessions.sessions} == {
        resources.REVOKE_REASON_TWO_FACTOR_CHANGED
    }
    assert (await identity.login("lostphone@example.com")).HasField("tokens")
    disabled = await identity.events(identity.auth_app, auth_events_pb2.TwoFactorDisabled)
    assert [(event.reset_by_support, event.approval_id) for event in disabled] == [(True, "approval-9")]
