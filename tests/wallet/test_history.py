"""The unified history through ListWalletTransactions: deposits and withdrawals projected from the
deposit and withdraw services' events (their public contract, published here on the bus as their
services publish them), next to internal transfers; statuses mapped from the sources' states,
stale and redelivered events without effect, filters and pagination."""

from __future__ import annotations

import time
import uuid
from typing import Any

import grpc
from finmesh.common.v1 import money_pb2
from finmesh.deposit.v1 import deposit_resources_pb2 as deposits
from finmesh.events.v1 import deposit_events_pb2, event_meta_pb2, withdraw_events_pb2
from finmesh.wallet.v1 import wallet_resources_pb2 as resources
from finmesh.wallet.v1 import wallet_service_pb2 as service
from finmesh.withdraw.v1 import withdraw_resources_pb2 as withdrawals
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from tests.harness.calls import eventually, refused
from tests.wallet.conftest import CHAIN, NATIVE, Mesh

SENDER = "0x" + "5e" * 20
DESTINATION = "0x" + "de" * 20
# The events of this history happened an hour ago, so that anything done now is newer than all of them.
BASE_US = int(time.time() * 1_000_000) - 3_600 * 1_000_000


def stamp(offset_s: int) -> timestamp_pb2.Timestamp:
    value = timestamp_pb2.Timestamp()
    value.FromMicroseconds(BASE_US + offset_s * 1_000_000)
    return value


def deposit(
    user_id: str, deposit_id: str, state: int, version: int, *, seen_s: int = 0, **fields: Any
) -> deposits.Deposit:
    values: dict[str, Any] = {
        "deposit_id": deposit_id,
        "user_id": user_id,
        "wallet_id": str(uuid.uuid4()),
        "chain": CHAIN,
        "tx_hash": "0x" + uuid.uuid4().hex * 2,
        "log_index": -1,
        "from_address": SENDER,
        "to_address": "0x" + "aa" * 20,
        "amount": money_pb2.Money(asset=NATIVE, amount="1000"),
        "state": state,
        "confirmations": 1,
        "required_confirmations": 2,
        "seen_time": stamp(seen_s),
        "update_time": stamp(seen_s + version),
        "version": version,
    }
    values.update(fields)
    return deposits.Deposit(**values)


def withdrawal(
    user_id: str, withdrawal_id: str, state: int, version: int, *, created_s: int = 0, **fields: Any
) -> withdrawals.Withdrawal:
    values: dict[str, Any] = {
        "withdrawal_id": withdrawal_id,
        "user_id": user_id,
        "request_id": "w-" + withdrawal_id,
        "chain": CHAIN,
        "amount": money_pb2.Money(asset=NATIVE, amount="700"),
        "fee": money_pb2.Money(asset=NATIVE, amount="21"),
        "destination": money_pb2.ChainAddress(chain=CHAIN, address=DESTINATION),
        "state": state,
        "required_confirmations": 2,
        "create_time": stamp(created_s),
        "update_time": stamp(created_s + version),
        "version": version,
    }
    values.update(fields)
    return withdrawals.Withdrawal(**values)


def meta(aggregate: str, aggregate_id: str, version: int) -> event_meta_pb2.EventMeta:
    return event_meta_pb2.EventMeta(
        aggregate_type=aggregate, aggregate_id=aggregate_id, aggregate_version=version
    )


async def listing(
    mesh: Mesh, user_id: str, page_size: int = 0, **filters: Any
) -> list[resources.WalletTransaction]:
    found: list[resources.WalletTransaction] = []
    token = ""
    while True:
        response = await mesh.wallets.ListWalletTransactions(
            service.ListWalletTransactionsRequest(
                user_id="me", chain="-", page_size=page_size, page_token=token, **filters
            ),
            metadata=mesh.user(user_id),
        )
        assert not page_size or len(response.transactions) <= page_size
        found += response.transactions
        token = response.next_page_token
        if not token:
            return found


async def settled(
    mesh: Mesh, user_id: str, expected: dict[str, tuple[int, int]]
) -> dict[str, resources.WalletTransaction]:
    """Waits until the user's history holds exactly these entries: entry id -> (status, source version)."""
    latest: dict[str, resources.WalletTransaction] = {}

    async def check() -> bool:
        nonlocal latest
        latest = {entry.entry_id: entry for entry in await listing(mesh, user_id)}
        return {key: entry.status for key, entry in latest.items()} == {
            key: value[0] for key, value in expected.items()
        }

    await eventually(check)
    return latest


async def published(mesh: Mesh, *events: Message) -> None:
    for event in events:
        await mesh.publish(event)


async def test_deposits_and_withdrawals_are_projected_from_their_events(mesh: Mesh) -> None:
    alice, bob = await mesh.register(), await mesh.register()
    user = alice.user_id
    d1, d2, d3, w1, w2 = (str(uuid.uuid4()) for _ in range(5))
    await published(
        mesh,
        deposit_events_pb2.DepositDetected(
            meta=meta("deposit", d1, 1),
            deposit=deposit(user, d1, deposits.DEPOSIT_STATE_PENDING, 1, seen_s=1),
        ),
        deposit_events_pb2.DepositNotCredited(
            meta=meta("deposit", d2, 1),
            deposit=deposit(
                user, d2, deposits.DEPOSIT_STATE_BELOW_MINIMUM, 1, seen_s=2, minimum_amount="5000"
            ),
        ),
        withdraw_events_pb2.WithdrawalRequested(
            meta=meta("withdrawal", w1, 1),
            withdrawal=withdrawal(user, w1, withdrawals.WITHDRAWAL_STATE_REQUESTED, 1, created_s=3),
        ),
        deposit_events_pb2.DepositDetected(
            meta=meta("deposit", d3, 1),
            deposit=deposit(bob.user_id, d3, deposits.DEPOSIT_STATE_PENDING, 1, seen_s=4),
        ),
    )
    PENDING, COMPLETED = (
        resources.WALLET_TRANSACTION_STATUS_PENDING,
        resources.WALLET_TRANSACTION_STATUS_COMPLETED,
    )
    entries = await settled(
        mesh,
        user,
        {
            f"deposit:{d1}": (PENDING, 1),
            f"deposit:{d2}": (resources.WALLET_TRANSACTION_STATUS_NOT_CREDITED, 1),
            f"withdrawal:{w1}": (PENDING, 1),
        },
    )
    pending = entries[f"deposit:{d1}"]
    assert pending.kind == resources.WALLET_TRANSACTION_KIND_DEPOSIT and pending.source_id == d1
    assert pending.source_state == "DEPOSIT_STATE_PENDING" and pending.address == SENDER
    assert (pending.confirmations, pending.required_confirmations) == (1, 2) and not pending.HasField(
        "complete_time"
    )
    assert pending.amount == money_pb2.Money(asset=NATIVE, amount="1000") and pending.create_time == stamp(1)
    requested = entries[f"withdrawal:{w1}"]
    assert requested.kind == resources.WALLET_TRANSACTION_KIND_WITHDRAWAL and requested.address == DESTINATION
    assert requested.amount.amount == "700" and requested.fee == money_pb2.Money(asset=NATIVE, amount="21")
    assert entries[f"deposit:{d2}"].HasField("complete_time")

    # Later states replace earlier ones; an older state arriving late, or a redelivery, changes nothing.
    credited = deposit(
        user, d1, deposits.DEPOSIT_STATE_CREDITED, 3, seen_s=1, confirmations=2, credit_time=stamp(9)
    )
    redelivered = await mesh.publish(
        deposit_events_pb2.DepositCredited(meta=meta("deposit", d1, 3), deposit=credited)
    )
    await published(
        mesh,
        deposit_events_pb2.DepositDetected(
            meta=meta("deposit", d1, 2),
            deposit=deposit(user, d1, deposits.DEPOSIT_STATE_CONFIRMING, 2, seen_s=1),
        ),
        withdraw_events_pb2.WithdrawalConfirmed(
            meta=meta("withdrawal", w1, 6),
            withdrawal=withdrawal(
                user, w1, withdrawals.WITHDRAWAL_STATE_CONFIRMED, 6, created_s=3, tx_hash="0x" + "77" * 32,
                confirmations=2, complete_time=stamp(20),
            ),
        ),
        withdraw_events_pb2.WithdrawalRejected(
            meta=meta("withdrawal", w2, 2),
            withdrawal=withdrawal(user, w2, withdrawals.WITHDRAWAL_STATE_REJECTED, 2, created_s=5),
        ),
    )  # fmt: skip
    await mesh.publish(
        deposit_events_pb2.DepositDetected(
            meta=meta("deposit", d1, 1),
            deposit=deposit(user, d1, deposits.DEPOSIT_STATE_PENDING, 1, seen_s=1),
        ),
        event_id=redelivered,
    )
    entries = await settled(
        mesh,
        user,
        {
            f"deposit:{d1}": (COMPLETED, 3),
            f"deposit:{d2}": (resources.WALLET_TRANSACTION_STATUS_NOT_CREDITED, 1),
            f"withdrawal:{w1}": (COMPLETED, 6),
            f"withdrawal:{w2}": (resources.WALLET_TRANSACTION_STATUS_REJECTED, 2),
        },
    )
    # A marker event after the stale ones: once it is projected, so were they (one partition, in order).
    marker = str(uuid.uuid4())
    await mesh.publish(
        deposit_events_pb2.DepositFrozen(
            meta=meta("deposit", marker, 1),
            deposit=deposit(user, marker, deposits.DEPOSIT_STATE_FROZEN, 1, seen_s=6),
        )
    )
    entries = await settled(
        mesh,
        user,
        {
            f"deposit:{d1}": (COMPLETED, 3),
            f"deposit:{d2}": (resources.WALLET_TRANSACTION_STATUS_NOT_CREDITED, 1),
            f"withdrawal:{w1}": (COMPLETED, 6),
            f"withdrawal:{w2}": (resources.WALLET_TRANSACTION_STATUS_REJECTED, 2),
            f"deposit:{marker}": (resources.WALLET_TRANSACTION_STATUS_ON_HOLD, 1),
        },
    )
    done = entries[f"deposit:{d1}"]
    assert done.source_state == "DEPOSIT_STATE_CREDITED" and done.complete_time == stamp(9)
    confirmed = entries[f"withdrawal:{w1}"]
    assert (
        confirmed.tx_hash == "0x" + "77" * 32
        and confirmed.complete_time == stamp(20)
        and confirmed.confirmations == 0
    )
    # Bob sees only his own deposit.
    assert [entry.entry_id for entry in await listing(mesh, bob.user_id)] == [f"deposit:{d3}"]

    # Newest first across kinds, with an internal transfer among them; filters; pages.
    await mesh.fund(bob.user_id, 50)
    transfer = (await mesh.transfer(bob.user_id, 50, to_user_id=user)).transfer
    everything = await listing(mesh, user)
    assert everything[0].entry_id == f"internal_transfer_in:{transfer.transfer_id}"
    assert [entry.create_time.ToMicroseconds() for entry in everything] == sorted(
        (entry.create_time.ToMicroseconds() for entry in everything), reverse=True
    )
    assert [entry.entry_id for entry in await listing(mesh, user, page_size=2)] == [
        entry.entry_id for entry in everything
    ]
    only_deposits = await listing(mesh, user, kinds=[resources.WALLET_TRANSACTION_KIND_DEPOSIT])
    assert [entry.entry_id for entry in only_deposits] == [
        f"deposit:{marker}",
        f"deposit:{d2}",
        f"deposit:{d1}",
    ]
    completed = await listing(
        mesh, user, statuses=[COMPLETED], kinds=[resources.WALLET_TRANSACTION_KIND_WITHDRAWAL]
    )
    assert [entry.entry_id for entry in completed] == [f"withdrawal:{w1}"]
    window = await listing(mesh, user, create_after=stamp(2), create_before=stamp(5))
    assert [entry.entry_id for entry in window] == [f"withdrawal:{w1}", f"deposit:{d2}"]
    assert await listing(mesh, user, asset="local:USDC") == []
    first = await mesh.wallets.ListWalletTransactions(
        service.ListWalletTransactionsRequest(user_id=user, chain="-", page_size=1)
    )
    await refused(
        mesh.wallets.ListWalletTransactions(
            service.ListWalletTransactionsRequest(
                user_id=user,
                chain="-",
                page_size=1,
                page_token=first.next_page_token,
                kinds=[resources.WALLET_TRANSACTION_KIND_DEPOSIT],
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
