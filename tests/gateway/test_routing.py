"""Routing and transcoding through real HTTP to the real ledger and account services."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from tests.gateway.conftest import ASSET, Edge, Mesh

OPERATOR = ("operator",)


async def test_get_with_path_variable_reaches_the_account_service(
    mesh: Mesh, edge: Edge, bearer: Callable[..., dict[str, str]]
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    account = await mesh.open_account(user)
    entry = await mesh.deposit(account.ledger_account_id, 1234)
    response = await edge.http.get(
        f"/v1/accounts/{account.account_id}/balance",
        params={"minSequence": str(entry.sequence)},
        headers=bearer(user),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accountId"] == account.account_id
    assert body["asset"] == ASSET
    assert body["status"] == "ACCOUNT_STATUS_ACTIVE"
    # uint64 as a string, money as base-unit strings, Timestamp in RFC 3339.
    assert body["balance"]["available"] == "1234"
    assert isinstance(body["balance"]["asOfSequence"], str)
    assert int(body["balance"]["asOfSequence"]) >= entry.sequence
    assert body["balance"]["asOfTime"].endswith("Z")
    assert response.headers["content-type"] == "application/json"


async def test_query_parameters_enums_repeated_and_timestamps(
    mesh: Mesh, edge: Edge, bearer: Callable[..., dict[str, str]]
) -> None:
    headers = bearer("ops-1", roles=OPERATOR)
    response = await edge.http.get(
        "/v1/admin/ledger/accounts",
        params={
            "codePrefix": "assets:custody:hot:gateway-tests",
            "type": "ACCOUNT_TYPE_ASSET",
            "page_size": "5",
        },
        headers=headers,
    )
    assert response.status_code == 200, response.text
    accounts = response.json()["accounts"]
    assert [account["accountId"] for account in accounts] == [mesh.custody_id]
    assert accounts[0]["type"] == "ACCOUNT_TYPE_ASSET"
    # An enum by number, a repeated enum given twice, a time range in RFC 3339.
    entries = await edge.http.get(
        "/v1/admin/ledger/entries",
        params=[
            ("kinds", "1"),
            ("kinds", "ENTRY_KIND_STANDARD"),
            ("startTime", "2020-01-01T00:00:00Z"),
            ("endTime", "2999-01-01T00:00:00Z"),
        ],
        headers=headers,
    )
    assert entries.status_code == 200, entries.text
    assert "entries" in entries.json()


async def test_bad_query_parameters_name_the_field(edge: Edge, bearer: Callable[..., dict[str, str]]) -> None:
    headers = bearer("ops-1", roles=OPERATOR)
    cases = {
        "pageSize=ten": "pageSize",
        "codPrefix=x": "codPrefix",
        "type=ACCOUNT_TYPE_NOPE": "type",
    }
    for query, field in cases.items():
        response = await edge.http.get(f"/v1/admin/ledger/accounts?{query}", headers=headers)
        assert response.status_code == 400, (query, response.text)
        body = response.json()
        assert body["code"] == 3
        violations = next(d for d in body["details"] if d["@type"].endswith("google.rpc.BadRequest"))
        assert violations["fieldViolations"][0]["field"] in (field, "query"), body
    # A field bound by the path cannot be overridden from the query.
    response = await edge.http.get("/v1/accounts/x/balance?accountId=y", headers=headers)
    assert response.status_code == 400
    assert "bound by the path" in response.text


async def test_me_and_end_user_identity_reach_the_service(
    mesh: Mesh, edge: Edge, bearer: Callable[..., dict[str, str]]
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    account = await mesh.open_account(user)
    mine = await edge.http.get("/v1/users/me/accounts", headers=bearer(user))
    assert mine.status_code == 200, mine.text
    assert [item["accountId"] for item in mine.json()["accounts"]] == [account.account_id]
    # Another end user is refused by the account service itself: it saw the forwarded identity.
    theirs = await edge.http.get(f"/v1/users/{user}/accounts", headers=bearer("someone-else"))
    assert theirs.status_code == 403, theirs.text
    assert theirs.json()["details"][0]["reason"] == "PERMISSION_DENIED"
