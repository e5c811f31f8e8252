"""The proto3 JSON mapping at the edge: requests read strictly, responses written as grpc-gateway
writes them (64-bit integers as strings, enums by name, well-known types, defaults included)."""

from __future__ import annotations

import json

import pytest

from gateway import codec, transcode
from gateway.router import Router
from svc.kit.errors import InvalidArgument
from tests.gateway.augmented import augmented_contracts

CONTRACTS = augmented_contracts()
ROUTER = Router(CONTRACTS.rpcs())
POOL = CONTRACTS.pool


def build(method: str, path: str, query: list[tuple[str, str]] | None = None, body: object = None) -> object:
    match = ROUTER.match(method, path)
    assert match is not None, path
    raw = b"" if body is None else json.dumps(body).encode()
    return transcode.request_message(match, query or [], raw, POOL)


def violation(error: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return error.value.violations[0].field


def test_64_bit_integers_as_numbers_or_strings_in_and_strings_out() -> None:
    for value in ("18446744073709551615", "42"):
        request = build("GET", "/v1/accounts/a/balance", [("minSequence", value)])
        assert request.min_sequence == int(value)  # type: ignore[attr-defined]
    posted = build("POST", "/v1/test/journal_entries", body={"requestId": "r-00000001", "entry": {"kind": 1}})
    assert json.loads(codec.encode(posted, POOL))["entry"]["kind"] == "ENTRY_KIND_STANDARD"
    response = CONTRACTS.any_message("finmesh.account.v1.GetAccountBalanceResponse")
    response.balance.as_of_sequence = 2**63
    document = json.loads(codec.encode(response, POOL))
    assert document["balance"]["asOfSequence"] == str(2**63)
    assert document["status"] == "ACCOUNT_STATUS_UNSPECIFIED"  # defaults are written
    assert document["balance"]["available"] == ""


def test_well_known_types_in_queries_and_bodies() -> None:
    request = build("GET", "/v1/admin/ledger/entries", [("startTime", "2024-02-29T12:00:00.5Z")])
    assert request.start_time.seconds == 1709208000  # type: ignore[attr-defined]
    assert request.start_time.nanos == 500_000_000  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument) as bad:
        build("GET", "/v1/admin/ledger/entries", [("startTime", "yesterday")])
    assert "startTime" in str(bad.value.violations[0].description) or violation(bad) in (
        "query",
        "start_time",
    )


def test_strict_bodies() -> None:
    with pytest.raises(InvalidArgument) as unknown:
        build("POST", "/v1/test/journal_entries", body={"requestId": "r-00000001", "surprise": 1})
    assert "surprise" in unknown.value.violations[0].description
    with pytest.raises(InvalidArgument) as wrong_enum:
        build("POST", "/v1/test/journal_entries", body={"entry": {"kind": "ENTRY_KIND_MAYBE"}})
    assert violation(wrong_enum) == "entry.kind"
    with pytest.raises(InvalidArgument) as not_object:
        build("POST", "/v1/test/journal_entries", body=[1, 2])
    assert violation(not_object) == "body"
    with pytest.raises(InvalidArgument) as query_with_star_body:
        build("POST", "/v1/test/journal_entries", [("requestId", "x")], body={})
    assert violation(query_with_star_body) == "requestId"
    with pytest.raises(InvalidArgument) as body_on_get:
        build("GET", "/v1/accounts/a/balance", body={"x": 1})
    assert violation(body_on_get) == "body"


def test_path_variables_win_over_the_body() -> None:
    request = build(
        "POST",
        "/v1/test/assets/ethereum:ETH/ledger_accounts",
        body={"asset": "bitcoin:BTC", "code": "assets:x:y"},
    )
    assert request.account.asset == "ethereum:ETH"  # type: ignore[attr-defined]
    assert request.account.code == "assets:x:y"  # type: ignore[attr-defined]


def test_query_parameter_names_and_limits() -> None:
    by_proto_name = build("GET", "/v1/admin/ledger/accounts", [("code_prefix", "assets"), ("page_size", "3")])
    by_json_name = build("GET", "/v1/admin/ledger/accounts", [("codePrefix", "assets"), ("pageSize", "3")])
    assert by_proto_name == by_json_name
    with pytest.raises(InvalidArgument):
        build("GET", "/v1/admin/ledger/accounts", [("pageSize", "1")] * 257)
