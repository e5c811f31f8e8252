"""Signing keys through the gRPC contract: the JWKS document, rotation with overlap, revocation,
and the tokens refused: tampered, `alg: none`, signed by an unknown or revoked key, for a
frozen user; admin-only key management; private keys sealed at rest."""

from __future__ import annotations

import base64
import json
import time

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from finmesh.auth.v1 import auth_resources_pb2 as resources
from finmesh.auth.v1 import auth_service_pb2 as auth
from finmesh.events.v1 import auth_events_pb2
from finmesh.user.v1 import user_service_pb2 as user
from google.protobuf import duration_pb2, json_format
from sqlalchemy import select, update

from svc.auth import store
from svc.auth.keys import open_private
from tests.harness.identity import Identity, bearer, refused, rid

WRONG = grpc.StatusCode.UNAUTHENTICATED


def _introspect(identity: Identity, token: str) -> object:
    return identity.auth.IntrospectToken(auth.IntrospectTokenRequest(access_token=token))


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_jwks_is_a_standard_document(identity: Identity) -> None:
    jwks = await identity.auth.GetJwks(auth.GetJwksRequest())
    document = json.loads(json_format.MessageToJson(jwks))
    [key] = document["keys"]
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
    public = jwt.PyJWK(key).key
    await identity.register(email="jwks@example.com")
    token = (await identity.tokens("jwks@example.com")).access_token
    assert jwt.decode(token, public, algorithms=["ES256"], audience="finmesh")["iss"] == "finmesh-auth"


async def test_rotation_publishes_first_then_signs_and_keeps_the_old_key(identity: Identity) -> None:
    admin = await identity.admin_token()
    old_kid = _kid(admin)
    rotate = auth.RotateSigningKeyRequest(
        request_id=rid(), algorithm="EdDSA", activation_delay=duration_pb2.Duration(seconds=600)
    )
    rotated = await identity.auth.RotateSigningKey(rotate, metadata=bearer(admin))
    assert await identity.auth.RotateSigningKey(rotate, metadata=bearer(admin)) == rotated
    new_kid = rotated.signing_key.kid
    assert rotated.signing_key.state == resources.SIGNING_KEY_STATE_PENDING
    jwks = await identity.auth.GetJwks(auth.GetJwksRequest())
    assert {key.kid for key in jwks.keys} == {old_kid, new_kid}
    await identity.register(email="rotation@example.com")
    assert _kid((await identity.tokens("rotation@example.com")).access_token) == old_kid
    # The activation delay passes.
    async with identity.auth_app.database.transaction() as session:
        await session.execute(
            update(store.signing_keys)
            .where(store.signing_keys.c.kid == new_kid)
            .values(activate_time_us=time.time_ns() // 1000 - 1)
        )
    identity.ring.invalidate()
    fresh = (await identity.tokens("rotation@example.com")).access_token
    assert _kid(fresh) == new_kid
    assert jwt.get_unverified_header(fresh)["alg"] == "EdDSA"
    assert (await _introspect(identity, admin)).kid == old_kid  # type: ignore[attr-defined]
    listed = await identity.auth.ListSigningKeys(auth.ListSigningKeysRequest(), metadata=bearer(admin))
    states = {key.kid: key.state for key in listed.signing_keys}
    assert states == {
        new_kid: resources.SIGNING_KEY_STATE_ACTIVE,
        old_kid: resources.SIGNING_KEY_STATE_RETIRED,
    }
    rotated_events = await identity.events(identity.auth_app, auth_events_pb2.SigningKeyRotated)
    assert [(event.kid, event.previous_kid) for event in rotated_events] == [(new_kid, old_kid)]


async def test_a_revoked_key_leaves_the_jwks_and_its_tokens_are_refused(identity: Identity) -> None:
    admin = await identity.admin_token()
    old_kid = _kid(admin)
    revoke = auth.RevokeSigningKeyRequest(request_id=rid(), kid=old_kid, note="suspected leak")
    revoked = await identity.auth.RevokeSigningKey(revoke)
    assert revoked.signing_key.state == resources.SIGNING_KEY_STATE_REVOKED
    assert revoked.active_key.kid != old_kid
    jwks = await identity.auth.GetJwks(auth.GetJwksRequest())
    assert [key.kid for key in jwks.keys] == [revoked.active_key.kid]
    await refused(_introspect(identity, admin), WRONG, "UNAUTHENTICATED")  # type: ignore[arg-type]
    # The auth service's own methods refuse the token too.
    await refused(identity.auth.GetMe(auth.GetMeRequest(), metadata=bearer(admin)), WRONG, "UNAUTHENTICATED")
    fresh = await identity.admin_token()
    assert _kid(fresh) == revoked.active_key.kid
    missing = auth.RevokeSigningKeyRequest(request_id=rid(), kid="no-such-kid", note="n")
    await refused(identity.auth.RevokeSigningKey(missing), grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    again = auth.RevokeSigningKeyRequest(request_id=rid(), kid=old_kid, note="again")
    await refused(identity.auth.RevokeSigningKey(again), grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE")


async def test_forged_and_broken_tokens_are_refused(identity: Identity) -> None:
    registered = await identity.register(email="forged@example.com")
    token = (await identity.tokens("forged@example.com")).access_token
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["user", "admin"]
    escalated = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    tampered = f"{header}.{escalated}.{signature}"
    none_header = (
        base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": _kid(token)}).encode())
        .decode()
        .rstrip("=")
    )
    unsigned = f"{none_header}.{escalated}."
    stranger = jwt.encode(
        {**claims, "iat": int(time.time()), "exp": int(time.time()) + 60},
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": _kid(token)},
    )
    expired = jwt.encode({**claims, "exp": int(time.time()) - 120}, "x" * 32, algorithm="HS256")
    for bad in (tampered, unsigned, stranger, expired, "not.a.jwt"):
        await refused(_introspect(identity, bad), WRONG, "UNAUTHENTICATED")  # type: ignore[arg-type]
        await refused(
            identity.auth.GetMe(auth.GetMeRequest(), metadata=bearer(bad)), WRONG, "UNAUTHENTICATED"
        )
        await refused(
            identity.users.GetMyUser(user.GetMyUserRequest(), metadata=bearer(bad)), WRONG, "UNAUTHENTICATED"
        )
    await identity.users.FreezeUser(
        user.FreezeUserRequest(
            request_id=rid(), user_id=registered.user_id, reason=user.STATUS_REASON_SECURITY, note="takeover"
        )
    )
    await refused(_introspect(identity, token), grpc.StatusCode.PERMISSION_DENIED, "FROZEN")  # type: ignore[arg-type]


async def test_key_management_is_for_admins(identity: Identity) -> None:
    await identity.register(email="plain@example.com")
    token = (await identity.tokens("plain@example.com")).access_token
    denied = grpc.StatusCode.PERMISSION_DENIED
    rotate = auth.RotateSigningKeyRequest(request_id=rid())
    await refused(identity.auth.RotateSigningKey(rotate, metadata=bearer(token)), denied, "PERMISSION_DENIED")
    await refused(
        identity.auth.ListSigningKeys(auth.ListSigningKeysRequest(), metadata=bearer(token)),
        denied,
        "PERMISSION_DENIED",
    )
    short = auth.RotateSigningKeyRequest(request_id=rid(), activation_delay=duration_pb2.Duration(seconds=60))
    admin = await identity.admin_token()
    await refused(
        identity.auth.RotateSigningKey(short, metadata=bearer(admin)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    checked = await identity.auth.CheckPermission(
        auth.CheckPermissionRequest(
            user_id=(await identity.register(email="perm@example.com")).user_id,
            permission="auth.signing_keys.rotate",
        )
    )
    assert (checked.allowed, checked.denial_reason) == (False, "no role grants it")


async def test_private_keys_are_sealed_at_rest(identity: Identity) -> None:
    async with identity.auth_app.database.transaction() as session:
        rows = (
            await session.execute(select(store.signing_keys.c.kid, store.signing_keys.c.private_sealed))
        ).all()
    assert rows
    for kid, sealed in rows:
        assert b"\x30\x81" not in sealed[:40]  # not a bare PKCS#8 DER SEQUENCE
        assert isinstance(open_private(identity.ring.sealer, sealed, kid), ec.EllipticCurvePrivateKey)
