"""Annotations added to the contracts become routes with no gateway code change: a descriptor set
built in the test, with new bindings of every form, served in front of the real ledger."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from tests.gateway.augmented import augmented_contracts
from tests.gateway.conftest import ASSET, Edge, Mesh, gateway_settings, serve_gateway

OPERATOR = ("operator",)


@pytest.fixture(scope="module")
async def augmented_edge(mesh: Mesh) -> AsyncIterator[Edge]:
    async with serve_gateway(gateway_settings(mesh), contracts=augmented_contracts()) as running:
        yield running


async def test_field_body_with_a_nested_path_variable_creates_a_ledger_account(
    augmented_edge: Edge, bearer: Callable[..., dict[str, str]]
) -> None:
    code = f"liabilities:users:{uuid.uuid4().hex[:10]}:ethereum:ETH"
    response = await augmented_edge.http.post(
        f"/v1/test/assets/{ASSET}/ledger_accounts",
        json={"code": code, "type": "ACCOUNT_TYPE_LIABILITY", "constraint": "BALANCE_CONSTRAINT_NONE"},
        headers=bearer("ops-1", roles=OPERATOR),
    )
    # request_id is a field of the request, not of the body field: the ledger refuses its absence.
    assert response.status_code == 400, response.text
    assert "request_id" in response.text
    created = await augmented_edge.http.post(
        f"/v1/test/assets/{ASSET}/ledger_accounts?requestId=create-{uuid.uuid4().hex}",
        json={"code": code, "type": "ACCOUNT_TYPE_LIABILITY", "constraint": "BALANCE_CONSTRAINT_NONE"},
        headers=bearer("ops-1", roles=OPERATOR),
    )
    assert created.status_code == 200, created.text
    account = created.json()["account"]
    assert account["code"] == code
    assert account["asset"] == ASSET  # from the path variable account.asset


async def test_star_body_and_additional_bindings_with_response_body(
    mesh: Mesh, augmented_edge: Edge, bearer: Callable[..., dict[str, str]]
) -> None:
    headers = bearer("ops-1", roles=OPERATOR)
    user = await mesh.open_account(f"u-{uuid.uuid4().hex[:8]}")
    entry_id = f"test.{uuid.uuid4().hex}"
    posted = await augmented_edge.http.post(
        "/v1/test/journal_entries",
        json={
            "requestId": entry_id,
            "entry": {
                "entryId": entry_id,
                "kind": "ENTRY_KIND_STANDARD",
                "category": "deposit.credit",
                "postings": [
                    {
                        "accountId": mesh.custody_id,
                        "side": "POSTING_SIDE_DEBIT",
                        "asset": ASSET,
                        "amount": "77",
                    },
                    {
                        "accountId": user.ledger_account_id,
                        "side": "POSTING_SIDE_CREDIT",
                        "asset": ASSET,
                        "amount": "77",
                    },
                ],
            },
        },
        headers=headers,
    )
    assert posted.status_code == 200, posted.text
    assert isinstance(posted.json()["entry"]["sequence"], str)
    # The original binding and the additional one reach the same RPC; response_body unwraps.
    original = await augmented_edge.http.get(
        f"/v1/admin/ledger/accounts/{user.ledger_account_id}", headers=headers
    )
    extra = await augmented_edge.http.get(
        f"/v1/test/ledger_accounts/{user.ledger_account_id}", headers=headers
    )
    assert original.status_code == extra.status_code == 200
    assert original.json()["account"] == extra.json()
    # `**` takes the rest of the path, ':' and all.
    lookup = await augmented_edge.http.get(f"/v1/test/codes/{user.ledger_account_code}", headers=headers)
    assert lookup.status_code == 200, lookup.text
    assert lookup.json()["account"]["accountId"] == user.ledger_account_id


async def test_a_new_rpc_is_routed_and_its_upstream_answers_unimplemented(
    augmented_edge: Edge, edge: Edge, bearer: Callable[..., dict[str, str]]
) -> None:
    headers = bearer("ops-1", roles=OPERATOR)
    path = f"/v1/test/ledger_accounts/{uuid.uuid4()}:seal"
    response = await augmented_edge.http.post(path, json={}, headers=headers)
    assert response.status_code == 501, response.text
    assert response.json()["code"] == 12
    # The gateway built from gen/ alone has no such route.
    assert (await edge.http.post(path, json={}, headers=headers)).status_code == 404
    routes = {route.rpc.full_name for route in augmented_edge.gateway.router}
    assert "finmesh.ledger.v1.LedgerService.SealLedgerAccount" in routes
