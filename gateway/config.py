"""The gateway's settings: the kit's (FINMESH_* variables) plus the edge's own, read once at start.

Route policies override defaults per RPC, keyed by the RPC's full name, as JSON in
FINMESH_ROUTES, for example:

    {"finmesh.auth.v1.AuthService.Login": {"rate_per_s": 5, "burst": 10, "timeout_s": 5},
     "finmesh.account.v1.AccountService.GetAccountBalance": {"cacheable": true}}
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gateway.descriptors import DESCRIPTOR_SET, OPENAPI_DOCUMENT
from svc.kit.config import KitSettings

GATEWAY_PORT = 8080
# Contract comments call these "Unauthenticated route" or "Public".
PUBLIC_RPCS = (
    "finmesh.auth.v1.AuthService.Login",
    "finmesh.auth.v1.AuthService.CompleteLogin",
    "finmesh.auth.v1.AuthService.RefreshToken",
    "finmesh.auth.v1.AuthService.GetJwks",
    "finmesh.auth.v1.AuthService.RequestPasswordReset",
    "finmesh.auth.v1.AuthService.ResetPassword",
    "finmesh.user.v1.UserService.RegisterUser",
)


class RoutePolicy(BaseModel):
    """What one RPC's routes do differently from the defaults; unset fields keep the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Requests per second per caller (user, or IP for anonymous calls) on this route, and burst.
    rate_per_s: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, gt=0)
    # Deadline when the client sends none, and the most a client may ask for.
    timeout_s: float | None = Field(default=None, gt=0, le=300)
    # Read routes only: while the upstream's breaker is open, serve the caller's last good response.
    cacheable: bool = False
    # Non-core routes answer 503 FEATURE_DISABLED while the upstream's breaker is open.
    core: bool = True
    public: bool | None = None
    # Scope an API key must hold (`withdraw:write`); empty: authentication alone.
    scope: str = Field(default="", pattern=r"^([a-z][a-z_]{0,31}:(read|write))?$")


class GatewaySettings(KitSettings):
    """Settings of the REST edge; `port` is the HTTP port (0 means GATEWAY_PORT)."""

    descriptor_set: Path = DESCRIPTOR_SET
    openapi_document: Path = OPENAPI_DOCUMENT
    # The catalog service whose AuthService serves the JWKS and verifies API-key signatures.
    auth_service: str = "auth"
    # Deadline of the gateway's own calls to auth (the JWKS, API-key signatures).
    auth_timeout_s: float = Field(default=2.0, gt=0, le=60)
    jwks_cache_s: float = Field(default=600.0, gt=0)
    # An unknown `kid` refreshes the JWKS at most this often, so bad tokens cannot flood auth.
    jwks_refresh_min_s: float = Field(default=5.0, ge=0)
    public_rpcs: tuple[str, ...] = PUBLIC_RPCS
    routes: dict[str, RoutePolicy] = Field(default_factory=dict)
    # Rate limits (architecture document, section 7): per user, per client IP.
    user_rate_per_s: float = Field(default=100.0, gt=0)
    user_burst: int = Field(default=100, gt=0)
    ip_rate_per_s: float = Field(default=1000.0, gt=0)
    ip_burst: int = Field(default=1000, gt=0)
    # Empty: token buckets in this process (one replica); else shared by every replica.
    redis_url: str = ""
    # Proxies whose X-Forwarded-For is trusted for the client IP (the Istio ingress gateway).
    trusted_proxies: tuple[str, ...] = ()
    # Circuit breakers, per upstream service.
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_slow_call_s: float = Field(default=5.0, gt=0)
    breaker_slow_call_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_window_s: float = Field(default=10.0, gt=0)
    breaker_minimum_calls: int = Field(default=20, gt=0)
    breaker_open_s: float = Field(default=30.0, gt=0)
    breaker_half_open_calls: int = Field(default=3, gt=0)
    stale_entries_max: int = Field(default=10_000, ge=0)
    # Deadlines: used when neither the client nor the route policy sets one; and the cap.
    default_timeout_s: float = Field(default=10.0, gt=0)
    max_timeout_s: float = Field(default=60.0, gt=0)
    max_body_bytes: int = Field(default=1 << 20, gt=0)
    max_url_bytes: int = Field(default=2048, gt=0)
    cors_origins: tuple[str, ...] = ()

    def policy(self, rpc: str) -> RoutePolicy:
        return self.routes.get(rpc) or RoutePolicy()

    def is_public(self, rpc: str) -> bool:
        explicit = self.policy(rpc).public
        return explicit if explicit is not None else rpc in self.public_rpcs

    @property
    def http_port(self) -> int:
        return self.port or GATEWAY_PORT
