"""The protovalidate rules of the contracts in the generated OpenAPI document (tools/gen/openapi_rules.py).

Checked on real messages of the contracts: the keywords a rule becomes, the `required` lists,
the split of request and response components, and, with a JSON Schema validator, that a request
schema refuses what the service's validation refuses and admits what it admits (the rules only
a description carries aside).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
from finmesh.auth.v1 import auth_service_pb2
from finmesh.user.v1 import user_service_pb2
from finmesh.withdraw.v1 import withdraw_service_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from svc.kit import validation
from tools.gen import descriptors, openapi
from tools.gen.openapi_schemas import INPUT_SUFFIX
from tools.gen.paths import DESCRIPTOR_SET

USER = "finmesh.user.v1"
REQUEST_ID = "request-0001"
PASSWORD = "correct horse battery"
ADDRESS_ID = "7f0c6f0e-3b8e-4d0a-9f43-2f1f8c2b6d11"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.build_document(descriptors.load(DESCRIPTOR_SET), "0.0.0")


def component(document: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


def operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][path][method]
    return found


def test_string_rules_and_the_required_list(document: dict[str, Any]) -> None:
    schema = component(document, f"{USER}.RegisterUserRequest")
    properties = schema["properties"]
    assert properties["requestId"] | {"description": ""} == {
        "type": "string",
        "minLength": 8,
        "maxLength": 128,
        "pattern": "^[A-Za-z0-9._:-]+$",
        "description": "",
    }
    assert properties["email"]["format"] == "email"
    assert properties["email"]["maxLength"] == 254
    assert properties["phone"]["pattern"] == "^\\+[1-9][0-9]{6,14}$"
    assert properties["password"]["minLength"] == 12
    # Left out, each of these is "", which its rules refuse; the optional profile, the referral
    # code (max_len only) and the oneof members (which track presence) may be left out.
    assert schema["required"] == ["requestId", "password", "acceptedTermsVersion"]
    # The required oneof: exactly one member (two are refused by the JSON parser already).
    assert schema["oneOf"] == [{"required": ["email"]}, {"required": ["phone"]}]
    assert properties["profile"]["$ref"] == f"#/components/schemas/{USER}.UserProfile{INPUT_SUFFIX}"


def test_enum_rules_and_a_non_default_enum_is_required(document: dict[str, Any]) -> None:
    schema = component(document, f"{USER}.SendVerificationCodeRequest")
    channel = schema["properties"]["channel"]
    assert channel["$ref"] == f"#/components/schemas/{USER}.ContactChannel"
    assert channel["not"] == {"enum": ["CONTACT_CHANNEL_UNSPECIFIED"]}
    assert "channel" in schema["required"]


def test_ignore_if_zero_value_admits_the_default(document: dict[str, Any]) -> None:
    language = component(document, f"{USER}.UserProfile{INPUT_SUFFIX}")["properties"]["language"]
    assert language["anyOf"] == [
        {"const": ""},
        {"maxLength": 35, "pattern": "^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"},
    ]
    assert "exempt" in language["description"]


def test_repeated_bounds_and_item_rules(document: dict[str, Any]) -> None:
    properties = component(document, "finmesh.auth.v1.CreateApiKeyRequest")["properties"]
    scopes = properties["scopes"]
    assert (scopes["minItems"], scopes["maxItems"], scopes["uniqueItems"]) == (1, 32, True)
    assert scopes["items"] == {"type": "string", "pattern": "^[a-z][a-z_]{0,31}:(read|write)$"}
    # ip_with_prefixlen has no JSON Schema format: described, not enforced.
    ranges = properties["allowedIpRanges"]
    assert ranges["items"] == {"type": "string"}
    assert "Each item: must be an IP address with a prefix length" in ranges["description"]


def test_required_message_field_oneof_and_cel(document: dict[str, Any]) -> None:
    schema = component(document, "finmesh.withdraw.v1.CreateWithdrawalRequest")
    assert schema["required"] == ["requestId", "amount", "stepUpToken"]
    assert schema["properties"]["amount"] == {
        "$ref": f"#/components/schemas/finmesh.common.v1.Money{INPUT_SUFFIX}",
        "description": schema["properties"]["amount"]["description"],
    }
    assert schema["oneOf"] == [{"required": ["destinationAddressId"]}, {"required": ["destinationAddress"]}]
    assert schema["x-cel"] == [
        {
            "id": "amount_positive",
            "message": "amount must be greater than zero",
            "expression": "this.amount.amount != '0'",
        }
    ]
    assert "Rule `amount_positive`: amount must be greater than zero" in schema["description"]
    money = component(document, f"finmesh.common.v1.Money{INPUT_SUFFIX}")
    assert money["required"] == ["asset", "amount"]
    assert money["properties"]["amount"]["pattern"] == "^(0|[1-9][0-9]{0,77})$"


def test_numeric_bounds_of_parameters(document: dict[str, Any]) -> None:
    search = operation(document, "get", "/v1/admin/users:search")
    page_size = next(parameter for parameter in search["parameters"] if parameter["name"] == "pageSize")
    assert page_size["schema"] == {"type": "integer", "format": "int32", "minimum": 0, "maximum": 1000}
    # 64-bit integers are strings that the JSON parser reads in several spellings: only described.
    revision = operation(document, "get", "/v1/admin/config/revisions/{revision}")["parameters"][0]
    assert revision["schema"] == {"type": "string", "format": "uint64"}
    assert revision["description"].endswith("Validation: Greater than 0")


def _reachable(document: dict[str, Any], schema: Any) -> Iterator[str]:
    """Names of the components a schema refers to, transitively."""
    seen: set[str] = set()
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            name = ref.removeprefix("#/components/schemas/")
            if ref and name not in seen:
                seen.add(name)
                yield name
                pending.append(component(document, name))
            pending += list(node.values())
        elif isinstance(node, list):
            pending += node


def test_responses_carry_no_request_rules(document: dict[str, Any]) -> None:
    """The edge writes every field without presence at its default, and services do not hold
    responses to the request rules: no response schema has a rule's keyword or `required`."""
    offenders: set[str] = set()
    for item in document["paths"].values():
        for found in item.values():
            for response in found["responses"].values():
                schema = response["content"]["application/json"]["schema"]
                for name in _reachable(document, schema):
                    held = component(document, name)
                    if name.endswith(INPUT_SUFFIX) or {"required", "oneOf", "x-cel"} & set(held):
                        offenders.add(name)
    assert offenders <= {"google.protobuf.Any"}, sorted(offenders)  # Any's own `@type`
    user = component(document, f"{USER}.User")
    assert user["properties"]["profile"]["$ref"] == f"#/components/schemas/{USER}.UserProfile"
    assert "anyOf" not in component(document, f"{USER}.UserProfile")["properties"]["language"]


def service_accepts(message: Message, body: dict[str, Any]) -> bool:
    """Whether the service admits the body: the edge's JSON parser, then the kit's validation."""
    try:
        json_format.ParseDict(body, message)
    except json_format.ParseError:
        return False
    return not validation.violations(message)


def schema_accepts(document: dict[str, Any], name: str, body: dict[str, Any]) -> bool:
    root = {"components": document["components"], "$ref": f"#/components/schemas/{name}"}
    return bool(jsonschema_rs.Draft202012Validator(root, validate_formats=True).is_valid(body))


REGISTRATION = {
    "requestId": REQUEST_ID,
    "email": "ada@example.com",
    "password": PASSWORD,
    "acceptedTermsVersion": "2024-06",
}
REGISTRATIONS = [
    ({}, True),
    ({"requestId": ""}, False),
    ({"requestId": "short"}, False),
    ({"requestId": "has space in it"}, False),
    ({"email": "not-an-address"}, False),
    ({"phone": "+491511234567"}, False),  # a second member of the oneof
    ({"acceptedTermsVersion": ""}, False),
    ({"password": "too short"}, False),
    ({"referralCode": ""}, True),
    ({"referralCode": "x" * 33}, False),
    ({"profile": {}}, True),
    ({"profile": {"language": ""}}, True),
    ({"profile": {"language": "de-CH"}}, True),
    ({"profile": {"language": "DE"}}, False),
    ({"profile": {"countryOfResidence": "Germany"}}, False),
    ({"profile": {"displayName": "x" * 65}}, False),
]


@pytest.mark.parametrize(("change", "admitted"), REGISTRATIONS, ids=lambda value: json.dumps(value)[:40])
def test_schema_and_service_agree_on_registrations(
    document: dict[str, Any], change: dict[str, Any], admitted: bool
) -> None:
    body = REGISTRATION | change
    assert service_accepts(user_service_pb2.RegisterUserRequest(), body) is admitted
    assert schema_accepts(document, f"{USER}.RegisterUserRequest", body) is admitted


def test_left_out_fields_are_refused_by_both(document: dict[str, Any]) -> None:
    for name in ("requestId", "password", "acceptedTermsVersion", "email"):
        body = {key: value for key, value in REGISTRATION.items() if key != name}
        assert not service_accepts(user_service_pb2.RegisterUserRequest(), body), name
        assert not schema_accepts(document, f"{USER}.RegisterUserRequest", body), name


WITHDRAWAL = {
    "requestId": REQUEST_ID,
    "amount": {"asset": "ethereum:ETH", "amount": "5"},
    "destinationAddressId": ADDRESS_ID,
    "stepUpToken": "step-up",
}
WITHDRAWALS = [
    ({}, True, True),
    ({"amount": {"asset": "ethereum:ETH"}}, False, False),
    ({"amount": {"asset": "ethereum:ETH", "amount": "05"}}, False, False),
    ({"destinationAddressId": "not-a-uuid"}, False, False),
    ({"stepUpToken": ""}, False, False),
    ({"maxFee": {"asset": "ethereum:ETH", "amount": "1"}}, True, True),
    # The CEL rule is described (`x-cel`), not a keyword: the schema admits what it refuses.
    ({"amount": {"asset": "ethereum:ETH", "amount": "0"}}, True, False),
]


@pytest.mark.parametrize(
    ("change", "by_schema", "by_service"), WITHDRAWALS, ids=lambda value: json.dumps(value)[:40]
)
def test_schema_and_service_agree_on_withdrawals(
    document: dict[str, Any], change: dict[str, Any], by_schema: bool, by_service: bool
) -> None:
    body = WITHDRAWAL | change
    assert service_accepts(withdraw_service_pb2.CreateWithdrawalRequest(), body) is by_service
    assert schema_accepts(document, "finmesh.withdraw.v1.CreateWithdrawalRequest", body) is by_schema
    without_amount = {key: value for key, value in body.items() if key != "amount"}
    assert not service_accepts(withdraw_service_pb2.CreateWithdrawalRequest(), without_amount)
    assert not schema_accepts(document, "finmesh.withdraw.v1.CreateWithdrawalRequest", without_amount)


def test_repeated_rules_agree(document: dict[str, Any]) -> None:
    base = {
        "requestId": REQUEST_ID,
        "displayName": "ci",
        "scopes": ["wallet:read"],
        "allowedIpRanges": ["10.0.0.0/8"],
        "expireTime": "2999-01-01T00:00:00Z",
        "stepUpToken": "step-up",
    }
    name = "finmesh.auth.v1.CreateApiKeyRequest"
    for change, admitted in [
        ({}, True),
        ({"scopes": []}, False),
        ({"scopes": ["wallet:read", "wallet:read"]}, False),
        ({"scopes": [f"s{index:02d}:read" for index in range(33)]}, False),
        ({"scopes": ["Wallet:read"]}, False),
    ]:
        body = base | change
        assert schema_accepts(document, name, body) is admitted, change
        # The service may refuse more: `expireTime` must lie in a window from now (described only).
        if not admitted:
            assert not service_accepts(auth_service_pb2.CreateApiKeyRequest(), body), change
