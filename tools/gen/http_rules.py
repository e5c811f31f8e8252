"""`google.api.http` rules: the path-template parser and the HTTP bindings of an RPC.

Pure functions over protobuf objects, with no dependency on the generator's paths, so that the
gateway can parse and match the same templates as the OpenAPI generator.

Template syntax (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf.descriptor import MethodDescriptor

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Unreserved and sub-delimiter characters of RFC 3986 plus '%' for escapes; '*', '=' and ':' are
# excluded because the template syntax gives them a meaning.
_LITERAL = re.compile(r"[A-Za-z0-9\-._~!$&'()+,;@%]+")


@dataclass(frozen=True)
class Variable:
    """A `{field.path=segments}` part of a template; `{x}` is `{x=*}`."""

    field_path: tuple[str, ...]
    segments: tuple[str, ...] = ("*",)

    @property
    def name(self) -> str:
        """The dotted field path, as written in the template."""
        return ".".join(self.field_path)

    def __str__(self) -> str:
        if self.segments == ("*",):
            return "{" + self.name + "}"
        return "{" + self.name + "=" + "/".join(self.segments) + "}"


Segment = str | Variable


@dataclass(frozen=True)
class Template:
    """A parsed path template: literal, `*`, `**` and variable segments, and an optional verb."""

    segments: tuple[Segment, ...]
    verb: str = ""

    @property
    def variables(self) -> tuple[Variable, ...]:
        """The variables, in path order."""
        return tuple(segment for segment in self.segments if isinstance(segment, Variable))

    @property
    def pattern(self) -> str:
        """The URL shape with each variable replaced by what it matches: `/v1/users/*:approve`.

        Two templates with the same pattern match the same URLs, whatever their variables are named.
        """
        flat: list[str] = []
        for segment in self.segments:
            flat.extend(segment.segments if isinstance(segment, Variable) else (segment,))
        return "/" + "/".join(flat) + (":" + self.verb if self.verb else "")

    def __str__(self) -> str:
        path = "/" + "/".join(str(segment) for segment in self.segments)
        return path + (":" + self.verb if self.verb else "")


@dataclass(frozen=True)
class HttpBinding:
    """One (HTTP method, path template) an RPC is reachable at, with its body mapping."""

    method: str
    template: Template
    body: str
    response_body: str


def parse_template(text: str) -> Template:
    """Parses a `google.api.http` path template; raises ValueError naming the template and the problem."""
    try:
        return _parse(text)
    except ValueError as error:
        raise ValueError(f"invalid path template {text!r}: {error}") from None


def _parse(text: str) -> Template:
    if not text.startswith("/"):
        raise ValueError("must start with '/'")
    path, verb = _split_verb(text[1:])
    if verb is not None and not _LITERAL.fullmatch(verb):
        raise ValueError(f"invalid verb {verb!r}")
    segments = tuple(_parse_segment(raw) for raw in _split_top_level(path))
    template = Template(segments=segments, verb=verb or "")
    flat = template.pattern.split(":")[0].split("/")[1:]
    if "**" in flat[:-1]:
        raise ValueError("'**' must be the last segment")
    names = [variable.name for variable in template.variables]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"variable bound more than once: {', '.join(duplicates)}")
    return template


def _split_verb(path: str) -> tuple[str, str | None]:
    """Splits `a/{b}:verb` into (`a/{b}`, `verb`) at the last ':' outside braces after the last '/'."""
    inside = False
    last_slash = last_colon = -1
    for index, char in enumerate(path):
        if char == "{":
            if inside:
                raise ValueError("variables cannot be nested")
            inside = True
        elif char == "}":
            if not inside:
                raise ValueError("unmatched '}'")
            inside = False
        elif not inside and char == "/":
            last_slash = index
        elif not inside and char == ":":
            last_colon = index
    if inside:
        raise ValueError("unclosed '{'")
    if last_colon > last_slash:
        return path[:last_colon], path[last_colon + 1 :]
    return path, None


def _split_top_level(path: str) -> list[str]:
    """Splits at the '/' outside variables (braces are balanced here); every part must be non-empty."""
    parts = [""]
    inside = False
    for char in path:
        if char == "/" and not inside:
            parts.append("")
            continue
        if char in "{}":
            inside = char == "{"
        parts[-1] += char
    if not all(parts):
        raise ValueError("empty segment")
    return parts


def _parse_segment(raw: str) -> Segment:
    if not raw.startswith("{"):
        return _parse_plain(raw)
    if not raw.endswith("}"):
        raise ValueError(f"text after a variable in segment {raw!r}")
    field_path, has_pattern, pattern = raw[1:-1].partition("=")
    idents = tuple(field_path.split("."))
    if not all(_IDENT.fullmatch(ident) for ident in idents):
        raise ValueError(f"invalid field path {field_path!r}")
    if not has_pattern:
        return Variable(field_path=idents)
    segments = pattern.split("/")
    if not all(segments):
        raise ValueError(f"empty segment in variable {raw!r}")
    return Variable(field_path=idents, segments=tuple(_parse_plain(segment) for segment in segments))


def _parse_plain(raw: str) -> str:
    if raw in ("*", "**") or _LITERAL.fullmatch(raw):
        return raw
    raise ValueError(f"invalid segment {raw!r}")


def rule_bindings(rule: http_pb2.HttpRule) -> list[HttpBinding]:
    """The rule's own binding followed by its additional_bindings; raises ValueError if malformed."""
    if any(extra.additional_bindings for extra in rule.additional_bindings):
        raise ValueError("additional_bindings cannot have additional_bindings of their own")
    return [_binding(item) for item in (rule, *rule.additional_bindings)]


def method_bindings(method: MethodDescriptor) -> list[HttpBinding]:
    """Every HTTP binding of an RPC (empty if it has no `google.api.http` option)."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    try:
        return rule_bindings(options.Extensions[annotations_pb2.http])
    except ValueError as error:
        raise ValueError(f"{method.full_name}: {error}") from error


def _binding(rule: http_pb2.HttpRule) -> HttpBinding:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise ValueError("http rule without a method and path")
    if kind == "custom":
        method, path = rule.custom.kind.upper(), rule.custom.path
    else:
        method, path = kind.upper(), getattr(rule, kind)
    return HttpBinding(
        method=method, template=parse_template(path), body=rule.body, response_body=rule.response_body
    )
