"""API keys and signed partner requests through the gRPC contract: creation behind a step-up
with the secret shown once, HMAC-SHA256 over the canonical request, and every refusal (replayed
nonce, timestamp out of window, bad signature, unknown or revoked key, IP outside the
allow-list, scope not granted); the nonce store in Redis; permission checks with key scopes."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import redis.asyncio as aioredis
from finmesh.auth.v1 import auth_resources_pb2 as resources
from finmesh.auth.v1 import auth_service_pb2 as auth
from finmesh.events.v1 import auth_events_pb2
from google.protobuf import field_mask_pb2, timestamp_pb2

from svc.auth import signatures, totp
from tests.harness.identity import Identity, Templates, bearer, error_info, refused, rid, start_identity
from tests.harness.servers import RedisServer

DENIED, WRONG = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED
PARTNER_IP = "192.0.2.10"
DAY_S = 24 * 3600


def _expiry(seconds: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromSeconds(int(time.time()) + seconds)
    return stamp


async def _partner(
    identity: Identity, email: str, scopes: list[str]
) -> tuple[str, auth.CreateApiKeyResponse]:
    """A partner with TOTP and one API key; returns its access token and the creation response."""
    await identity.register(email=email)
    access = (await identity.tokens(email)).access_token
    secret, _ = await identity.enable_totp(access)
    step_up = await identity.auth.VerifyStepUp(
        auth.VerifyStepUpRequest(
            request_id=rid(),
            purpose=resources.STEP_UP_PURPOSE_API_KEY_CREATE,
            totp_code=totp.totp(secret, time.time() + 30),
        ),
        metadata=bearer(access),
    )
    create = auth.CreateApiKeyRequest(
        request_id=rid(),
        display_name="treasury bot",
        scopes=scopes,
        allowed_ip_ranges=["192.0.2.0/24", "2001:db8::/32"],
        expire_time=_expiry(30 * DAY_S),
        step_up_token=step_up.step_up_token,
    )
    created = await identity.auth.CreateApiKey(create, metadata=bearer(access))
    assert created.secret.startswith("sk_") and len(created.secret) == 46
    repeated = await identity.auth.CreateApiKey(create, metadata=bearer(access))
    assert repeated.api_key == created.api_key and repeated.secret == ""
    return access, created


def signed(
    key_id: str,
    secret: str,
    *,
    method: str = "POST",
    path: str = "/v1/withdrawals",
    body: bytes = b'{"a":1}',
    query: list[tuple[str, str]] | None = None,
    timestamp: int | None = None,
    nonce: str | None = None,
    ip: str = PARTNER_IP,
    scope: str = "withdraw:write",
) -> auth.VerifyRequestSignatureRequest:
    """The gateway's request for a partner request signed as the contract says."""
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    once = rid("nonce")[:40].replace("-", "_")
    canonical = signatures.canonical_query([("asset", "ethereum:ETH"), ("a b", "c&d")])
    body_hash = hashlib.sha256(body).hexdigest()
    text = signatures.string_to_sign(method, path, canonical, body_hash, stamp, once)
    return auth.VerifyRequestSignatureRequest(
        request_id=rid("gw"),
        api_key_id=key_id,
        timestamp=stamp,
        nonce=once,
        signature=signatures.sign(secret, text),
        method=method,
        path=path,
        canonical_query=canonical,
        body_sha256=body_hash,
        client_ip=ip,
        required_scope=scope,
    )


async def _failure(
    identity: Identity, request: auth.VerifyRequestSignatureRequest, code: grpc.StatusCode
) -> str:
    error = await refused(
        identity.auth.VerifyRequestSignature(request),
        code,
        "PERMISSION_DENIED" if code == DENIED else "UNAUTHENTICATED",
    )
    return error_info(error).metadata["failure"]


def test_canonical_query_sorts_and_encodes() -> None:
    assert signatures.canonical_query([("b", "2"), ("a", "x y"), ("a", "é/~")]) == "a=x%20y&a=%C3%A9%2F~&b=2"
    assert signatures.canonical_query([]) == ""


async def test_signed_request_is_verified_once(identity: Identity, tmp_path: Path) -> None:
    access, created = await _partner(identity, "partner@example.com", ["withdraw:write", "wallet:read"])
    key = created.api_key
    assert key.secret_fingerprint == hashlib.sha256(created.secret.encode()).hexdigest()[:16]
    request = signed(key.api_key_id, created.secret)
    verified = await identity.auth.VerifyRequestSignature(request)
    assert verified.principal.type == resources.PRINCIPAL_TYPE_API_KEY
    assert (verified.principal.user_id, verified.principal.api_key_id) == (key.user_id, key.api_key_id)
    assert await identity.auth.VerifyRequestSignature(request) == verified  # the gateway's retry
    identity.export_public_keys(tmp_path / "keys.pem")
    claims = jwt.decode(verified.access_token, options={"verify_signature": False})
    assert (claims["api_key_id"], claims["scope"], claims["exp"] - claims["iat"]) == (
        key.api_key_id,
        "wallet:read withdraw:write",
        60,
    )
    # The same signed request under another gateway request id is a replay.
    replay = auth.VerifyRequestSignatureRequest()
    replay.CopyFrom(request)
    replay.request_id = rid("gw")
    assert await _failure(identity, replay, WRONG) == "SIGNATURE_FAILURE_NONCE_REUSED"
    got = await identity.auth.GetApiKey(
        auth.GetApiKeyRequest(api_key_id=key.api_key_id), metadata=bearer(access)
    )
    assert (got.api_key.last_used_ip, got.api_key.state) == (PARTNER_IP, resources.API_KEY_STATE_ACTIVE)


async def test_every_refusal_is_precise(identity: Identity) -> None:
    access, created = await _partner(identity, "refusals@example.com", ["withdraw:write"])
    key_id, secret = created.api_key.api_key_id, created.secret
    old = int(time.time()) - signatures.REPLAY_WINDOW_S - 5
    cases: list[tuple[auth.VerifyRequestSignatureRequest, grpc.StatusCode, str]] = [
        (signed(key_id, secret, timestamp=old), WRONG, "TIMESTAMP_OUT_OF_WINDOW"),
        (signed(key_id, secret, timestamp=int(time.time()) + 400), WRONG, "TIMESTAMP_OUT_OF_WINDOW"),
        (signed(key_id, "sk_" + "x" * 43), WRONG, "BAD_SIGNATURE"),
        (signed("ak_" + "Z" * 24, secret), WRONG, "UNKNOWN_KEY"),
        (signed(key_id, secret, ip="198.51.100.1"), DENIED, "IP_NOT_ALLOWED"),
        (signed(key_id, secret, scope="lending:write"), DENIED, "SCOPE_NOT_GRANTED"),
    ]
    for request, code, failure in cases:
        assert await _failure(identity, request, code) == f"SIGNATURE_FAILURE_{failure}", failure
    tampered = signed(key_id, secret)
    tampered.path = "/v1/withdrawals/other"
    assert await _failure(identity, tampered, WRONG) == "SIGNATURE_FAILURE_BAD_SIGNATURE"
    assert (await identity.auth.VerifyRequestSignature(signed(key_id, secret, ip="2001:db8::7"))).access_token
    revoke = auth.RevokeApiKeyRequest(request_id=rid(), api_key_id=key_id)
    revoked = await identity.auth.RevokeApiKey(revoke, metadata=bearer(access))
    assert revoked.api_key.state == resources.API_KEY_STATE_REVOKED
    assert await _failure(identity, signed(key_id, secret), WRONG) == "SIGNATURE_FAILURE_KEY_NOT_ACTIVE"
    rejected = await identity.events(identity.auth_app, auth_events_pb2.SignedRequestRejected)
    assert len(rejected) == len(cases) + 2
    assert rejected[0].route == "POST /v1/withdrawals"
    assert not any(created.secret in repr(event) for event in rejected)


async def test_key_creation_rules(identity: Identity) -> None:
    await identity.register(email="keys@example.com")
    access = (await identity.tokens("keys@example.com")).access_token
    without = auth.CreateApiKeyRequest(
        request_id=rid(),
        display_name="k",
        scopes=["wallet:read"],
        allowed_ip_ranges=["192.0.2.0/24"],
        expire_time=_expiry(DAY_S),
        step_up_token="su_forged",
    )
    await refused(identity.auth.CreateApiKey(without, metadata=bearer(access)), DENIED, "STEP_UP_REQUIRED")
    secret, _ = await identity.enable_totp(access)

    async def step_up(offset: int) -> str:
        response = await identity.auth.VerifyStepUp(
            auth.VerifyStepUpRequest(
                request_id=rid(),
                purpose=resources.STEP_UP_PURPOSE_API_KEY_CREATE,
                totp_code=totp.totp(secret, time.time() + offset),
            ),
            metadata=bearer(access),
        )
        return response.step_up_token

    escalate = auth.CreateApiKeyRequest()
    escalate.CopyFrom(without)
    escalate.request_id, escalate.step_up_token = rid(), await step_up(30)
    escalate.scopes[:] = ["admin:write"]
    await refused(identity.auth.CreateApiKey(escalate, metadata=bearer(access)), DENIED, "PERMISSION_DENIED")
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    for field, value in (("allowed_ip_ranges", ["not-a-cidr"]), ("scopes", ["withdraw:delete"])):
        bad = auth.CreateApiKeyRequest()
        bad.CopyFrom(without)
        getattr(bad, field)[:] = value
        await refused(identity.auth.CreateApiKey(bad, metadata=bearer(access)), invalid, "INVALID_ARGUMENT")
    late = auth.CreateApiKeyRequest()
    late.CopyFrom(without)
    late.expire_time.CopyFrom(_expiry(400 * DAY_S))
    await refused(identity.auth.CreateApiKey(late, metadata=bearer(access)), invalid, "INVALID_ARGUMENT")
    listed = await identity.auth.ListApiKeys(auth.ListApiKeysRequest(), metadata=bearer(access))
    assert list(listed.api_keys) == []


async def test_permission_checks_combine_roles_and_key_scopes(identity: Identity) -> None:
    _, created = await _partner(identity, "perms@example.com", ["withdraw:read"])
    owner = created.api_key.user_id

    async def check(permission: str, api_key_id: str = "") -> tuple[bool, str]:
        response = await identity.auth.CheckPermission(
            auth.CheckPermissionRequest(user_id=owner, api_key_id=api_key_id, permission=permission)
        )
        return response.allowed, response.denial_reason

    assert await check("withdraw.withdrawals.create") == (True, "")
    assert await check("withdraw.withdrawals.approve") == (False, "no role grants it")
    assert await check("withdraw.withdrawals.read", created.api_key.api_key_id) == (True, "")
    assert await check("withdraw.withdrawals.create", created.api_key.api_key_id) == (
        False,
        "scope not granted",
    )
    roles = await identity.auth.ListRoles(auth.ListRolesRequest())
    assert len(roles.roles) == 6 and all(role.requires_two_factor for role in roles.roles[1:])


@pytest.fixture
async def identity_with_redis(
    database_url: str,
    tmp_path: Path,
    redis_server: RedisServer,
    identity_templates: Templates,
    request: pytest.FixtureRequest,
) -> Any:
    postgres = None if database_url.startswith("sqlite") else request.getfixturevalue("postgres_server")
    url = await identity_templates.prepare(database_url, tmp_path, postgres)
    running = await start_identity(url, tmp_path, redis_url=redis_server.url)
    yield running, redis_server.url
    await running.stop()


async def test_nonces_are_kept_in_redis(identity_with_redis: tuple[Identity, str]) -> None:
    identity, url = identity_with_redis
    _, created = await _partner(identity, "redis@example.com", ["withdraw:write"])
    request = signed(created.api_key.api_key_id, created.secret)
    await identity.auth.VerifyRequestSignature(request)
    client = aioredis.from_url(url)
    try:
        ttl = await client.ttl(f"finmesh:auth:nonce:{created.api_key.api_key_id}:{request.nonce}")
    finally:
        await client.aclose()
    assert signatures.REPLAY_WINDOW_S < ttl <= signatures.REPLAY_WINDOW_S + 60
    replay = auth.VerifyRequestSignatureRequest()
    replay.CopyFrom(request)
    replay.request_id = rid("gw")
    assert await _failure(identity, replay, WRONG) == "SIGNATURE_FAILURE_NONCE_REUSED"


async def test_updates_and_support_revocation(identity: Identity) -> None:
    access, created = await _partner(identity, "update@example.com", ["wallet:read"])
    key_id, secret = created.api_key.api_key_id, created.secret
    rename = auth.UpdateApiKeyRequest(
        request_id=rid(),
        api_key=resources.ApiKey(api_key_id=key_id, display_name="renamed"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
    )
    assert (
        await identity.auth.UpdateApiKey(rename, metadata=bearer(access))
    ).api_key.display_name == "renamed"
    move = auth.UpdateApiKeyRequest(
        request_id=rid(),
        api_key=resources.ApiKey(api_key_id=key_id, allowed_ip_ranges=["198.51.100.0/24"]),
        update_mask=field_mask_pb2.FieldMask(paths=["allowed_ip_ranges"]),
    )
    await refused(identity.auth.UpdateApiKey(move, metadata=bearer(access)), DENIED, "STEP_UP_REQUIRED")
    scopes = auth.UpdateApiKeyRequest(
        request_id=rid(),
        api_key=resources.ApiKey(api_key_id=key_id, scopes=["withdraw:write"]),
        update_mask=field_mask_pb2.FieldMask(paths=["scopes"]),
    )
    await refused(
        identity.auth.UpdateApiKey(scopes, metadata=bearer(access)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    listed = await identity.auth.ListUserApiKeys(auth.ListUserApiKeysRequest(user_id=created.api_key.user_id))
    assert [key.display_name for key in listed.api_keys] == ["renamed"]
    revoke = auth.RevokeUserApiKeyRequest(
        request_id=rid(), user_id=created.api_key.user_id, api_key_id=key_id, note="reported leak"
    )
    revoked = await identity.auth.RevokeUserApiKey(revoke)
    assert revoked.api_key.state == resources.API_KEY_STATE_REVOKED
    request = signed(key_id, secret, scope="wallet:read")
    assert await _failure(identity, request, WRONG) == "SIGNATURE_FAILURE_KEY_NOT_ACTIVE"
    active = await identity.auth.ListApiKeys(
        auth.ListApiKeysRequest(states=[resources.API_KEY_STATE_ACTIVE]), metadata=bearer(access)
    )
    assert list(active.api_keys) == []
