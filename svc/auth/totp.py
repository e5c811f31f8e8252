"""One-time passwords: HOTP (RFC 4226) and TOTP (RFC 6238), with the replay rule of RFC 6238
section 5.2 (a code's time step is accepted at most once).

Codes are compared in constant time. The verifier accepts the current step and one step either
side (clock drift of a phone), and only steps after the last one accepted for the user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from urllib.parse import quote, urlencode

DIGITS = 6
STEP_S = 30
SECRET_BYTES = 20  # 160 bits, the size RFC 4226 recommends for HMAC-SHA1
DRIFT_STEPS = 1
ISSUER = "finmesh"
ALGORITHMS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}


def hotp(secret: bytes, counter: int, *, digits: int = DIGITS, algorithm: str = "SHA1") -> str:
    """The HOTP value of a counter (RFC 4226 section 5.3: dynamic truncation, then modulo)."""
    digest = hmac.new(secret, struct.pack(">Q", counter), ALGORITHMS[algorithm]).digest()
    offset = digest[-1] & 0x0F
    binary = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFF_FFFF
    return str(binary % 10**digits).zfill(digits)


def time_step(unix_s: float, *, step_s: int = STEP_S) -> int:
    """The RFC 6238 counter T = floor((now - T0) / X) with T0 = 0."""
    return int(unix_s // step_s)


def totp(secret: bytes, unix_s: float, *, digits: int = DIGITS, algorithm: str = "SHA1") -> str:
    """The TOTP code at a time."""
    return hotp(secret, time_step(unix_s), digits=digits, algorithm=algorithm)


def matching_step(secret: bytes, code: str, unix_s: float, *, last_used_step: int) -> int | None:
    """The time step whose code is `code`, within the drift window and after `last_used_step`.

    Every candidate is computed and compared, matched or not, so the time taken does not depend
    on which one matched.
    """
    current = time_step(unix_s)
    found: int | None = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(hotp(secret, step), code) and step > last_used_step and found is None:
            found = step
    return found


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def base32(secret: bytes) -> str:
    """Base32 without padding, as authenticator apps expect."""
    return base64.b32encode(secret).decode().rstrip("=")


def otpauth_uri(secret: bytes, account: str) -> str:
    """The Key Uri Format of authenticator apps (`otpauth://totp/issuer:account?...`)."""
    label = quote(f"{ISSUER}:{account}")
    query = urlencode(
        {"secret": base32(secret), "issuer": ISSUER, "algorithm": "SHA1", "digits": DIGITS, "period": STEP_S}
    )
    return f"otpauth://totp/{label}?{query}"
