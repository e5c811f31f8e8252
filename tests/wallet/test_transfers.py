"""Internal transfers and balances through the gRPC contract, against the real ledger, account and
user services: instant posting, idempotency, refusals that leave nothing behind, reversal by a
correcting ledger entry, the events and the history entries of both users."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from finmesh.common.v1 import money_pb2
from finmesh.events.v1 import wallet_events_pb2
from finmesh.ledger.v1 import ledger_service_pb2 as ledger_service
from finmesh.user.v1 import user_service_pb2 as user_service
from finmesh.wallet.v1 import wallet_resources_pb2 as resources
from finmesh.wallet.v1 import wallet_service_pb2 as service

from svc.chain_gateway.config import EMBEDDED_TOKEN
from tests.harness.calls import refused
from tests.wallet.conftest import CHAIN, NATIVE, Mesh, rid

PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND
COMPLETED = resources.INTERNAL_TRANSFER_STATE_COMPLETED
REVERSED = resources.INTERNAL_TRANSFER_STATE_REVERSED


def reverse_request(transfer_id: str, request_id: str = "") -> service.ReverseInternalTransferRequest:
    return service.ReverseInternalTransferRequest(
        request_id=request_id or rid("reverse"),
        transfer_id=transfer_id,
        reason="sent to the wrong user",
        approval_id="approval-1",
        actor_id="00000000-0000-4000-8000-000000000001",
    )


async def history(mesh: Mesh, user_id: str, **filters: object) -> list[resources.WalletTransaction]:
    response = await mesh.wallets.ListWalletTransactions(
        service.ListWalletTransactionsRequest(user_id=user_id, chain="-", **filters)  # type: ignore[arg-type]
    )
    return list(response.transactions)


async def test_a_transfer_moves_funds_once_and_instantly(mesh: Mesh) -> None:
    alice = await mesh.register(email="Alice.Sender@example.com")
    bob = await mesh.register(phone="+4915112345678")
    await mesh.fund(alice.user_id, 1_000)
    request_id = rid("transfer")
    sent = await mesh.transfer(
        alice.user_id, 300, request_id=request_id, memo="lunch", to_phone="+4915112345678"
    )
    transfer = sent.transfer
    assert transfer.state == COMPLETED and transfer.amount.amount == "300" and transfer.amount.asset == NATIVE
    assert (transfer.from_user_id, transfer.to_user_id) == (alice.user_id, bob.user_id)
    assert transfer.from_display == "a***@example.com" and transfer.to_display == "+49*******5678"
    assert transfer.memo == "lunch" and transfer.ledger_entry_id and not transfer.reversal_entry_id

    # Posted in the ledger as one entry; the recipient's account was opened for it.
    entry = (
        await mesh.ledger.GetJournalEntry(
            ledger_service.GetJournalEntryRequest(entry_id=transfer.ledger_entry_id)
        )
    ).entry
    assert sorted((posting.side, posting.amount) for posting in entry.postings) == [(1, "300"), (2, "300")]
    sender, recipient = await mesh.balance(alice.user_id), await mesh.balance(bob.user_id)
    assert (sender.available, sender.total, recipient.available, recipient.total) == (
        "700",
        "700",
        "300",
        "300",
    )
    assert (
        sender.as_of_sequence >= entry.sequence
        and sender.asset.symbol == "ETH"
        and sender.asset.decimals == 18
    )

    # The same request replays without moving funds again; other content under it is refused.
    assert (
        await mesh.transfer(alice.user_id, 300, request_id=request_id, memo="lunch", to_phone=bob.phone)
        == sent
    )
    await refused(
        mesh.transfer(alice.user_id, 301, request_id=request_id, memo="lunch", to_phone=bob.phone),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert (await mesh.available(alice.user_id), await mesh.available(bob.user_id)) == (700, 300)

    # Both users see it; a third user does not.
    carol = await mesh.register()
    for user in (alice, bob):
        got = await mesh.wallets.GetInternalTransfer(
            service.GetInternalTransferRequest(user_id="me", chain=CHAIN, transfer_id=transfer.transfer_id),
            metadata=mesh.user(user.user_id),
        )
        assert got.transfer == transfer
    await refused(
        mesh.wallets.GetInternalTransfer(
            service.GetInternalTransferRequest(user_id="me", chain="-", transfer_id=transfer.transfer_id),
            metadata=mesh.user(carol.user_id),
        ),
        NOT_FOUND,
        "NOT_FOUND",
    )
    completed = await mesh.events(wallet_events_pb2.InternalTransferCompleted)
    assert [event.transfer for event in completed] == [transfer]

    # One history entry each, in and out.
    (out,) = await history(mesh, alice.user_id)
    (into,) = await history(mesh, bob.user_id)
    assert out.entry_id == f"internal_transfer_out:{transfer.transfer_id}"
    assert out.kind == resources.WALLET_TRANSACTION_KIND_INTERNAL_TRANSFER_OUT
    assert into.kind == resources.WALLET_TRANSACTION_KIND_INTERNAL_TRANSFER_IN
    for entry_ in (out, into):
        assert entry_.status == resources.WALLET_TRANSACTION_STATUS_COMPLETED and entry_.memo == "lunch"
        assert entry_.amount == transfer.amount and entry_.HasField("complete_time")
    assert (out.counterparty_display, into.counterparty_display) == (
        transfer.to_display,
        transfer.from_display,
    )


async def test_refused_transfers_leave_nothing_behind(mesh: Mesh) -> None:
    alice, bob = await mesh.register(), await mesh.register()
    await mesh.fund(alice.user_id, 500)
    await refused(
        mesh.transfer(alice.user_id, 501, to_user_id=bob.user_id), PRECONDITION, "INSUFFICIENT_FUNDS"
    )
    await refused(mesh.transfer(bob.user_id, 1, to_user_id=alice.user_id), PRECONDITION, "INSUFFICIENT_FUNDS")
    await refused(mesh.transfer(alice.user_id, 1, to_email="nobody@example.com"), NOT_FOUND, "NOT_FOUND")
    await refused(mesh.transfer(alice.user_id, 1, to_user_id=str(uuid.uuid4())), NOT_FOUND, "NOT_FOUND")
    await refused(
        mesh.transfer(alice.user_id, 1, to_user_id=alice.user_id),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    # The asset must be of the chain in the path, and the amount positive.
    for asset, amount in (("bsc:BNB", "1"), (NATIVE, "0")):
        await refused(
            mesh.wallets.CreateInternalTransfer(
                service.CreateInternalTransferRequest(
                    request_id=rid(), user_id="me", chain=CHAIN, to_user_id=bob.user_id,
                    amount=money_pb2.Money(asset=asset, amount=amount),
                ),
                metadata=mesh.user(alice.user_id),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )  # fmt: skip
    # Services may not move a user's funds; an end user only their own.
    await refused(
        mesh.wallets.CreateInternalTransfer(
            service.CreateInternalTransferRequest(
                request_id=rid(),
                user_id=alice.user_id,
                chain=CHAIN,
                to_user_id=bob.user_id,
                amount=money_pb2.Money(asset=NATIVE, amount="1"),
            )
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    await refused(
        mesh.wallets.CreateInternalTransfer(
            service.CreateInternalTransferRequest(
                request_id=rid(),
                user_id=alice.user_id,
                chain=CHAIN,
                to_user_id=bob.user_id,
                amount=money_pb2.Money(asset=NATIVE, amount="1"),
            ),
            metadata=mesh.user(bob.user_id),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    # A frozen recipient is not found (no probing); a frozen sender is refused.
    carol = await mesh.register()
    await mesh.identity.users.FreezeUser(
        user_service.FreezeUserRequest(
            request_id=rid("freeze"),
            user_id=carol.user_id,
            reason=user_service.STATUS_REASON_SECURITY,
            note="t",
        )
    )
    await refused(mesh.transfer(alice.user_id, 1, to_user_id=carol.user_id), NOT_FOUND, "NOT_FOUND")
    await refused(mesh.transfer(carol.user_id, 1, to_user_id=alice.user_id), PRECONDITION, "FROZEN")
    assert (await mesh.available(alice.user_id), await mesh.available(bob.user_id)) == (500, 0)
    listed = await mesh.wallets.ListInternalTransfers(
        service.ListInternalTransfersRequest(user_id=alice.user_id, chain="-")
    )
    assert not listed.transfers
    assert not await mesh.events(wallet_events_pb2.InternalTransferCompleted)
    assert not await history(mesh, alice.user_id)


async def test_a_reversal_is_a_correcting_entry_made_once(mesh: Mesh) -> None:
    alice, bob = await mesh.register(), await mesh.register()
    await mesh.fund(alice.user_id, 1_000)
    transfer = (await mesh.transfer(alice.user_id, 400, to_user_id=bob.user_id)).transfer
    await refused(
        mesh.wallets.ReverseInternalTransfer(
            reverse_request(transfer.transfer_id), metadata=mesh.user(alice.user_id, "admin")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    request = reverse_request(transfer.transfer_id)
    reversed_ = (await mesh.wallets.ReverseInternalTransfer(request)).transfer
    assert reversed_.state == REVERSED and reversed_.reversal_entry_id and reversed_.HasField("reverse_time")
    assert reversed_.ledger_entry_id == transfer.ledger_entry_id
    correction = (
        await mesh.ledger.GetJournalEntry(
            ledger_service.GetJournalEntryRequest(entry_id=reversed_.reversal_entry_id)
        )
    ).entry
    assert correction.corrects_entry_id == transfer.ledger_entry_id
    assert (await mesh.available(alice.user_id), await mesh.available(bob.user_id)) == (1_000, 0)
    assert (await mesh.wallets.ReverseInternalTransfer(request)).transfer == reversed_
    await refused(
        mesh.wallets.ReverseInternalTransfer(reverse_request(transfer.transfer_id)),
        PRECONDITION,
        "INVALID_STATE",
    )
    assert (await mesh.available(alice.user_id), await mesh.available(bob.user_id)) == (1_000, 0)
    (event,) = await mesh.events(wallet_events_pb2.InternalTransferReversed)
    assert (
        event.transfer == reversed_ and event.reason == request.reason and event.actor_id == request.actor_id
    )
    for user in (alice, bob):
        (entry,) = await history(mesh, user.user_id)
        assert entry.status == resources.WALLET_TRANSACTION_STATUS_REVERSED
        assert entry.source_state == "INTERNAL_TRANSFER_STATE_REVERSED"

    # A recipient who spent the funds cannot be reversed: refused, nothing changes.
    second = (await mesh.transfer(alice.user_id, 600, to_user_id=bob.user_id)).transfer
    carol = await mesh.register()
    await mesh.transfer(bob.user_id, 500, to_user_id=carol.user_id)
    await refused(
        mesh.wallets.ReverseInternalTransfer(reverse_request(second.transfer_id)),
        PRECONDITION,
        "INSUFFICIENT_FUNDS",
    )
    got = await mesh.wallets.GetInternalTransfer(
        service.GetInternalTransferRequest(user_id=alice.user_id, chain="-", transfer_id=second.transfer_id)
    )
    assert got.transfer.state == COMPLETED
    assert [await mesh.available(user.user_id) for user in (alice, bob, carol)] == [400, 100, 500]
    await refused(
        mesh.wallets.ReverseInternalTransfer(reverse_request("00000000-0000-4000-8000-000000000009")),
        NOT_FOUND,
        "NOT_FOUND",
    )


async def test_listing_transfers_and_balances(mesh: Mesh) -> None:
    alice, bob = await mesh.register(), await mesh.register()
    await mesh.fund(alice.user_id, 1_000)
    await mesh.fund(bob.user_id, 1_000)
    sent = [
        (await mesh.transfer(alice.user_id, 10 + number, to_user_id=bob.user_id)).transfer
        for number in range(3)
    ]
    received = (await mesh.transfer(bob.user_id, 5, to_user_id=alice.user_id)).transfer

    async def listing(**filters: object) -> list[str]:
        found: list[str] = []
        token = ""
        while True:
            response = await mesh.wallets.ListInternalTransfers(
                service.ListInternalTransfersRequest(
                    user_id="me",
                    chain=CHAIN,
                    page_size=2,
                    page_token=token,
                    **filters,  # type: ignore[arg-type]
                ),
                metadata=mesh.user(alice.user_id),
            )
            assert len(response.transfers) <= 2
            found += [transfer.transfer_id for transfer in response.transfers]
            token = response.next_page_token
            if not token:
                return found

    newest_first = [transfer.transfer_id for transfer in reversed([*sent, received])]
    assert await listing() == newest_first
    assert await listing(direction=resources.TRANSFER_DIRECTION_OUTGOING) == newest_first[1:]
    assert await listing(direction=resources.TRANSFER_DIRECTION_INCOMING) == [received.transfer_id]
    assert await listing(asset="local:USDC") == []
    first = await mesh.wallets.ListInternalTransfers(
        service.ListInternalTransfersRequest(user_id=alice.user_id, chain=CHAIN, page_size=1)
    )
    await refused(
        mesh.wallets.ListInternalTransfers(
            service.ListInternalTransfersRequest(
                user_id=alice.user_id,
                chain=CHAIN,
                page_size=1,
                page_token=first.next_page_token,
                direction=resources.TRANSFER_DIRECTION_INCOMING,
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    # Balances: only held assets unless zeros are asked for; every chain with `-`.
    held = await mesh.wallets.ListBalances(service.ListBalancesRequest(user_id=alice.user_id, chain="-"))
    assert [(balance.asset.id, balance.available) for balance in held.balances] == [
        (NATIVE, str(1_000 - 33 + 5))
    ]
    with_zero = await mesh.wallets.ListBalances(
        service.ListBalancesRequest(user_id="me", chain=CHAIN, include_zero=True),
        metadata=mesh.user(bob.user_id),
    )
    # Every asset of the chain: its coin and the development token the embedded chain carries.
    assert [balance.asset.id for balance in with_zero.balances] == [
        NATIVE,
        f"{CHAIN}:{EMBEDDED_TOKEN.symbol}",
    ]
    assert with_zero.balances[0].total == str(1_000 + 33 - 5)
    await refused(
        mesh.wallets.ListBalances(
            service.ListBalancesRequest(user_id=bob.user_id, chain=CHAIN), metadata=mesh.user(alice.user_id)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )


async def test_concurrent_transfers_never_overdraw_or_double_post(mesh: Mesh) -> None:
    alice, bob = await mesh.register(), await mesh.register()
    await mesh.fund(alice.user_id, 1_000)
    # The same request ten times at once moves the funds once.
    request_id = rid("transfer")
    same = await asyncio.gather(
        *(mesh.transfer(alice.user_id, 100, request_id=request_id, to_user_id=bob.user_id) for _ in range(10))
    )
    assert all(response == same[0] for response in same)
    assert (await mesh.available(alice.user_id), await mesh.available(bob.user_id)) == (900, 100)
    # Five transfers of 300 at once from 900: three are posted, two refused.
    outcomes = await asyncio.gather(
        *(mesh.transfer(alice.user_id, 300, to_user_id=bob.user_id) for _ in range(5)), return_exceptions=True
    )
    posted = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    refusals = [outcome for outcome in outcomes if isinstance(outcome, grpc.aio.AioRpcError)]
    assert len(posted) == 3 and len(refusals) == 2, outcomes
    assert all(refusal.code() is PRECONDITION for refusal in refusals)
    assert (await mesh.available(alice.user_id), await mesh.available(bob.user_id)) == (0, 1_000)
    listed = await mesh.wallets.ListInternalTransfers(
        service.ListInternalTransfersRequest(user_id=bob.user_id, chain=CHAIN)
    )
    assert len(listed.transfers) == 4
    assert len(await mesh.events(wallet_events_pb2.InternalTransferCompleted)) == 4
