"""The gateway: one handler for every route of the descriptor set, and the ASGI app around it.

Per request, in order: the route (404/405), the client IP's rate limit, the body (413), the
caller's identity (401), the user's and the route's rate limits (429), the request message (400),
the deadline, the upstream's breaker (503, or the stale response of a cacheable read), the gRPC
call, and its answer in JSON or its status mapped to HTTP.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import redis.asyncio
from google.rpc import status_pb2
from opentelemetry import propagate
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.types import Receive, Scope, Send

from gateway import codec, deadline, docs, errors, transcode
from gateway.auth import Authenticator, Identity, Presented
from gateway.breaker import FAILURE_CODES, BreakerPolicy, Breakers
from gateway.config import GatewaySettings
from gateway.descriptors import Contracts
from gateway.limiter import MemoryBuckets, RateLimiter, RedisBuckets, Refusal
from gateway.middleware import EdgeMiddleware
from gateway.router import Match, Router
from gateway.stale import StaleCache
from gateway.upstream import Upstreams
from svc.kit import catalog as catalog_module
from svc.kit.catalog import Catalog
from svc.kit.errors import DomainError, FieldViolation, InvalidArgument, Unauthenticated

log = logging.getLogger("finmesh.gateway")

HTTP_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
JSON_HEADERS = {"content-type": codec.CONTENT_TYPE}
CORS_HEADERS = [
    "authorization",
    "content-type",
    "grpc-timeout",
    "x-request-id",
    "x-finmesh-key",
    "x-finmesh-timestamp",
    "x-finmesh-nonce",
    "x-finmesh-signature",
]
CORS_EXPOSED = ["x-request-id", "retry-after", "x-finmesh-stale", "age", "warning"]


class UriTooLong(InvalidArgument):
    http_status = 414


class Gateway:
    """The transcoding handler and everything it consults."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        contracts: Contracts | None = None,
        catalog: Catalog | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.contracts = contracts or Contracts.load(settings.descriptor_set)
        self.router = Router(self.contracts.rpcs())
        self.upstreams = Upstreams(settings, catalog or catalog_module.default())
        self.services = {route.rpc.grpc_path: self.upstreams.service_of(route.rpc) for route in self.router}
        self.authenticator = Authenticator(self.upstreams, settings, clock)
        memory = MemoryBuckets(clock)
        self._redis = redis.asyncio.from_url(settings.redis_url) if settings.redis_url else None
        self.limiter = RateLimiter(RedisBuckets(self._redis, memory) if self._redis else memory, settings)
        self.breakers = Breakers(
            BreakerPolicy(
                failure_rate=settings.breaker_failure_rate,
                slow_call_s=settings.breaker_slow_call_s,
                slow_call_rate=settings.breaker_slow_call_rate,
                window_s=settings.breaker_window_s,
                minimum_calls=settings.breaker_minimum_calls,
                open_s=settings.breaker_open_s,
                half_open_calls=settings.breaker_half_open_calls,
            ),
            clock,
        )
        self.stale = StaleCache(settings.stale_entries_max, wall_clock)
        self._clock = clock
        self._trusted = [ipaddress.ip_network(proxy) for proxy in settings.trusted_proxies]

    async def close(self) -> None:
        await self.upstreams.close()
        if self._redis is not None:
            await self._redis.aclose()

    async def handle(self, request: Request) -> Response:
        try:
            return await self._handle(request)
        except DomainError as error:
            status = errors.from_domain_error(error)
            return self._error(status, getattr(error, "http_status", errors.http_status(error.code)))
        except grpc.aio.AioRpcError as error:  # from the auth service
            status = errors.from_rpc_error(error)
            return self._error(status, errors.http_status(error.code()))
        except Exception:
            # Never a stack trace to the client: the same opaque INTERNAL a service would send.
            log.exception("unhandled error", extra={"fields": {"path": request.url.path}})
            return self._error(errors.internal(), 500)

    async def _handle(self, request: Request) -> Response:
        scope = request.scope
        state = scope["state"]
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1").split("?", 1)[0]
        raw_query = scope.get("query_string", b"").decode("latin-1")
        if len(raw_path) + len(raw_query) > self.settings.max_url_bytes:
            raise UriTooLong([FieldViolation("url", f"longer than {self.settings.max_url_bytes} bytes")])
        match = self.router.match(request.method, raw_path)
        if match is None:
            allowed = self.router.allowed_methods(raw_path)
            if allowed:
                raise errors.MethodNotAllowed(
                    f"{request.method} is not served at {raw_path}; allowed: {', '.join(allowed)}"
                )
            raise errors.RouteNotFound(f"no route for {request.method} {raw_path}")
        rpc = match.route.rpc
        state["rpc"] = rpc.full_name
        client_ip = self._client_ip(request)
        state["client_ip"] = client_ip
        refusal = await self.limiter.check_ip(client_ip)
        if refusal is not None:
            return self._rate_limited(refusal)
        body = await self._body(request)
        policy = self.settings.policy(rpc.full_name)
        presented = Presented(
            request.method, raw_path, raw_query, body, client_ip, state["request_id"], policy.scope
        )
        identity = await self.authenticator.authenticate(request.headers, presented)
        if identity is None and not self.settings.is_public(rpc.full_name):
            raise Unauthenticated("this route needs a bearer access token or an API key signature")
        subject = identity.subject if identity else ""
        state["user"] = subject
        refusal = await self.limiter.check_caller(rpc.full_name, subject, client_ip)
        if refusal is not None:
            return self._rate_limited(refusal)
        message = transcode.request_message(
            match, request.query_params.multi_items(), body, self.contracts.pool
        )
        timeout_s = deadline.parse(
            request.headers.get(deadline.HEADER),
            policy.timeout_s or self.settings.default_timeout_s,
            self.settings.max_timeout_s,
        )
        url = raw_path + ("?" + raw_query if raw_query else "")
        return await self._call(match, message, timeout_s, identity, client_ip, state["request_id"], url)

    async def _call(
        self,
        match: Match,
        message: Any,
        timeout_s: float,
        identity: Identity | None,
        client_ip: str,
        request_id: str,
        url: str,
    ) -> Response:
        route = match.route
        rpc = route.rpc
        service = self.services[rpc.grpc_path]
        policy = self.settings.policy(rpc.full_name)
        cacheable = policy.cacheable and rpc.read_only
        caller = identity.subject if identity else ""
        breaker = self.breakers[service]
        if not breaker.acquire():
            entry = self.stale.get(rpc.full_name, url, caller) if cacheable else None
            if entry is not None:
                return Response(entry.body, 200, {**JSON_HEADERS, **self.stale.headers(entry)})
            retry_s = breaker.retry_after_s()
            error: DomainError
            if policy.core:
                error = errors.Unavailable(
                    f"{service} is failing; calls to it are suspended for up to {retry_s} s",
                    metadata={"service": service},
                )
            else:
                error = errors.FeatureDisabled(
                    f"{rpc.method.name} is switched off while {service} recovers; retry in {retry_s} s",
                    metadata={"service": service, "feature": rpc.full_name},
                )
            status = errors.from_domain_error(error)
            errors.retry_info(status, retry_s)
            return self._error(status, 503, {"retry-after": str(retry_s)})
        metadata: list[tuple[str, str]] = [("x-request-id", request_id), ("x-forwarded-for", client_ip)]
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the request's span (gateway/middleware.py) as the parent
        metadata.extend(carrier.items())
        if identity is not None:
            metadata.append(("authorization", f"Bearer {identity.token}"))
        started = self._clock()
        try:
            response = await self.upstreams.method(rpc)(message, timeout=timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as failure:
            code = failure.code()
            elapsed = self._clock() - started
            if code is grpc.StatusCode.DEADLINE_EXCEEDED and timeout_s < breaker.policy.slow_call_s:
                # The client's own short deadline says nothing about the upstream's health.
                breaker.release()
            else:
                breaker.record(elapsed, code in FAILURE_CODES)
            status = errors.from_rpc_error(failure)
            http_status = errors.http_status(code)
            headers = errors.retry_after(status) if http_status in (429, 503) else {}
            return self._error(status, http_status, headers)
        except BaseException:
            breaker.release()
            raise
        breaker.record(self._clock() - started, False)
        pool = self.contracts.pool
        if route.binding.response_body:
            content = codec.encode_field(response, route.binding.response_body, pool)
        else:
            content = codec.encode(response, pool)
        if cacheable:
            self.stale.store(rpc.full_name, url, caller, content)
        return Response(content, 200, JSON_HEADERS)

    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise errors.PayloadTooLarge(f"request body over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise errors.PayloadTooLarge(f"request body over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _client_ip(self, request: Request) -> str:
        peer = request.client.host if request.client else "0.0.0.0"
        forwarded = request.headers.get("x-forwarded-for")
        if not forwarded or not self._is_trusted(peer):
            return peer
        # The right-most address that is not one of our proxies is the client's.
        for hop in reversed([part.strip() for part in forwarded.split(",")]):
            if not self._is_trusted(hop):
                return hop if _is_ip(hop) else peer
        return peer

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def _rate_limited(self, refusal: Refusal) -> Response:
        status = errors.from_domain_error(
            errors.RateLimited(
                f"rate limit per {refusal.limit} exceeded; retry in {refusal.retry_after_s} s",
                metadata={"limit": refusal.limit},
            )
        )
        errors.retry_info(status, refusal.retry_after_s)
        return self._error(status, 429, {"retry-after": str(refusal.retry_after_s)})

    def _error(
        self, status: status_pb2.Status, http_status: int, headers: dict[str, str] | None = None
    ) -> Response:
        return Response(
            errors.body(status, self.contracts.pool), http_status, {**JSON_HEADERS, **(headers or {})}
        )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def create_app(settings: GatewaySettings, **options: Any) -> Starlette:
    """The ASGI app of the gateway; `options` go to Gateway (contracts, catalog, clocks)."""
    gateway = Gateway(settings, **options)
    document = settings.openapi_document.read_bytes()

    async def openapi(_request: Request) -> Response:
        return Response(document, 200, JSON_HEADERS)

    async def docs_page(_request: Request) -> Response:
        return HTMLResponse(docs.PAGE)

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "SERVING", "routes": len(gateway.router.routes)})

    async def edge_error(_request: Request, error: Exception) -> Response:
        """Starlette's own 404/405 (a page of the edge called with another method) as JSON."""
        status_code = error.status_code if isinstance(error, HTTPException) else 500
        failure: DomainError = (
            errors.MethodNotAllowed("only GET is served at this path")
            if status_code == 405
            else errors.RouteNotFound("no such page")
        )
        return gateway._error(errors.from_domain_error(failure), status_code)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.close()

    transcoded = request_response(gateway.handle)

    async def every_other_path(scope: Scope, receive: Receive, send: Send) -> None:
        # Not a catch-all Route: its `{path:path}` pattern cannot match a path holding a decoded
        # newline (%0A), which would then get Starlette's plain-text 404 instead of being routed.
        if scope["type"] == "http":
            await transcoded(scope, receive, send)
        else:
            await app.router.not_found(scope, receive, send)

    app = Starlette(
        routes=[
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/docs", docs_page, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: edge_error},
        middleware=[
            Middleware(EdgeMiddleware),
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=HTTP_METHODS,
                allow_headers=CORS_HEADERS,
                expose_headers=CORS_EXPOSED,
                max_age=600,
            ),
        ],
        lifespan=lifespan,
    )
    app.router.default = every_other_path
    app.state.gateway = gateway
    return app
