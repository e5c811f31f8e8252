"""The web activity list through the gRPC contract: the caller's balance movements over every
account (real account and ledger services), merged newest first, filtered, and paged with one
cursor per account; activity arriving between pages never shifts or repeats a page."""

from __future__ import annotations

import grpc
from finmesh.web_bff.v1 import web_bff_service_pb2 as web

from svc.kit.aggregate import SectionState
from tests.harness.bff_mesh import BffStarter, Downstream, register_caller
from tests.harness.calls import refused
from tests.harness.identity import free_port


async def all_pages(stub: object, metadata: object, **filters: object) -> list[list[web.ActivityItem]]:
    pages, token = [], ""
    while True:
        response = await stub.ListActivity(  # type: ignore[attr-defined]
            web.ListActivityRequest(page_token=token, **filters), metadata=metadata
        )
        assert [(s.section, s.state) for s in response.sections] == [(web.SECTION_ACTIVITY, SectionState.OK)]
        pages.append(list(response.items))
        token = response.next_page_token
        if not token:
            return pages


async def test_pages_merge_every_account(downstream: Downstream, web_bff: BffStarter) -> None:
    caller = await register_caller(downstream)
    for amount in (1, 2, 3):
        await downstream.deposit(caller.user_id, "ethereum:ETH", amount)
    for amount in (10, 20):
        await downstream.deposit(caller.user_id, "ethereum:USDC", amount)
    stub = await web_bff()

    whole = (await stub.ListActivity(web.ListActivityRequest(), metadata=caller.metadata)).items
    assert [item.amount.amount for item in whole] == ["20", "10", "3", "2", "1"]
    pages = await all_pages(stub, caller.metadata, page_size=2)
    assert [[item.amount.amount for item in page] for page in pages] == [["20", "10"], ["3", "2"], ["1"]]
    assert [item.activity_id for page in pages for item in page] == [item.activity_id for item in whole]

    usdc = await all_pages(stub, caller.metadata, asset="ethereum:USDC")
    assert [item.amount.amount for page in usdc for item in page] == ["20", "10"]
    none = await all_pages(stub, caller.metadata, kinds=[web.ACTIVITY_KIND_WITHDRAWAL])
    assert none == [[]]


async def test_new_activity_between_pages_is_not_repeated(
    downstream: Downstream, web_bff: BffStarter
) -> None:
    caller = await register_caller(downstream)
    for amount in (1, 2, 3):
        await downstream.deposit(caller.user_id, "ethereum:ETH", amount)
    stub = await web_bff()
    first = await stub.ListActivity(web.ListActivityRequest(page_size=2), metadata=caller.metadata)
    assert [item.amount.amount for item in first.items] == ["3", "2"]
    await downstream.deposit(caller.user_id, "ethereum:ETH", 4)
    second = await stub.ListActivity(
        web.ListActivityRequest(page_size=2, page_token=first.next_page_token), metadata=caller.metadata
    )
    assert [item.amount.amount for item in second.items] == ["1"] and not second.next_page_token


async def test_tokens_and_filters_are_checked(downstream: Downstream, web_bff: BffStarter) -> None:
    caller = await register_caller(downstream)
    for amount in (1, 2):
        await downstream.deposit(caller.user_id, "ethereum:ETH", amount)
    stub = await web_bff()
    first = await stub.ListActivity(web.ListActivityRequest(page_size=1), metadata=caller.metadata)
    assert first.next_page_token
    await refused(
        stub.ListActivity(
            web.ListActivityRequest(page_size=1, page_token=first.next_page_token, asset="ethereum:USDC"),
            metadata=caller.metadata,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        stub.ListActivity(web.ListActivityRequest(page_token="not-a-token"), metadata=caller.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    later = web.ListActivityRequest()
    later.occur_time_from.FromSeconds(2_000_000_000)
    later.occur_time_to.FromSeconds(1_000_000_000)
    await refused(
        stub.ListActivity(later, metadata=caller.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_account_down_leaves_the_list_missing(downstream: Downstream, web_bff: BffStarter) -> None:
    caller = await register_caller(downstream)
    await downstream.deposit(caller.user_id, "ethereum:ETH", 1)
    stub = await web_bff(endpoints={"account": f"127.0.0.1:{free_port()}"})
    response = await stub.ListActivity(web.ListActivityRequest(), metadata=caller.metadata)
    assert not response.items and not response.next_page_token
    assert [(s.section, s.state, s.message) for s in response.sections] == [
        (web.SECTION_ACTIVITY, SectionState.UNAVAILABLE, "account is unavailable")
    ]
