"""Authentication at the edge against the real auth service: users registered at the user service
and logged in at auth through the gateway, their JWTs verified against auth's JWKS (fetched over
gRPC, cached, refreshed on an unknown kid, following a key rotation and revocation made through
the gateway's admin routes), partner API keys created at auth and verified by its
VerifyRequestSignature, and the verified identity forwarded so that the services themselves see
who is calling.

Only the tokens auth would never issue come from the stand-in issuer (tests/gateway/issuer.py):
expired or for another audience or issuer (signed with auth's own key, taken from its ring),
tampered, `alg: none`, and signed by a key auth does not hold."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from gateway.auth import string_to_sign
from gateway.config import RoutePolicy
from svc.auth import totp
from svc.kit.identity import JWT_LEEWAY_S
from tests.gateway.conftest import Edge, ManualClock, Mesh, gateway_settings, serve_gateway, start_mesh
from tests.gateway.issuer import SigningKey
from tests.harness.identity import ADMIN_EMAIL, ADMIN_REGISTRATION, PASSWORD, base32_decode

LIST_MINE = "/v1/users/me/accounts"
ME = "/v1/auth/me"
READ_SCOPE = "account:read"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def fresh_edge(mesh: Mesh, clock: ManualClock) -> AsyncIterator[Edge]:
    """A gateway of its own on a manual clock, so that its JWKS cache starts empty."""
    settings = gateway_settings(
        mesh, routes={"finmesh.account.v1.AccountService.ListAccounts": RoutePolicy(scope=READ_SCOPE)}
    )
    async with serve_gateway(settings, clock=clock) as running:
        yield running


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def _rid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


async def test_the_jwks_is_auths_and_public(mesh: Mesh, edge: Edge) -> None:
    response = await edge.http.get("/v1/auth/jwks")
    assert response.status_code == 200, response.text
    keys = response.json()["keys"]
    loaded = mesh.identity.ring.loaded
    assert loaded is not None
    assert [key["kid"] for key in keys] == [key["kid"] for key in loaded.published]
    assert keys[0]["kty"] == "EC" and keys[0]["crv"] == "P-256"


async def test_a_user_registered_and_logged_in_through_the_edge_is_who_the_services_see(
    mesh: Mesh, edge: Edge
) -> None:
    user_id, email = await mesh.register(edge.http)
    token = await mesh.login(edge.http, email)
    assert _kid(token) in {key.kid for key in mesh.issuer.keys}  # signed by auth's active key
    me = await edge.http.get(ME, headers=_bearer(token))
    assert me.status_code == 200, me.text
    assert json.dumps(me.json()).count(user_id) >= 1
    account = await mesh.open_account(user_id)
    mine = await edge.http.get(LIST_MINE, headers=_bearer(token))
    assert mine.status_code == 200, mine.text
    # `me` resolved by the account service to the token's subject: the identity was forwarded.
    assert [item["accountId"] for item in mine.json()["accounts"]] == [account.account_id]
    wrong_password = await edge.http.post(
        "/v1/auth/login", json={"requestId": _rid("login"), "email": email, "password": "not " + PASSWORD}
    )
    assert wrong_password.status_code == 401, wrong_password.text


async def test_tokens_auth_would_never_issue_are_401(mesh: Mesh, edge: Edge) -> None:
    user_id, _ = await mesh.register(edge.http)
    genuine = mesh.issuer.token(user_id)
    header, payload, signature = genuine.split(".")
    unsigned_header = base64.urlsafe_b64encode(
        json.dumps({"alg": "none", "typ": "JWT", "kid": _kid(genuine)}).encode()
    ).rstrip(b"=")
    cases = {
        "expired": mesh.issuer.token(user_id, lifetime_s=-60 - JWT_LEEWAY_S),
        "audience": mesh.issuer.token(user_id, aud="someone-else"),
        "issuer": mesh.issuer.token(user_id, iss="not-auth"),
        "tampered": f"{header}.{payload[:-3]}AAA.{signature}",
        "alg none": f"{unsigned_header.decode()}.{payload}.",
        "wrong key": mesh.issuer.token(user_id, key=SigningKey(_kid(genuine), SigningKey.new().private)),
        "unknown key": mesh.issuer.token(user_id, key=SigningKey.new()),
        "not a JWT": "not-a-token",
    }
    assert (await edge.http.get(ME, headers=_bearer(genuine))).status_code == 200
    for name, token in cases.items():
        response = await edge.http.get(ME, headers=_bearer(token))
        assert response.status_code == 401, (name, response.text)
        assert json.loads(response.text)["details"][0]["reason"] == "UNAUTHENTICATED", name


async def test_jwks_is_cached_and_refreshed_at_most_every_few_seconds_on_an_unknown_kid(
    mesh: Mesh, fresh_edge: Edge
) -> None:
    _, headers = await mesh.signed_in(fresh_edge.http)
    for _ in range(3):
        response = await fresh_edge.http.get(ME, headers=headers)
        assert response.status_code == 200, response.text
    jwks = fresh_edge.gateway.authenticator.jwks
    assert jwks.fetches == 1
    # A key nobody publishes: refused, and within the refresh interval auth is not asked again.
    stranger = SigningKey.new()
    for _ in range(2):
        forged = mesh.issuer.token("u-1", key=stranger)
        response = await fresh_edge.http.get(ME, headers=_bearer(forged))
        assert response.status_code == 401
        assert "does not publish" in response.text
    assert jwks.fetches == 1  # the refresh interval (5 s) had not passed since the first fetch


async def test_a_verified_token_is_served_from_the_cache_until_it_expires(
    mesh: Mesh, fresh_edge: Edge
) -> None:
    user_id, _ = await mesh.register(fresh_edge.http)
    verified = fresh_edge.gateway.authenticator.verified
    # Auth's tokens live for minutes: a one-second token is the stand-in's, with auth's key.
    token = mesh.issuer.token(user_id, lifetime_s=1)
    for _ in range(3):
        response = await fresh_edge.http.get(LIST_MINE, headers=_bearer(token))
        assert response.status_code == 200, response.text
    assert len(verified) == 1
    # One byte changed is another token: verified afresh, and refused.
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    response = await fresh_edge.http.get(LIST_MINE, headers=_bearer(tampered))
    assert response.status_code == 401
    await asyncio.sleep(1.2 + JWT_LEEWAY_S)  # past exp, and past the verifier's leeway
    response = await fresh_edge.http.get(LIST_MINE, headers=_bearer(token))
    assert response.status_code == 401, "an expired token must not outlive its exp in the cache"
    assert len(verified) == 0


@pytest.fixture
async def rotating_mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    """A mesh of its own: the test rotates and revokes auth's signing keys."""
    running = await start_mesh(tmp_path)
    yield running
    await running.stop()


async def test_the_edge_follows_auths_key_rotation_and_revocation(rotating_mesh: Mesh) -> None:
    mesh = rotating_mesh
    clock = ManualClock()
    async with serve_gateway(gateway_settings(mesh), clock=clock) as edge:
        jwks = edge.gateway.authenticator.jwks
        _, email = await mesh.register(edge.http)
        old_token = await mesh.login(edge.http, email)
        assert (await edge.http.get(ME, headers=_bearer(old_token))).status_code == 200
        assert jwks.fetches == 1
        old_kid = _kid(old_token)
        await mesh.register(edge.http, email=ADMIN_EMAIL, request_id=ADMIN_REGISTRATION)
        admin = _bearer(await mesh.login(edge.http, ADMIN_EMAIL))
        # An admin rotates through the edge: the new key is published at once, pending.
        rotated = await edge.http.post(
            "/v1/admin/auth/signing_keys:rotate",
            json={"requestId": _rid("rotate"), "activationDelay": "600s"},
            headers=admin,
        )
        assert rotated.status_code == 200, rotated.text
        new_kid = rotated.json()["signingKey"]["kid"]
        published = (await edge.http.get("/v1/auth/jwks")).json()["keys"]
        assert {key["kid"] for key in published} == {old_kid, new_kid}
        # Revoking the signing key makes the pending one sign at once.
        revoked = await edge.http.post(
            f"/v1/admin/auth/signing_keys/{old_kid}:revoke",
            json={"requestId": _rid("revoke"), "note": "rotation drill"},
            headers=admin,
        )
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["activeKey"]["kid"] == new_kid
        new_token = await mesh.login(edge.http, email)
        assert _kid(new_token) == new_kid
        # Unknown to the gateway's cached JWKS: refreshed at once (past the 5 s between refreshes,
        # well within the 600 s cache), and accepted.
        clock.advance(6)
        followed = await edge.http.get(ME, headers=_bearer(new_token))
        assert followed.status_code == 200, followed.text
        assert jwks.fetches == 2
        # The old token was verified and cached, but its key has left the JWKS: refused.
        refused = await edge.http.get(ME, headers=_bearer(old_token))
        assert refused.status_code == 401, refused.text
        assert "does not publish" in refused.text
        # And once the cache expires the document is fetched again.
        clock.advance(601)
        assert (await edge.http.get(ME, headers=_bearer(new_token))).status_code == 200
        assert jwks.fetches == 3


async def _partner_key(mesh: Mesh, http_edge: Edge, scopes: list[str]) -> tuple[str, str, str]:
    """A user with TOTP and an API key created at auth through the edge: (user id, key id, secret)."""
    http = http_edge.http
    user_id, headers = await mesh.signed_in(http)
    enrolled = await http.post(
        "/v1/auth/two_factor/totp:enroll",
        json={"requestId": _rid("enroll"), "currentPassword": PASSWORD},
        headers=headers,
    )
    assert enrolled.status_code == 200, enrolled.text
    secret = base32_decode(enrolled.json()["secretBase32"])
    confirmed = await http.post(
        "/v1/auth/two_factor/totp:confirm",
        json={
            "requestId": _rid("confirm"),
            "enrollmentId": enrolled.json()["enrollmentId"],
            "totpCode": totp.totp(secret, time.time()),
        },
        headers=headers,
    )
    assert confirmed.status_code == 200, confirmed.text
    step_up = await http.post(
        "/v1/auth/step_up:verify",
        json={
            "requestId": _rid("step-up"),
            "purpose": "STEP_UP_PURPOSE_API_KEY_CREATE",
            "totpCode": totp.totp(secret, time.time() + 30),  # the next step: each code is used once
        },
        headers=headers,
    )
    assert step_up.status_code == 200, step_up.text
    created = await http.post(
        "/v1/auth/api_keys",
        json={
            "requestId": _rid("api-key"),
            "displayName": "treasury bot",
            "scopes": scopes,
            "allowedIpRanges": ["127.0.0.0/8"],  # the gateway's peer here, as auth sees the client
            "expireTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30 * 86400)),
            "stepUpToken": step_up.json()["stepUpToken"],
        },
        headers=headers,
    )
    assert created.status_code == 200, created.text
    return user_id, created.json()["apiKey"]["apiKeyId"], created.json()["secret"]


def _signed(key_id: str, secret: str, method: str, path: str, query: str, body: bytes) -> dict[str, str]:
    """A partner's headers: HMAC-SHA256 under the secret over the string to sign."""
    stamp, nonce = str(int(time.time())), uuid.uuid4().hex
    text = string_to_sign(method, path, query, body, stamp, nonce)
    return {
        "X-Finmesh-Key": key_id,
        "X-Finmesh-Timestamp": stamp,
        "X-Finmesh-Nonce": nonce,
        "X-Finmesh-Signature": hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest(),
    }


async def test_api_key_signature_verified_by_auth_and_identity_forwarded(
    mesh: Mesh, fresh_edge: Edge
) -> None:
    user_id, key_id, secret = await _partner_key(mesh, fresh_edge, [READ_SCOPE])
    account = await mesh.open_account(user_id)
    query = "pageSize=10&pageToken="
    headers = _signed(key_id, secret, "GET", LIST_MINE, query, b"")
    response = await fresh_edge.http.get(f"{LIST_MINE}?{query}", headers=headers)
    assert response.status_code == 200, response.text
    # `me` resolved by the account service to the key's owner: the token auth returned named them.
    assert [item["accountId"] for item in response.json()["accounts"]] == [account.account_id]
    replay = await fresh_edge.http.get(f"{LIST_MINE}?{query}", headers=headers)
    assert replay.status_code == 401
    assert replay.json()["details"][0]["metadata"]["failure"] == "SIGNATURE_FAILURE_NONCE_REUSED"
    tampered = _signed(key_id, secret, "GET", LIST_MINE, "pageSize=11", b"")
    wrong = await fresh_edge.http.get(f"{LIST_MINE}?pageSize=10", headers=tampered)
    assert wrong.status_code == 401
    assert wrong.json()["details"][0]["metadata"]["failure"] == "SIGNATURE_FAILURE_BAD_SIGNATURE"
    unknown = _signed("ak_" + "0" * 24, secret, "GET", LIST_MINE, "", b"")
    assert (await fresh_edge.http.get(LIST_MINE, headers=unknown)).status_code == 401


async def test_api_key_without_the_route_scope_is_403(mesh: Mesh, fresh_edge: Edge) -> None:
    _, key_id, secret = await _partner_key(mesh, fresh_edge, ["wallet:read"])
    response = await fresh_edge.http.get(
        LIST_MINE, headers=_signed(key_id, secret, "GET", LIST_MINE, "", b"")
    )
    assert response.status_code == 403, response.text
    assert response.json()["details"][0]["metadata"]["failure"] == "SIGNATURE_FAILURE_SCOPE_NOT_GRANTED"


async def test_incomplete_or_doubled_credentials_are_401(mesh: Mesh, edge: Edge) -> None:
    _, headers = await mesh.signed_in(edge.http)
    partial = {"X-Finmesh-Key": "ak_" + "0" * 24}
    response = await edge.http.get(LIST_MINE, headers=partial)
    assert response.status_code == 401
    assert "x-finmesh-signature" in response.text
    both = {**_signed("ak_" + "0" * 24, "sk_x", "GET", LIST_MINE, "", b""), **headers}
    assert (await edge.http.get(LIST_MINE, headers=both)).status_code == 401


async def test_without_auth_and_keys_tokens_cannot_be_verified(mesh: Mesh, edge: Edge) -> None:
    _, headers = await mesh.signed_in(edge.http)
    settings = gateway_settings(mesh).model_copy(
        update={"endpoints": {**mesh.endpoints, "auth": "127.0.0.1:1"}}
    )
    async with serve_gateway(settings) as cut_off:
        response = await cut_off.http.get(LIST_MINE, headers=headers)
    assert response.status_code == 503, response.text
    assert "JWKS is unavailable" in response.text
