"""Path templates and the route table, as grpc-gateway's pattern_test.go and mux_test.go check them."""

from __future__ import annotations

import pytest
from google.api import http_pb2
from hypothesis import given
from hypothesis import strategies as st

from gateway.descriptors import Contracts
from gateway.pattern import PathPattern
from gateway.router import RouteConflict, Router
from tests.gateway.augmented import augmented_descriptor_set


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/accounts/{account_id}", "/v1/accounts/abc", {("account_id",): "abc"}),
        ("/v1/accounts/{account_id}", "/v1/accounts/a%2Fb", {("account_id",): "a/b"}),
        ("/v1/accounts/{account_id}", "/v1/accounts/abc/x", None),
        ("/v1/accounts/{account_id}", "/v1/accounts/", None),
        ("/v1/x/{a.b.c}/y", "/v1/x/7/y", {("a", "b", "c"): "7"}),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/books/b2", {("name",): "shelves/s1/books/b2"}),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/cds/b2", None),
        ("/v1/files/{path=**}", "/v1/files/a/b/c.txt", {("path",): "a/b/c.txt"}),
        ("/v1/files/{path=**}", "/v1/files/a%2Fb/c", {("path",): "a%2Fb/c"}),
        ("/v1/files/**", "/v1/files", {}),
        ("/v1/w/{id}:approve", "/v1/w/42:approve", {("id",): "42"}),
        ("/v1/w/{id}:approve", "/v1/w/42:reject", None),
        ("/v1/w/{id}:approve", "/v1/w/42", None),
        ("/v1/assets/{asset}", "/v1/assets/ethereum:ETH", {("asset",): "ethereum:ETH"}),
    ],
)
def test_match(template: str, path: str, expected: dict[tuple[str, ...], str] | None) -> None:
    assert PathPattern.parse(template).match(path) == expected


@given(st.lists(st.text(alphabet="abcAZ09-._~:%2F", min_size=1, max_size=8), min_size=0, max_size=6))
def test_matching_never_raises_and_literal_templates_match_only_themselves(segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    for template in ("/v1/{a}/{b=x/**}", "/{x}:verb", "/v1/**", "/a/b/c"):
        PathPattern.parse(template).match(path)
    assert (PathPattern.parse("/a/b/c").match(path) is not None) == (path == "/a/b/c")


def test_every_binding_of_the_contracts_is_a_route() -> None:
    contracts = Contracts.load()
    router = Router(contracts.rpcs())
    expected = sum(len(rpc.bindings) for rpc in contracts.rpcs())
    assert len(router.routes) == expected > 350
    # The additional binding of GetLoan is routed to the same RPC as its main binding.
    public = router.match("GET", "/v1/loans/l-1")
    admin = router.match("GET", "/v1/admin/lending/loans/l-1")
    assert public is not None and admin is not None
    assert (
        public.route.rpc.full_name == admin.route.rpc.full_name == "finmesh.lending.v1.LendingService.GetLoan"
    )


def test_verb_routes_win_over_variables_and_literals_over_wildcards() -> None:
    router = Router(Contracts.load().rpcs())
    lookup = router.match("GET", "/v1/admin/ledger/accounts:lookup")
    assert lookup is not None
    assert lookup.route.rpc.method.name == "LookupLedgerAccount"
    me = router.match("GET", "/v1/users/me/accounts")
    assert me is not None and me.variables == {("user_id",): "me"}


def test_two_bindings_of_the_same_shape_are_refused() -> None:
    descriptor_set = augmented_descriptor_set()
    ledger = next(file for file in descriptor_set.file if file.name.endswith("ledger_service.proto"))
    method = next(m for m in ledger.service[0].method if m.name == "SealLedgerAccount")
    from google.api import annotations_pb2

    rule = method.options.Extensions[annotations_pb2.http]
    rule.CopyFrom(http_pb2.HttpRule(get="/v1/accounts/{other}"))
    with pytest.raises(RouteConflict, match="match the same requests"):
        Router(Contracts(descriptor_set).rpcs())
