"""Path templates compiled to matchers: `/v1/{name=shelves/*/books/**}:verb` against a request path.

The template syntax is parsed by tools.gen.http_rules, the parser the OpenAPI generator uses, so
the gateway and the published document agree on every path. Matching follows grpc-gateway's
runtime/pattern.go: literals compare exactly, `*` takes one non-empty segment, `**` takes the rest
(zero or more segments, only last), a variable binds what its segments matched, and a verb must
end the last segment. Values are percent-decoded per segment, so `%2F` inside a single-segment
value stays part of that value and never splits it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from tools.gen.http_rules import Template, Variable, parse_template

_LITERAL, _ONE, _REST = 0, 1, 2
_ESCAPED_SLASH = re.compile("%2f", re.IGNORECASE)


@dataclass(frozen=True)
class _Op:
    kind: int
    literal: str = ""


@dataclass(frozen=True)
class _Capture:
    field_path: tuple[str, ...]
    start: int  # index of the first op of the variable
    end: int  # index after its last op


class PathPattern:
    """One compiled template; `match` returns the bound variables, or None."""

    def __init__(self, template: Template) -> None:
        self.template = template
        self.verb = template.verb
        ops: list[_Op] = []
        captures: list[_Capture] = []
        for segment in template.segments:
            parts = segment.segments if isinstance(segment, Variable) else (segment,)
            start = len(ops)
            for part in parts:
                if part == "*":
                    ops.append(_Op(_ONE))
                elif part == "**":
                    ops.append(_Op(_REST))
                else:
                    ops.append(_Op(_LITERAL, part))
            if isinstance(segment, Variable):
                captures.append(_Capture(segment.field_path, start, len(ops)))
        self._ops = tuple(ops)
        self._captures = tuple(captures)
        self.has_rest = bool(ops) and ops[-1].kind == _REST
        self.length = len(ops)
        # Literal segments before wildcards: a more specific template is tried first.
        self.specificity = tuple(op.kind for op in ops)

    @classmethod
    def parse(cls, text: str) -> PathPattern:
        return cls(parse_template(text))

    def match(self, path: str) -> dict[tuple[str, ...], str] | None:
        """The variables of `path` (raw, percent-encoded, starting with '/'), or None if it does not match."""
        if not path.startswith("/"):
            return None
        body = path[1:]
        if self.verb:
            suffix = ":" + self.verb
            if not body.endswith(suffix):
                return None
            body = body[: -len(suffix)]
        segments = body.split("/") if body else []
        positions: list[int] = []  # for each op, the index of the first segment it took
        index = 0
        for op in self._ops:
            positions.append(index)
            if op.kind == _REST:
                index = len(segments)
                break
            if index >= len(segments):
                return None
            segment = segments[index]
            if op.kind == _LITERAL:
                if segment != op.literal:
                    return None
            elif not segment:
                return None
            index += 1
        if index != len(segments):
            return None
        positions.append(index)
        bound: dict[tuple[str, ...], str] = {}
        for capture in self._captures:
            taken = segments[positions[capture.start] : positions[capture.end]]
            if len(taken) == 1:
                bound[capture.field_path] = unquote(taken[0])
            else:
                # A multi-segment value keeps its '/' separators and any escaped '/' inside a segment.
                bound[capture.field_path] = "/".join(
                    unquote(_ESCAPED_SLASH.sub("%252F", part)) for part in taken
                )
        return bound

    def __str__(self) -> str:
        return str(self.template)
