"""Authentication at the edge: end-user JWTs and partner API keys with HMAC request signatures.

JWTs (`Authorization: Bearer ...`) are verified here against the auth service's JWKS document
(`AuthService.GetJwks` over gRPC), with the same rules as the service kit (svc.kit.identity:
ES256/EdDSA, issuer, audience, sub/exp/iat). The document is cached for `jwks_cache_s`; a token
with an unknown `kid` refreshes it at once (a key just rotated in), at most every
`jwks_refresh_min_s`. If auth cannot be reached the cached keys go on verifying.

API-key requests (`X-Finmesh-Key`, `-Timestamp`, `-Nonce`, `-Signature`) are verified by
`AuthService.VerifyRequestSignature`, which holds the secrets; the gateway computes the canonical
query and the body hash the signature covers, and forwards the short-lived token auth returns.

Either way the services receive the verified identity as the kit's `authorization: Bearer`
metadata and verify it again themselves, trusting it only over the gateway's mTLS channel.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

import grpc
import jwt
from finmesh.auth.v1 import auth_service_pb2
from google.protobuf import json_format

from gateway.config import GatewaySettings
from gateway.upstream import Upstreams
from svc.kit.context import EndUser
from svc.kit.errors import DependencyUnavailable, Unauthenticated
from svc.kit.identity import TokenVerifier

GET_JWKS = "/finmesh.auth.v1.AuthService/GetJwks"
VERIFY_SIGNATURE = "/finmesh.auth.v1.AuthService/VerifyRequestSignature"
API_KEY_HEADERS = ("x-finmesh-key", "x-finmesh-timestamp", "x-finmesh-nonce", "x-finmesh-signature")
TOKEN_CHARS_MAX = 8192
# Tokens already verified, kept until they expire (an ECDSA verification is most of the edge's
# CPU per request). Bounded: the oldest entries go first.
VERIFIED_TOKENS_MAX = 10_000


@dataclass(frozen=True)
class Identity:
    """Who a request is from, as forwarded to services."""

    subject: str
    token: str
    kind: str  # "jwt" or "api_key"
    user: EndUser | None = None


@dataclass(frozen=True)
class Presented:
    """What a signature covers and auth checks besides it, as the gateway received it."""

    method: str
    raw_path: str
    raw_query: str
    body: bytes
    client_ip: str
    request_id: str
    scope: str  # the route's required API-key scope, or ""


class Jwks:
    """The auth service's signing keys by `kid`, fetched over gRPC and cached."""

    def __init__(self, upstreams: Upstreams, settings: GatewaySettings, clock: Callable[[], float]) -> None:
        self._upstreams = upstreams
        self._settings = settings
        self._clock = clock
        self._keys: dict[str, TokenVerifier] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def verifier(self, kid: str) -> TokenVerifier | None:
        """The verifier of `kid`, refreshing the document when it is old or does not know the kid."""
        now = self._clock()
        expired = self._fetched_at is None or now - self._fetched_at >= self._settings.jwks_cache_s
        unknown = kid not in self._keys and (
            self._fetched_at is None or now - self._fetched_at >= self._settings.jwks_refresh_min_s
        )
        if expired or unknown:
            await self._refresh(now)
        return self._keys.get(kid)

    async def _refresh(self, started: float) -> None:
        async with self._lock:
            if self._fetched_at is not None and self._fetched_at >= started:
                return  # another request refreshed it while this one waited
            try:
                response = await self._upstreams.channel(self._settings.auth_service).unary_unary(
                    GET_JWKS,
                    request_serializer=auth_service_pb2.GetJwksRequest.SerializeToString,
                    response_deserializer=auth_service_pb2.GetJwksResponse.FromString,
                )(auth_service_pb2.GetJwksRequest(), timeout=self._settings.auth_timeout_s)
            except grpc.aio.AioRpcError as error:
                if not self._keys:
                    raise DependencyUnavailable(
                        "cannot verify access tokens: the auth service's JWKS is unavailable "
                        f"({error.code().name})"
                    ) from None
                return  # keep verifying with the keys we have
            self._keys = {key.kid: self._verifier(key) for key in response.keys if key.kid}
            self._fetched_at = self._clock()
            self.fetches += 1

    def _verifier(self, key: Any) -> TokenVerifier:
        jwk = jwt.PyJWK(json_format.MessageToDict(key, preserving_proto_field_name=True))
        return TokenVerifier(
            [jwk.key], issuer=self._settings.jwt_issuer, audience=self._settings.jwt_audience
        )


@dataclass(frozen=True)
class _Verified:
    user: EndUser
    kid: str
    expires_at: float  # the token's `exp`, seconds since the epoch


class VerifiedTokens:
    """Access tokens whose signature and claims were verified, until their `exp`.

    A hit is only as good as a fresh verification: the entry is dropped once the token expires
    (no leeway, stricter than the verifier) or once its key is no longer published in the JWKS.
    The token itself is the key, so a token differing in any byte is verified afresh.
    """

    def __init__(
        self, wall_clock: Callable[[], float] = time.time, size_max: int = VERIFIED_TOKENS_MAX
    ) -> None:
        self._entries: OrderedDict[str, _Verified] = OrderedDict()
        self._wall_clock = wall_clock
        self._size_max = size_max

    def get(self, token: str) -> _Verified | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry.expires_at <= self._wall_clock():
            del self._entries[token]
            return None
        return entry

    def put(self, token: str, user: EndUser, kid: str) -> None:
        expires_at = float(jwt.decode(token, options={"verify_signature": False})["exp"])
        self._entries[token] = _Verified(user, kid, expires_at)
        while len(self._entries) > self._size_max:
            self._entries.popitem(last=False)

    def drop(self, token: str) -> None:
        self._entries.pop(token, None)

    def __len__(self) -> int:
        return len(self._entries)


class Authenticator:
    def __init__(self, upstreams: Upstreams, settings: GatewaySettings, clock: Callable[[], float]) -> None:
        self.jwks = Jwks(upstreams, settings, clock)
        self.verified = VerifiedTokens()
        self._upstreams = upstreams
        self._settings = settings

    async def authenticate(self, headers: Mapping[str, str], request: Presented) -> Identity | None:
        """The caller's verified identity, None without credentials; Unauthenticated if they are bad."""
        authorization = headers.get("authorization")
        has_key = "x-finmesh-key" in headers
        if authorization is not None and has_key:
            raise Unauthenticated("send either a bearer token or an API key signature, not both")
        if authorization is not None:
            return await self._bearer(authorization)
        if has_key:
            return await self._signed(headers, request)
        return None

    async def _bearer(self, authorization: str) -> Identity:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the Authorization header must be 'Bearer <access token>'")
        if len(token) > TOKEN_CHARS_MAX:
            raise Unauthenticated("invalid access token: too long")
        cached = self.verified.get(token)
        if cached is not None:
            if await self.jwks.verifier(cached.kid) is not None:
                return Identity(subject=cached.user.subject, token=token, kind="jwt", user=cached.user)
            self.verified.drop(token)  # its key was rotated out: refused below, as any such token
        try:
            kid = str(jwt.get_unverified_header(token).get("kid", ""))
        except jwt.PyJWTError as error:
            raise Unauthenticated(f"invalid access token: {error}") from None
        if not kid:
            raise Unauthenticated("invalid access token: no key id (kid) in its header")
        verifier = await self.jwks.verifier(kid)
        if verifier is None:
            raise Unauthenticated("invalid access token: signed by a key the auth service does not publish")
        user = verifier.verify(token)
        self.verified.put(token, user, kid)
        return Identity(subject=user.subject, token=token, kind="jwt", user=user)

    async def _signed(self, headers: Mapping[str, str], presented: Presented) -> Identity:
        missing = [name for name in API_KEY_HEADERS if not headers.get(name)]
        if missing:
            raise Unauthenticated(
                f"API key requests need the headers {', '.join(API_KEY_HEADERS)}; "
                f"missing {', '.join(missing)}"
            )
        request = auth_service_pb2.VerifyRequestSignatureRequest(
            request_id=presented.request_id,
            api_key_id=headers["x-finmesh-key"],
            timestamp=headers["x-finmesh-timestamp"],
            nonce=headers["x-finmesh-nonce"],
            signature=headers["x-finmesh-signature"],
            method=presented.method.upper(),
            path=presented.raw_path,
            canonical_query=canonical_query(presented.raw_query),
            body_sha256=hashlib.sha256(presented.body).hexdigest(),
            client_ip=presented.client_ip,
            required_scope=presented.scope,
        )
        response = await self._upstreams.channel(self._settings.auth_service).unary_unary(
            VERIFY_SIGNATURE,
            request_serializer=auth_service_pb2.VerifyRequestSignatureRequest.SerializeToString,
            response_deserializer=auth_service_pb2.VerifyRequestSignatureResponse.FromString,
        )(request, timeout=self._settings.auth_timeout_s)
        return Identity(subject=response.principal.user_id, token=response.access_token, kind="api_key")


def canonical_query(raw_query: str) -> str:
    """Parameters sorted by name then value, each percent-encoded per RFC 3986, joined with '&'."""
    pairs = sorted(parse_qsl(raw_query, keep_blank_values=True))
    return "&".join(f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}" for name, value in pairs)


def string_to_sign(method: str, path: str, raw_query: str, body: bytes, timestamp: str, nonce: str) -> str:
    """What a partner signs (the contract of VerifyRequestSignature); for SDKs and tests."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((method.upper(), path, canonical_query(raw_query), digest, timestamp, nonce))
