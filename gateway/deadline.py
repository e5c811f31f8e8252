"""Deadlines: the client's `grpc-timeout` header (gRPC's own syntax), else the route's default.

`grpc-timeout: 250m` asks for 250 ms; units H, M, S, m (ms), u (us), n (ns), at most 8 digits.
A deadline above the gateway's cap is lowered to it, never refused.
"""

from __future__ import annotations

import re

from svc.kit.errors import FieldViolation, InvalidArgument

HEADER = "grpc-timeout"
_TIMEOUT = re.compile(r"^([0-9]{1,8})([HMSmun])$")
_UNIT_S = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse(header: str | None, default_s: float, max_s: float) -> float:
    """Seconds the call may take."""
    if header is None:
        return min(default_s, max_s)
    found = _TIMEOUT.match(header.strip())
    if found is None:
        raise InvalidArgument([FieldViolation(HEADER, f"expected <1-8 digits><H|M|S|m|u|n>, got {header!r}")])
    seconds = int(found.group(1)) * _UNIT_S[found.group(2)]
    if seconds <= 0:
        raise InvalidArgument([FieldViolation(HEADER, "must be positive")])
    return min(seconds, max_s)
