"""Page tokens and page sizes of List methods (AIP-158), the same for every service.

A token is the position after the last item of a page, as URL-safe base64 of a small JSON
object; a token that is not one of ours is refused with INVALID_ARGUMENT naming `page_token`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from svc.kit import errors

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 1_000


def page_size(requested: int) -> int:
    """The contract's `page_size` (validated 0..1000): 0 means the default of 50."""
    assert 0 <= requested <= PAGE_SIZE_MAX, requested
    return requested or PAGE_SIZE_DEFAULT


def encode_token(position: dict[str, Any]) -> str:
    """An opaque page token for a position in a listing."""
    return base64.urlsafe_b64encode(json.dumps(position, sort_keys=True).encode()).decode()


def decode_token(token: str) -> dict[str, Any]:
    """The position of a page token ({} for no token); INVALID_ARGUMENT if it is not one of ours."""
    if not token:
        return {}
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
    except ValueError:
        position = None
    if not isinstance(position, dict) or not position:
        raise errors.InvalidArgument([errors.FieldViolation("page_token", "not a token from this listing")])
    return position


def position(token: str, *names: str) -> tuple[Any, ...] | None:
    """The (name, ...) values of a keyset page token, None for no token; INVALID_ARGUMENT for a
    token of another listing (other names)."""
    found = decode_token(token)
    if not found:
        return None
    if set(found) != set(names):
        raise errors.InvalidArgument([errors.FieldViolation("page_token", "not a token from this listing")])
    return tuple(found[name] for name in names)


def next_token(found: Sequence[Any], limit: int, *names: str) -> str:
    """The token after the last item of a page, read as `limit + 1` items: empty on the last page."""
    if len(found) <= limit:
        return ""
    last = found[limit - 1]
    return encode_token({name: getattr(last, name) for name in names})
