"""The contracts' protovalidate (`buf.validate`) rules as JSON Schema keywords of request schemas.

A request schema must refuse exactly what the services refuse, never more: a client (or the
schemathesis fuzz test) that sends a value the schema forbids expects the edge to refuse it. So
a rule becomes a keyword only where the keyword means the same thing on the proto3 JSON form;
every other rule (CEL, 64-bit bounds, times, decoded byte lengths...) is written into the
field's description, and CEL rules also into an `x-cel` list.

- Strings: `const`, `in`, `not_in`, lengths, `pattern` (RE2; every pattern of the contracts
  means the same in ECMA-262), prefix/suffix/contains as patterns, and `format` for email,
  hostname, ipv4, ipv6, uri, uri-reference and uuid (with the exact pattern protovalidate
  checks). `ip` is either format.
- 32-bit integers, floats and doubles: `minimum`, `maximum`, `exclusiveMinimum`,
  `exclusiveMaximum`, `const`, `enum`. 64-bit integers are JSON strings that the parser reads
  in several spellings (`+5`, `1_0`, a JSON number), so no pattern would be exact: their bounds
  are described only.
- Enums: names by `const`, `in` and `not_in` next to the `$ref` of the enum (whose list is the
  defined names already, as `defined_only` asks).
- Bytes (base64 text): a decoded length of at least n needs at least ceil(4n/3) characters,
  so `min_len`/`len` give `minLength`; the decoder skips characters outside the alphabet, so
  no `maxLength` is exact and upper bounds are described.
- Repeated: `minItems`, `maxItems`, `uniqueItems`, item rules on `items`. Maps: `minProperties`,
  `maxProperties`, key rules on `propertyNames`, value rules on `additionalProperties`.

A field is in its object's `required` list when leaving it out is refused. Leaving a field out
of proto3 JSON gives it its default value (or leaves it unset, for a field that tracks
presence), so: a `required` field (a message or `optional` field must be set; a scalar,
repeated or map field without presence must be non-default, which its schema then also says),
and a field without presence whose rules refuse the default value (`min_len: 8`, a pattern that
does not match ""), unless `ignore: IGNORE_IF_ZERO_VALUE` exempts that value, in which case the
schema admits it next to the rules (`anyOf`). A required oneof needs exactly one member.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import re2
from buf.validate import validate_pb2 as rules_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

Schema = dict[str, Any]

# What protovalidate's `string.uuid` checks.
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_JSON_NUMBER_KINDS = frozenset({"int32", "uint32", "sint32", "fixed32", "sfixed32", "float", "double"})
_STRING_INT_KINDS = frozenset({"int64", "uint64", "sint64", "fixed64", "sfixed64"})
# Well-known string rules with a JSON Schema format that means the same (with extra keywords).
_STRING_FORMATS: dict[str, Schema] = {
    "email": {"format": "email"},
    "hostname": {"format": "hostname"},
    "ipv4": {"format": "ipv4"},
    "ipv6": {"format": "ipv6"},
    "ip": {"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
    "uri": {"format": "uri"},
    "uri_ref": {"format": "uri-reference"},
    "uuid": {"format": "uuid", "pattern": UUID_PATTERN},
    "tuuid": {"pattern": "^[0-9a-fA-F]{32}$"},
}
_STRING_FORMAT_WORDS = {
    "address": "a hostname or an IP address",
    "ip_with_prefixlen": "an IP address with a prefix length",
    "ipv4_with_prefixlen": "an IPv4 address with a prefix length",
    "ipv6_with_prefixlen": "an IPv6 address with a prefix length",
    "ip_prefix": "an IP prefix",
    "ipv4_prefix": "an IPv4 prefix",
    "ipv6_prefix": "an IPv6 prefix",
    "host_and_port": "a host and a port",
    "ulid": "a ULID",
    "protobuf_fqn": "a fully-qualified protobuf name",
    "protobuf_dot_fqn": "a fully-qualified protobuf name with a leading dot",
    "well_known_regex": "a valid HTTP header name or value",
}
# Formats whose empty string is valid: every other well-known format refuses "".
_EMPTY_VALID_FORMATS = frozenset({"uri_ref"})
_BOUND_WORDS = {
    "gt": "greater than",
    "gte": "at least",
    "lt": "less than",
    "lte": "at most",
}


def rules_ignored(field: FieldDescriptor) -> bool:
    """Whether the field's rules, and those of the message it holds, are never applied."""
    options = field.GetOptions()
    return options.HasExtension(rules_pb2.field) and options.Extensions[rules_pb2.field].ignore == (
        rules_pb2.IGNORE_ALWAYS
    )


def field_rules(field: FieldDescriptor) -> rules_pb2.FieldRules | None:
    """The field's protovalidate rules; None without any, or when they are always ignored."""
    options = field.GetOptions()
    if not options.HasExtension(rules_pb2.field):
        return None
    rules: rules_pb2.FieldRules = options.Extensions[rules_pb2.field]
    return None if rules.ignore == rules_pb2.IGNORE_ALWAYS else rules


def message_rules(message: Descriptor) -> rules_pb2.MessageRules | None:
    options = message.GetOptions()
    return options.Extensions[rules_pb2.message] if options.HasExtension(rules_pb2.message) else None


def carries_rules(message: Descriptor, _seen: frozenset[str] = frozenset()) -> bool:
    """Whether the message, or a message any of its fields holds, has protovalidate rules: then its
    request schema differs from its response schema."""
    if message.full_name in _seen:
        return False
    seen = _seen | {message.full_name}
    if message_rules(message) is not None:
        return True
    if any(oneof.GetOptions().HasExtension(rules_pb2.oneof) for oneof in message.oneofs):
        return True
    for field in message.fields:
        if field.GetOptions().HasExtension(rules_pb2.field):
            if field_rules(field) is not None:
                return True
            continue  # IGNORE_ALWAYS also ignores the rules of the message it holds
        if field.message_type is not None and carries_rules(field.message_type, seen):
            return True
    return False


def json_required(field: FieldDescriptor) -> bool:
    """Whether a request that leaves the field out of its JSON object is refused."""
    rules = field_rules(field)
    if rules is None:
        return False
    if rules.required:
        return True
    if field.has_presence or rules.ignore == rules_pb2.IGNORE_IF_ZERO_VALUE:
        return False
    return _zero_violates(field, rules)


def constrain(schema: Schema, field: FieldDescriptor, nullable: bool = False) -> None:
    """Adds the field's rules to the schema of its JSON value (built by the schema registry);
    `nullable` for a wrapper type, whose null leaves the field unset."""
    rules = field_rules(field)
    if rules is None:
        return
    notes: list[str] = []
    keywords: Schema = {}
    entry = field.message_type
    kind = rules.WhichOneof("type")
    if entry is not None and entry.GetOptions().map_entry:
        if kind == "map":
            keywords.update(_bounds(rules.map, {"min_pairs": "minProperties", "max_pairs": "maxProperties"}))
            if rules.map.HasField("keys"):
                key_keywords, key_notes = _value_keywords(entry.fields_by_name["key"], rules.map.keys)
                if entry.fields_by_name["key"].type == FieldDescriptor.TYPE_STRING:
                    _merge(schema.setdefault("propertyNames", {}), key_keywords)
                    notes += [f"Each key: {note}" for note in key_notes]
                else:
                    notes.append("Each key: " + "; ".join(_describe_typed(rules.map.keys)))
            if rules.map.HasField("values"):
                value = entry.fields_by_name["value"]
                values = schema["additionalProperties"]
                notes += _constrain_item(values, value, rules.map.values, "Each value")
        non_zero: Schema = {"minProperties": 1}
        zero: Schema = {"maxProperties": 0}
    elif field.is_repeated:
        if kind == "repeated":
            repeated = rules.repeated
            keywords.update(_bounds(repeated, {"min_items": "minItems", "max_items": "maxItems"}))
            if repeated.unique:
                keywords["uniqueItems"] = True
            if repeated.HasField("items"):
                notes += _constrain_item(schema["items"], field, repeated.items, "Each item")
        non_zero, zero = {"minItems": 1}, {"maxItems": 0}
    else:
        keywords, notes = _value_keywords(field, rules)
        non_zero, zero = _non_zero(field), {"const": _zero_json(field)}
    if rules.required and not field.has_presence:
        _merge(keywords, non_zero)
    notes += _cel_notes(rules)
    _add_cel(schema, rules.cel, rules.cel_expression)
    if keywords:
        exempt = (
            not field.has_presence
            and rules.ignore == rules_pb2.IGNORE_IF_ZERO_VALUE
            and not rules.required
            and _zero_violates(field, rules)
        )
        if exempt:
            _merge(schema, {"anyOf": [zero, keywords]})
        elif nullable:
            _merge(schema, {"anyOf": [{"type": "null"}, keywords]})
        else:
            _merge(schema, keywords)
        if exempt:
            notes.append(f"the default value `{_zero_text(field)}` is exempt from the rules above")
    _describe(schema, notes)


def constrain_message(schema: Schema, message: Descriptor, exclude: frozenset[str]) -> None:
    """Adds the message's own rules to its object schema: required oneofs, CEL rules."""
    required_oneofs: list[Schema] = []
    for oneof in message.oneofs:
        options = oneof.GetOptions()
        if not (options.HasExtension(rules_pb2.oneof) and options.Extensions[rules_pb2.oneof].required):
            continue
        if any(member.name in exclude for member in oneof.fields):
            continue  # a member comes from the path: the body needs none
        # Two members in one JSON object are refused by the JSON parser, none by the rule.
        required_oneofs.append({"oneOf": [{"required": [member.json_name]} for member in oneof.fields]})
    if len(required_oneofs) == 1:
        schema.update(required_oneofs[0])
    elif required_oneofs:
        schema["allOf"] = required_oneofs
    rules = message_rules(message)
    if rules is None:
        return
    notes = _cel_notes(rules)
    for rule in rules.oneof:
        names = ", ".join(f"`{message.fields_by_name[name].json_name}`" for name in rule.fields)
        notes.append(f"{'Exactly' if rule.required else 'At most'} one of {names} is set (non-default).")
    _add_cel(schema, rules.cel, rules.cel_expression)
    _describe(schema, notes)


def _constrain_item(
    schema: Schema, field: FieldDescriptor, rules: rules_pb2.FieldRules, label: str
) -> list[str]:
    """Puts the rules of each item (or map value) on its schema; returns what stays described."""
    keywords, notes = _value_keywords(field, rules)
    _merge(schema, keywords)
    return [f"{label}: {note}" for note in [*notes, *_cel_notes(rules)]]


def _value_keywords(field: FieldDescriptor, rules: rules_pb2.FieldRules) -> tuple[Schema, list[str]]:
    """The keywords of one scalar value's rules, and the rules that only a description can carry."""
    kind = rules.WhichOneof("type")
    if kind is None:
        return {}, []
    typed: Any = getattr(rules, kind)
    if kind == "string":
        return _string_keywords(typed)
    if kind == "bytes":
        return _bytes_keywords(typed)
    if kind == "enum":
        return _enum_keywords(typed, field)
    if kind == "bool":
        return ({"const": typed.const} if typed.HasField("const") else {}), []
    if kind in _JSON_NUMBER_KINDS:
        return _number_keywords(typed)
    return {}, _describe_typed(rules)


def _string_keywords(rules: Any) -> tuple[Schema, list[str]]:
    keywords: Schema = {}
    notes: list[str] = []
    patterns: list[str] = []
    if rules.HasField("const"):
        keywords["const"] = rules.const
    if rules.HasField("len"):
        keywords["minLength"] = keywords["maxLength"] = rules.len
    keywords.update(_bounds(rules, {"min_len": "minLength", "max_len": "maxLength"}))
    if rules.HasField("pattern"):
        patterns.append(rules.pattern)
    if rules.HasField("prefix"):
        patterns.append("^" + _literal(rules.prefix))
    if rules.HasField("suffix"):
        patterns.append(_literal(rules.suffix) + "$")
    if rules.HasField("contains"):
        patterns.append(_literal(rules.contains))
    if rules.HasField("not_contains"):
        keywords["not"] = {"pattern": _literal(rules.not_contains)}
    _add_lists(keywords, list(getattr(rules, "in")), list(rules.not_in))
    well_known = rules.WhichOneof("well_known")
    if well_known in _STRING_FORMATS and getattr(rules, well_known):
        format_keywords = dict(_STRING_FORMATS[well_known])
        if "pattern" in format_keywords:
            patterns.append(format_keywords.pop("pattern"))
        keywords.update(format_keywords)
    elif well_known is not None and getattr(rules, well_known):
        notes.append(f"must be {_STRING_FORMAT_WORDS[well_known]}")
    for name, unit in (("len_bytes", "exactly"), ("min_bytes", "at least"), ("max_bytes", "at most")):
        if rules.HasField(name):
            notes.append(f"{unit} {getattr(rules, name)} bytes in UTF-8")
    if patterns:
        keywords["pattern"] = patterns[0]
        if patterns[1:]:
            keywords["allOf"] = [{"pattern": pattern} for pattern in patterns[1:]]
    if rules.example:
        keywords["examples"] = list(rules.example)
    return keywords, notes


def _bytes_keywords(rules: rules_pb2.BytesRules) -> tuple[Schema, list[str]]:
    keywords: Schema = {}
    notes: list[str] = []
    lower = rules.len if rules.HasField("len") else rules.min_len if rules.HasField("min_len") else None
    if lower:
        keywords["minLength"] = math.ceil(4 * lower / 3)  # base64 characters that many bytes need
    if rules.HasField("len"):
        notes.append(f"decoded, exactly {rules.len} bytes")
    if rules.HasField("min_len") or rules.HasField("max_len"):
        bounds = [f"at least {rules.min_len}"] if rules.HasField("min_len") else []
        bounds += [f"at most {rules.max_len}"] if rules.HasField("max_len") else []
        notes.append(f"decoded, {' and '.join(bounds)} bytes")
    rest = _describe_fields(rules, exclude={"len", "min_len", "max_len", "example"}, kind="bytes")
    return keywords, notes + rest


def _enum_keywords(rules: rules_pb2.EnumRules, field: FieldDescriptor) -> tuple[Schema, list[str]]:
    enum = field.enum_type
    assert enum is not None, f"{field.full_name}: enum rules on a field that is not an enum"

    def names(numbers: Iterable[int]) -> list[str]:
        return [enum.values_by_number[number].name for number in numbers if number in enum.values_by_number]

    keywords: Schema = {}
    if rules.HasField("const"):
        keywords["const"] = names([rules.const])[0]
    allowed = list(getattr(rules, "in"))
    if allowed:
        keywords["enum"] = names(allowed)
    if rules.not_in:
        keywords["not"] = {"enum": names(rules.not_in)}
    return keywords, []


def _number_keywords(rules: Any) -> tuple[Schema, list[str]]:
    keywords: Schema = {}
    if rules.HasField("const"):
        keywords["const"] = rules.const
    lower = rules.WhichOneof("greater_than")
    upper = rules.WhichOneof("less_than")
    names = {"gt": "exclusiveMinimum", "gte": "minimum", "lt": "exclusiveMaximum", "lte": "maximum"}
    bounds = {names[name]: getattr(rules, name) for name in (lower, upper) if name is not None}
    if lower and upper and getattr(rules, upper) < getattr(rules, lower):
        # A reversed range: the value must lie outside [upper, lower].
        keywords["anyOf"] = [{key: value} for key, value in bounds.items()]
    else:
        keywords.update(bounds)
    _add_lists(keywords, list(getattr(rules, "in")), list(rules.not_in))
    notes = ["must be finite"] if getattr(rules, "finite", False) else []
    return keywords, notes


def _add_lists(keywords: Schema, allowed: list[Any], refused: list[Any]) -> None:
    if allowed:
        keywords["enum"] = allowed
    if refused:
        keywords["not"] = {"enum": refused}


def _bounds(rules: Message, names: dict[str, str]) -> Schema:
    return {keyword: getattr(rules, name) for name, keyword in names.items() if rules.HasField(name)}


def _literal(text: str) -> str:
    """`text` as a regular expression that matches itself, in ECMA-262 and RE2 alike."""
    return re.sub(r"([\\^$.|?*+()\[\]{}/-])", r"\\\1", text)


def _non_zero(field: FieldDescriptor) -> Schema:
    """What a `required` scalar without presence adds: it is not the default value."""
    if field.type == FieldDescriptor.TYPE_STRING:
        return {"minLength": 1}
    if field.type == FieldDescriptor.TYPE_BYTES:
        return {"minLength": 2}
    if field.type == FieldDescriptor.TYPE_BOOL:
        return {"const": True}
    if field.type == FieldDescriptor.TYPE_ENUM:
        return {"not": {"enum": [_zero_json(field)]}}
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return {}
    if _kind(field) in _STRING_INT_KINDS:
        return {"not": {"enum": ["0"]}}  # other spellings of zero are described by the rule
    return {"not": {"const": 0}}


def _zero_json(field: FieldDescriptor) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None, f"{field.full_name}: an enum field without its enum"
        return enum.values_by_number[0].name
    if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return ""
    if field.type == FieldDescriptor.TYPE_BOOL:
        return False
    if _kind(field) in _STRING_INT_KINDS:
        return "0"
    return 0


def _zero_text(field: FieldDescriptor) -> str:
    value = _zero_json(field)
    return '""' if value == "" else str(value).lower() if isinstance(value, bool) else str(value)


def _kind(field: FieldDescriptor) -> str:
    for name, number in (
        ("int64", FieldDescriptor.TYPE_INT64),
        ("uint64", FieldDescriptor.TYPE_UINT64),
        ("sint64", FieldDescriptor.TYPE_SINT64),
        ("fixed64", FieldDescriptor.TYPE_FIXED64),
        ("sfixed64", FieldDescriptor.TYPE_SFIXED64),
    ):
        if field.type == number:
            return name
    return ""


def _zero_violates(field: FieldDescriptor, rules: rules_pb2.FieldRules) -> bool:
    """Whether the field's default value (empty, for repeated and map fields) breaks its rules, when
    they apply to it. True only when certain: a field-level CEL rule is not evaluated here."""
    if rules.required:
        return True
    kind = rules.WhichOneof("type")
    if kind is None:
        return False
    typed: Any = getattr(rules, kind)
    if kind == "repeated":
        return bool(typed.min_items > 0)
    if kind == "map":
        return bool(typed.min_pairs > 0)
    if kind == "string":
        return _empty_text_violates(typed, "")
    if kind == "bytes":
        return _empty_text_violates(typed, b"")
    if kind == "bool":
        return bool(typed.HasField("const") and typed.const)
    if kind in _JSON_NUMBER_KINDS or kind in _STRING_INT_KINDS or kind == "enum":
        return _number_violates(typed, 0, kind == "enum")
    return False


def _empty_text_violates(rules: Any, empty: str | bytes) -> bool:
    if rules.HasField("const") and rules.const != empty:
        return True
    if any(
        rules.HasField(name) and getattr(rules, name) > 0
        for name in ("len", "min_len", "len_bytes", "min_bytes")
        if name in rules.DESCRIPTOR.fields_by_name
    ):
        return True
    if any(
        rules.HasField(name) and getattr(rules, name)
        for name in ("prefix", "suffix", "contains")
        if name in rules.DESCRIPTOR.fields_by_name
    ):
        return True
    if rules.HasField("pattern"):
        text = empty if isinstance(empty, str) else empty.decode()
        if re2.search(rules.pattern, text) is None:
            return True
    allowed = list(getattr(rules, "in"))
    if (allowed and empty not in allowed) or empty in rules.not_in:
        return True
    well_known = rules.WhichOneof("well_known")
    if well_known is not None and getattr(rules, well_known):
        if well_known == "well_known_regex":
            return bool(rules.well_known_regex == rules_pb2.KNOWN_REGEX_HTTP_HEADER_NAME)
        return well_known not in _EMPTY_VALID_FORMATS
    return False


def _number_violates(rules: Any, zero: int, is_enum: bool) -> bool:
    if rules.HasField("const") and rules.const != zero:
        return True
    allowed = list(getattr(rules, "in"))
    if (allowed and zero not in allowed) or zero in rules.not_in:
        return True
    if is_enum:
        return False  # the zero value of a proto3 enum is always defined
    lower = rules.WhichOneof("greater_than")
    upper = rules.WhichOneof("less_than")
    above = lower is None or (zero > rules.gt if lower == "gt" else zero >= rules.gte)
    below = upper is None or (zero < rules.lt if upper == "lt" else zero <= rules.lte)
    if lower and upper and getattr(rules, upper) < getattr(rules, lower):
        return not (above or below)  # a reversed range: outside it
    return not (above and below)


def _merge(schema: Schema, keywords: Schema) -> None:
    """Adds keywords to a schema; a keyword it has already is kept, the stricter bound or both
    (through `allOf`)."""
    for key, value in keywords.items():
        if key not in schema or schema[key] == value:
            schema[key] = value
        elif key in ("minimum", "minLength", "minItems", "minProperties"):
            schema[key] = max(schema[key], value)
        elif key in ("maximum", "maxLength", "maxItems", "maxProperties"):
            schema[key] = min(schema[key], value)
        elif key == "allOf":
            schema[key] = [*schema[key], *value]
        else:
            schema.setdefault("allOf", []).append({key: value})


def _cel_notes(rules: rules_pb2.FieldRules | rules_pb2.MessageRules) -> list[str]:
    notes = [f"Rule `{rule.id}`: {rule.message or rule.expression}" for rule in rules.cel]
    return notes + [f"Rule: `{expression}`" for expression in rules.cel_expression]


def _add_cel(schema: Schema, rules: Iterable[rules_pb2.Rule], expressions: Iterable[str]) -> None:
    listed = [
        {
            key: value
            for key, value in (("id", rule.id), ("message", rule.message), ("expression", rule.expression))
            if value
        }
        for rule in rules
    ]
    listed += [{"expression": expression} for expression in expressions]
    if listed:
        schema["x-cel"] = listed


def _describe(schema: Schema, notes: list[str]) -> None:
    if not notes:
        return
    lines = [note[0].upper() + note[1:] for note in notes]
    text = "\n".join(f"- {line}" if len(lines) > 1 else line for line in lines)
    schema["description"] = f"{schema.get('description', '')}\n\nValidation: {text}".strip()


def _describe_typed(rules: rules_pb2.FieldRules) -> list[str]:
    """Readable notes of the rules of a kind no JSON Schema keyword expresses."""
    kind = rules.WhichOneof("type")
    if kind is None:
        return []
    return _describe_fields(getattr(rules, kind), exclude={"example"}, kind=kind)


def _describe_fields(typed: Message, exclude: set[str], kind: str) -> list[str]:
    notes: list[str] = []
    for descriptor, value in typed.ListFields():
        name = descriptor.name
        if name in exclude:
            continue
        if name in _BOUND_WORDS:
            notes.append(f"{_BOUND_WORDS[name]} {_text(value)}")
        elif name == "gt_now" and value:
            notes.append("in the future")
        elif name == "lt_now" and value:
            notes.append("in the past")
        elif name == "within":
            notes.append(f"within {_text(value)} of now")
        elif name == "const":
            notes.append(f"exactly {_text(value)}")
        elif name == "in":
            notes.append(f"one of {', '.join(_text(item) for item in value)}")
        elif name == "not_in":
            notes.append(f"none of {', '.join(_text(item) for item in value)}")
        else:
            notes.append(f"`{kind}.{name}`: {_text(value)}")
    if kind == "field_mask":
        notes = [f"every path {note}" for note in notes]
    return notes


def _text(value: Any) -> str:
    if isinstance(value, Message) and hasattr(value, "ToJsonString"):
        return f"`{value.ToJsonString()}`"
    if isinstance(value, bytes):
        return f"`{value.hex()}` (hex)"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`" if isinstance(value, str) else str(value)
