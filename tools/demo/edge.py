"""The REST edge as a client sees it: JSON calls with httpx, and a person who signs in with 2FA.

Everything here is the public contract at the gateway (`/v1/...` routes, proto3 JSON with
camelCase names, errors as google.rpc.Status bodies); nothing reaches a service any other way.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from svc.auth import totp
from svc.user.domain import user_id_for

PASSWORD = "correct horse battery staple"
TERMS_VERSION = "2024-06"
CALL_TIMEOUT_S = 60.0
POLL_S = 0.5


class EdgeError(Exception):
    """The edge answered an unexpected HTTP status; `status` and `body` say what it was."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        reason = ""
        if isinstance(body, dict):
            for detail in body.get("details", ()):
                reason = reason or str(detail.get("reason", ""))
        self.reason = reason
        super().__init__(f"{method} {path} answered {status}: {body}")


def rid(prefix: str) -> str:
    """A fresh request id (idempotency key) of the contract's form."""
    return f"{prefix}-{uuid.uuid4().hex}"


class Edge:
    """JSON over HTTP to the gateway."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=CALL_TIMEOUT_S)

    def close(self) -> None:
        self.http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str = "",
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        expect: int = 200,
    ) -> Any:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = self.http.request(method, path, json=body, params=params, headers=headers)
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = response.text
        if response.status_code != expect:
            raise EdgeError(method, path, response.status_code, answer)
        return answer

    def get(self, path: str, **options: Any) -> Any:
        return self.call("GET", path, **options)

    def post(self, path: str, body: Mapping[str, Any] | None = None, **options: Any) -> Any:
        return self.call("POST", path, body=body or {}, **options)


def wait_for(what: str, check: Callable[[], Any], *, timeout_s: float, interval_s: float = POLL_S) -> Any:
    """Calls `check` until it returns something truthy (returned), or raises TimeoutError."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")
        time.sleep(interval_s)


@dataclass
class Authenticator:
    """The phone app: TOTP codes of one secret, each time step used once (the auth service's
    replay rule), waiting for the next step when the window's steps are spent."""

    secret: bytes
    last_step: int = -1

    def code(self) -> str:
        step = max(self.last_step + 1, totp.time_step(time.time()) - totp.DRIFT_STEPS)
        while step > totp.time_step(time.time()) + totp.DRIFT_STEPS:
            time.sleep(0.5)
        self.last_step = step
        return totp.hotp(self.secret, step)


@dataclass
class Person:
    """Someone using the platform through the edge: registration, sign-in, 2FA, step-ups."""

    edge: Edge
    email: str
    registration_id: str = field(default_factory=lambda: rid("register"))
    password: str = PASSWORD
    authenticator: Authenticator | None = None
    access_token: str = ""
    refresh_token: str = ""
    recovery_codes: list[str] = field(default_factory=list)

    @property
    def user_id(self) -> str:
        """The id the registration creates (the user service derives it from the request id)."""
        return user_id_for(self.registration_id)

    def register(self, display_name: str) -> dict[str, Any]:
        answer = self.edge.post(
            "/v1/users",
            {
                "requestId": self.registration_id,
                "email": self.email,
                "password": self.password,
                "acceptedTermsVersion": TERMS_VERSION,
                "profile": {"displayName": display_name},
            },
        )
        user: dict[str, Any] = answer["user"]
        return user

    def login(self) -> dict[str, Any]:
        """Password sign-in: the token pair, or (with 2FA) completes the challenge with a code."""
        answer: dict[str, Any] = self.edge.post(
            "/v1/auth/login", {"requestId": rid("login"), "email": self.email, "password": self.password}
        )
        if "challenge" in answer:
            if self.authenticator is None:
                raise AssertionError(f"{self.email}: a 2FA challenge without an authenticator")
            answer = self.edge.post(
                "/v1/auth/login:complete",
                {
                    "requestId": rid("login-complete"),
                    "challengeToken": answer["challenge"]["challengeToken"],
                    "totpCode": self.authenticator.code(),
                },
            )
        tokens: dict[str, Any] = answer["tokens"]
        self.access_token = tokens["accessToken"]
        self.refresh_token = tokens.get("refreshToken", "")
        return answer

    def enable_totp(self) -> dict[str, Any]:
        """Enrolls TOTP and confirms it with a first code; returns the confirmation."""
        enrolled = self.edge.post(
            "/v1/auth/two_factor/totp:enroll",
            {"requestId": rid("enroll"), "currentPassword": self.password},
            token=self.access_token,
        )
        text = enrolled["secretBase32"]
        self.authenticator = Authenticator(base64.b32decode(text + "=" * (-len(text) % 8)))
        confirmed: dict[str, Any] = self.edge.post(
            "/v1/auth/two_factor/totp:confirm",
            {
                "requestId": rid("confirm"),
                "enrollmentId": enrolled["enrollmentId"],
                "totpCode": self.authenticator.code(),
            },
            token=self.access_token,
        )
        self.recovery_codes = list(confirmed.get("recoveryCodes", ()))
        return confirmed

    def step_up(self, purpose: str) -> str:
        """A step-up token for one sensitive action (`STEP_UP_PURPOSE_WITHDRAWAL`...)."""
        assert self.authenticator is not None, "2FA first"
        answer = self.edge.post(
            "/v1/auth/step_up:verify",
            {"requestId": rid("step-up"), "purpose": purpose, "totpCode": self.authenticator.code()},
            token=self.access_token,
        )
        return str(answer["stepUpToken"])

    def get(self, path: str, **options: Any) -> Any:
        return self.edge.get(path, token=self.access_token, **options)

    def post(self, path: str, body: Mapping[str, Any] | None = None, **options: Any) -> Any:
        return self.edge.post(path, body, token=self.access_token, **options)
