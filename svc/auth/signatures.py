"""HMAC-SHA256 signatures of partner requests over a canonical request.

The string a partner signs (and the gateway reconstructs from the request as received):

    METHOD "\n" PATH "\n" CANONICAL_QUERY "\n" HEX(SHA256(body)) "\n" TIMESTAMP "\n" NONCE

- METHOD: the HTTP method in upper case (`POST`);
- PATH: the request path exactly as sent, percent-encoded, without the query (`/v1/withdrawals`);
- CANONICAL_QUERY: the decoded query parameters sorted by name, then by value (code point
  order), then each name and value percent-encoded per RFC 3986 (unreserved characters
  `A-Za-z0-9-._~` kept, everything else `%XX` in upper-case hex, spaces as `%20`), joined as
  `name=value` with `&`; empty without a query (see `canonical_query`; the gateway's
  `gateway/auth.py` computes the same);
- HEX(SHA256(body)): lower-case hex SHA-256 of the raw body bytes (of b"" without a body);
- TIMESTAMP: the `X-Finmesh-Timestamp` header, Unix seconds, as sent;
- NONCE: the `X-Finmesh-Nonce` header, 16 to 64 characters of `[A-Za-z0-9_-]`.

The signature is lower-case hex HMAC-SHA256 keyed with the API-key secret (the `sk_...` string as
UTF-8 bytes), sent in `X-Finmesh-Signature`, with the key id in `X-Finmesh-Key`. The server
accepts a timestamp within REPLAY_WINDOW_S of its clock and each nonce once per key within that
window.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import quote

REPLAY_WINDOW_S = 300
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()


def canonical_query(parameters: Iterable[tuple[str, str]]) -> str:
    """The canonical form of decoded query parameters (name, value)."""
    pairs = sorted(parameters)
    return "&".join(f"{quote(name, safe='-._~')}={quote(value, safe='-._~')}" for name, value in pairs)


def string_to_sign(
    method: str, path: str, canonical_query: str, body_sha256: str, timestamp: str, nonce: str
) -> str:
    """The canonical request, as signed."""
    return "\n".join((method.upper(), path, canonical_query, body_sha256, timestamp, nonce))


def sign(secret: str, text: str) -> str:
    """Lower-case hex HMAC-SHA256 of `text` under the secret."""
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def signature_matches(secret: str, text: str, signature: str) -> bool:
    """Constant-time comparison of the expected and the presented signature."""
    return hmac.compare_digest(sign(secret, text), signature)


def timestamp_in_window(timestamp: str, now_s: float, window_s: int = REPLAY_WINDOW_S) -> bool:
    """Whether the sent Unix time is within the window of the server's clock, either side."""
    return abs(int(timestamp) - now_s) <= window_s
