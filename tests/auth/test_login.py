"""Password login through the gRPC contract: tokens that the kit's verifier accepts, no user
enumeration (same status, message and work for unknown identifiers), progressive lockout per
identifier and per IP, refresh-token rotation and reuse detection, logout."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import grpc
import jwt
from finmesh.auth.v1 import auth_resources_pb2 as resources
from finmesh.auth.v1 import auth_service_pb2 as auth
from finmesh.events.v1 import auth_events_pb2

from svc.kit.identity import TokenVerifier
from tests.harness.identity import PASSWORD, Identity, bearer, error_info, from_ip, refused, rid

LOCKED = grpc.StatusCode.RESOURCE_EXHAUSTED
WRONG = grpc.StatusCode.UNAUTHENTICATED


async def test_login_issues_tokens_the_kit_verifies(identity: Identity, tmp_path: Path) -> None:
    registered = await identity.register(email="login@example.com")
    response = await identity.login("login@example.com", device=resources.DeviceInfo(device_id="d1"))
    tokens = response.tokens
    assert tokens.token_type == "Bearer"
    assert tokens.refresh_token.startswith("rt_")
    identity.export_public_keys(tmp_path / "keys.pem")
    verified = TokenVerifier.from_pem_file(
        tmp_path / "keys.pem", issuer="finmesh-auth", audience="finmesh"
    ).verify(tokens.access_token)
    assert verified.subject == registered.user_id
    assert verified.roles == {"user"}
    assert verified.session_id == tokens.session_id
    assert "withdraw:write" in verified.scopes
    header = jwt.get_unverified_header(tokens.access_token)
    assert (header["alg"], header["typ"]) == ("ES256", "at+jwt")
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 300
    assert claims["amr"] == ["pwd"]
    introspected = await identity.auth.IntrospectToken(
        auth.IntrospectTokenRequest(access_token=tokens.access_token)
    )
    assert (introspected.principal.user_id, introspected.kid) == (registered.user_id, header["kid"])
    succeeded = await identity.events(identity.auth_app, auth_events_pb2.LoginSucceeded)
    assert [(event.user_id, event.new_device_or_ip) for event in succeeded] == [(registered.user_id, True)]
    me = await identity.auth.GetMe(auth.GetMeRequest(), metadata=bearer(tokens.access_token))
    assert "withdraw.withdrawals.create" in me.permissions
    assert not me.two_factor.totp_enabled


async def test_unknown_identifier_and_wrong_password_look_the_same(identity: Identity) -> None:
    await identity.register(email="known@example.com")
    answers = []
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    for attempt in range(4):
        for kind, email in (("known", "known@example.com"), ("unknown", "nobody@example.com")):
            started = time.perf_counter()
            error = await refused(
                identity.login(email, password=f"wrong password {attempt}"), WRONG, "UNAUTHENTICATED"
            )
            timings[kind].append(time.perf_counter() - started)
            answers.append((error.code(), error.details(), dict(error_info(error).metadata)))
    assert len(set(map(repr, answers))) == 1, answers
    known, unknown = statistics.median(timings["known"]), statistics.median(timings["unknown"])
    # Both run one argon2id verification; without the dummy hash the unknown path would be a
    # fraction of the known one.
    assert 0.5 < unknown / known < 2.0, timings


async def test_lockout_after_five_failures_for_known_and_unknown_identifiers(identity: Identity) -> None:
    await identity.register(email="victim@example.com")
    for email in ("victim@example.com", "ghost@example.com"):
        for _ in range(5):
            await refused(identity.login(email, password="wrong password!"), WRONG, "UNAUTHENTICATED")
        error = await refused(identity.login(email, password=PASSWORD), LOCKED, "RATE_LIMITED")
        assert 890 <= int(error_info(error).metadata["retry_after_s"]) <= 900
    locked = await identity.events(identity.auth_app, auth_events_pb2.LoginLockedOut)
    assert len(locked) == 2 and not any(event.ip_lockout for event in locked)
    assert locked[0].user_id and not locked[1].user_id
    # Another identifier from the same IP is not affected by an identifier lockout.
    await identity.register(email="bystander@example.com")
    assert (await identity.login("bystander@example.com")).HasField("tokens")


async def test_success_resets_the_consecutive_failures(identity: Identity) -> None:
    await identity.register(email="forgetful@example.com")
    for _ in range(4):
        await refused(
            identity.login("forgetful@example.com", password="wrong password!"), WRONG, "UNAUTHENTICATED"
        )
    assert (await identity.login("forgetful@example.com")).HasField("tokens")
    for _ in range(4):
        await refused(
            identity.login("forgetful@example.com", password="wrong password!"), WRONG, "UNAUTHENTICATED"
        )
    assert (await identity.login("forgetful@example.com")).HasField("tokens")


async def test_an_ip_is_locked_after_fifty_failures_in_an_hour(identity: Identity) -> None:
    await identity.register(email="sprayed@example.com")
    for index in range(50):
        email = f"spray{index % 10}@example.com"
        await refused(
            identity.login(email, password="wrong password!", ip="198.51.100.9"), WRONG, "UNAUTHENTICATED"
        )
    assert (await identity.login("sprayed@example.com", ip="198.51.100.9")).HasField("tokens")
    fifty_first = identity.login("sprayed@example.com", password="wrong password!", ip="198.51.100.9")
    await refused(fifty_first, WRONG, "UNAUTHENTICATED")
    error = await refused(identity.login("sprayed@example.com", ip="198.51.100.9"), LOCKED, "RATE_LIMITED")
    assert 3590 <= int(error_info(error).metadata["retry_after_s"]) <= 3600
    assert (await identity.login("sprayed@example.com", ip="198.51.100.10")).HasField("tokens")
    locked = await identity.events(identity.auth_app, auth_events_pb2.LoginLockedOut)
    assert [event.ip for event in locked if event.ip_lockout] == ["198.51.100.9"]


async def test_refresh_rotates_and_reuse_revokes_the_family(identity: Identity) -> None:
    await identity.register(email="refresh@example.com")
    first = await identity.tokens("refresh@example.com")
    request = auth.RefreshTokenRequest(request_id=rid(), refresh_token=first.refresh_token)
    second = (await identity.auth.RefreshToken(request)).tokens
    assert second.refresh_token != first.refresh_token
    assert second.session_id == first.session_id
    # A retry of the same request (a lost response) is not a reuse.
    assert (await identity.auth.RefreshToken(request)).tokens == second
    third = (
        await identity.auth.RefreshToken(
            auth.RefreshTokenRequest(request_id=rid(), refresh_token=second.refresh_token)
        )
    ).tokens
    stolen = auth.RefreshTokenRequest(request_id=rid(), refresh_token=first.refresh_token)
    error = await refused(identity.auth.RefreshToken(stolen), WRONG, "UNAUTHENTICATED")
    assert error_info(error).metadata["reuse"] == "true"
    latest = auth.RefreshTokenRequest(request_id=rid(), refresh_token=third.refresh_token)
    await refused(identity.auth.RefreshToken(latest), WRONG, "UNAUTHENTICATED")
    await refused(
        identity.auth.IntrospectToken(auth.IntrospectTokenRequest(access_token=third.access_token)),
        WRONG,
        "UNAUTHENTICATED",
    )
    reuse = await identity.events(identity.auth_app, auth_events_pb2.RefreshTokenReuseDetected)
    assert [event.session_id for event in reuse] == [first.session_id]
    revoked = await identity.events(identity.auth_app, auth_events_pb2.SessionRevoked)
    assert [event.reason for event in revoked] == [resources.REVOKE_REASON_REFRESH_TOKEN_REUSE]
    # Another session of the same user is untouched.
    other = await identity.tokens("refresh@example.com")
    assert (
        await identity.auth.RefreshToken(
            auth.RefreshTokenRequest(request_id=rid(), refresh_token=other.refresh_token)
        )
    ).tokens


async def test_logout_ends_the_session(identity: Identity) -> None:
    await identity.register(email="logout@example.com")
    tokens = await identity.tokens("logout@example.com")
    logout = auth.LogoutRequest(request_id=rid())
    ended = await identity.auth.Logout(logout, metadata=bearer(tokens.access_token))
    assert ended.session.state == resources.SESSION_STATE_REVOKED
    assert await identity.auth.Logout(logout, metadata=bearer(tokens.access_token)) == ended
    refresh = auth.RefreshTokenRequest(request_id=rid(), refresh_token=tokens.refresh_token)
    await refused(identity.auth.RefreshToken(refresh), WRONG, "UNAUTHENTICATED")
    listed = await identity.auth.ListSessions(
        auth.ListSessionsRequest(include_inactive=True), metadata=bearer(tokens.access_token)
    )
    assert [(s.session_id, s.revoke_reason) for s in listed.sessions] == [
        (tokens.session_id, resources.REVOKE_REASON_LOGOUT)
    ]


async def test_bad_inputs_are_refused_precisely(identity: Identity) -> None:
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    no_id = auth.LoginRequest(request_id="short", email="a@example.com", password="x")
    await refused(identity.auth.Login(no_id), invalid, "INVALID_ARGUMENT")
    no_identifier = auth.LoginRequest(request_id=rid(), password="x")
    await refused(identity.auth.Login(no_identifier), invalid, "INVALID_ARGUMENT")
    bad_ip = identity.auth.Login(
        auth.LoginRequest(request_id=rid(), email="a@example.com", password="x"),
        metadata=(("x-finmesh-client-ip", "nope"),),
    )
    await refused(bad_ip, invalid, "INVALID_ARGUMENT")
    garbage = auth.RefreshTokenRequest(request_id=rid(), refresh_token="rt_garbage")
    await refused(identity.auth.RefreshToken(garbage), WRONG, "UNAUTHENTICATED")
    challenge = auth.CompleteLoginRequest(request_id=rid(), challenge_token="lc_garbage", totp_code="123456")
    await refused(identity.auth.CompleteLogin(challenge), WRONG, "UNAUTHENTICATED")
    await refused(
        identity.auth.Login(
            auth.LoginRequest(request_id=rid(), email="a@example.com", password="x"), metadata=from_ip()
        ),
        WRONG,
        "UNAUTHENTICATED",
    )
