"""Deposits on a real Hardhat node through the real chain gateway, ledger and account service:
pending while confirming, credited exactly once at depth, redeliveries without effect, small
deposits and unknown tokens recorded but not credited."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from finmesh.deposit.v1 import deposit_resources_pb2 as resources
from finmesh.deposit.v1 import deposit_service_pb2 as service
from finmesh.events.v1 import deposit_events_pb2
from google.protobuf import field_mask_pb2
from web3 import AsyncWeb3

from svc.kit.bus import BusMessage
from svc.kit.consumer import event_class
from svc.kit.outbox import HEADER_EVENT_ID, HEADER_EVENT_TYPE

from .conftest import (
    CHAIN,
    DEPTH,
    ETHER,
    NATIVE,
    TOKEN_ASSET,
    Mesh,
    Token,
    eventually,
    funded_account,
    mine,
    refused,
    send_native,
    send_token,
)

CONFIRMING = resources.DEPOSIT_STATE_CONFIRMING
CREDITED = resources.DEPOSIT_STATE_CREDITED


async def _configure(mesh: Mesh, symbol: str, **values: Any) -> resources.DepositConfig:
    """UpdateDepositConfig (creating if missing) of the fields given; `version` is sent, not masked."""
    fields = {"minimum_amount": "0", "sweep_threshold": "0", **values}
    response = await mesh.deposits.UpdateDepositConfig(
        service.UpdateDepositConfigRequest(
            request_id=f"config-{uuid.uuid4().hex}",
            config=resources.DepositConfig(chain=CHAIN, symbol=symbol, **fields),
            update_mask=field_mask_pb2.FieldMask(paths=[name for name in values if name != "version"]),
            allow_missing=True,
        ),
        metadata=mesh.staff("admin-1", "admin"),
    )
    return response.config


@pytest.mark.embedded
async def test_native_deposit_is_pending_then_credited_once_at_depth(
    mesh: Mesh, web3: AsyncWeb3[Any]
) -> None:
    user = await mesh.new_user()
    address = await mesh.deposit_address(user)
    sender = await funded_account(web3)
    tx_hash, _ = await send_native(web3, sender, address, 3 * ETHER)

    pending = await mesh.one_deposit(user, CONFIRMING)
    assert (pending.tx_hash, pending.log_index, pending.to_address) == (tx_hash, -1, address)
    assert pending.amount.asset == NATIVE and pending.amount.amount == str(3 * ETHER)
    assert pending.required_confirmations == DEPTH and pending.confirmations < DEPTH
    assert pending.user_id == user and not pending.credit_entry_id
    await mesh.settled_balance(user, total="0", pending_incoming=str(3 * ETHER))

    await mine(web3, DEPTH)
    credited = await mesh.one_deposit(user, CREDITED)
    assert credited.credit_entry_id and credited.confirmations >= DEPTH and credited.HasField("credit_time")
    await mesh.settled_balance(user, total=str(3 * ETHER), available=str(3 * ETHER), pending_incoming="0")
    custody = await mesh.ledger_balance(f"assets:custody:deposit:{address}:{NATIVE}")
    assert custody.debits_posted == str(3 * ETHER) and custody.credits_posted == "0"

    got = await mesh.deposits.GetDeposit(
        service.GetDepositRequest(deposit_id=credited.deposit_id), metadata=mesh.user(user)
    )
    assert got.deposit.state == CREDITED
    await refused(
        mesh.deposits.GetDeposit(
            service.GetDepositRequest(deposit_id=credited.deposit_id), metadata=mesh.user(str(uuid.uuid4()))
        ),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    kinds = [
        type(event).__name__
        for event_type in (deposit_events_pb2.DepositDetected, deposit_events_pb2.DepositCredited)
        for event in await mesh.events(event_type)
    ]
    assert kinds == ["DepositDetected", "DepositCredited"]
    [credit_event] = await mesh.events(deposit_events_pb2.DepositCredited)
    assert credit_event.meta.aggregate_version == credit_event.deposit.version == credited.version


async def test_erc20_deposit_is_credited_once(mesh: Mesh, web3: AsyncWeb3[Any], token: Token) -> None:
    user = await mesh.new_user()
    address = await mesh.deposit_address(user)
    tx_hash = await send_token(web3, token, address, 2_500_000)
    pending = await mesh.one_deposit(user, CONFIRMING)
    assert pending.tx_hash == tx_hash and pending.log_index >= 0
    assert (pending.amount.asset, pending.amount.amount) == (TOKEN_ASSET, "2500000")
    await mine(web3, DEPTH)
    await mesh.one_deposit(user, CREDITED)
    await mesh.settled_balance(user, TOKEN_ASSET, total="2500000", pending_incoming="0")


async def test_redelivered_transfer_events_do_not_credit_twice(mesh: Mesh, web3: AsyncWeb3[Any]) -> None:
    user = await mesh.new_user()
    address = await mesh.deposit_address(user)
    sender = await funded_account(web3)
    await send_native(web3, sender, address, ETHER)
    await mine(web3, DEPTH)
    credited = await mesh.one_deposit(user, CREDITED)

    # The bus delivers at least once: every transfer event again, as a new delivery under a new
    # event id (a producer's retry after a lost acknowledgement), and the originals once more.
    originals = [
        message for message in mesh.bus.messages("finmesh.chain_gateway.v1.transfers")
        if address in message.value.decode("latin-1")
    ]  # fmt: skip
    assert len(originals) >= 2
    replays = []
    for message in originals:
        event_type = message.headers[HEADER_EVENT_TYPE]
        replays.append(
            BusMessage(
                topic=message.topic, key=message.key, value=message.value, headers=dict(message.headers)
            )
        )
        event = event_class(event_type).FromString(message.value)
        event.meta.event_id = str(uuid.uuid4())  # type: ignore[attr-defined]
        headers = {**message.headers, HEADER_EVENT_ID: event.meta.event_id}  # type: ignore[attr-defined]
        replays.append(
            BusMessage(topic=message.topic, key=message.key, value=event.SerializeToString(), headers=headers)
        )
    await mesh.bus.publish(replays)
    consumer_done = len(mesh.bus.messages("finmesh.chain_gateway.v1.transfers"))

    async def consumed() -> bool:
        return mesh.bus.committed("deposit-transfers", "finmesh.chain_gateway.v1.transfers") >= consumer_done

    await eventually(consumed)
    [again] = await mesh.deposits_of(user)
    assert again.state == CREDITED and again.version == credited.version
    assert (await mesh.settled_balance(user, total=str(ETHER))).pending_incoming == "0"
    assert len(await mesh.events(deposit_events_pb2.DepositCredited)) == 1


async def test_below_minimum_and_unknown_token_are_recorded_not_credited(
    mesh: Mesh, web3: AsyncWeb3[Any], unknown_token: Token
) -> None:
    config = await _configure(mesh, "ETH", minimum_amount=str(ETHER // 100))
    assert (config.asset, config.minimum_amount, config.version) == (NATIVE, str(ETHER // 100), 1)
    listed = await mesh.deposits.ListDepositConfigs(service.ListDepositConfigsRequest(chain=CHAIN))
    assert [c.asset for c in listed.configs] == [NATIVE]

    small_user, unknown_user = await mesh.new_user(), await mesh.new_user()
    small_address = await mesh.deposit_address(small_user)
    sender = await funded_account(web3)
    await send_native(web3, sender, small_address, ETHER // 1000)
    small = await mesh.one_deposit(small_user, resources.DEPOSIT_STATE_BELOW_MINIMUM)
    assert small.minimum_amount == str(ETHER // 100) and small.amount.amount == str(ETHER // 1000)

    other = unknown_token
    unknown_address = await mesh.deposit_address(unknown_user)
    await send_token(web3, other, unknown_address, 777)
    unknown = await mesh.one_deposit(unknown_user, resources.DEPOSIT_STATE_UNKNOWN_TOKEN)
    assert not unknown.HasField("amount")
    assert (unknown.unknown_token.contract_address, unknown.unknown_token.raw_amount) == (
        other.address,
        "777",
    )

    await mine(web3, DEPTH + 1)
    await eventually(lambda: _idle(mesh))
    assert (await mesh.deposits_of(small_user))[0].state == resources.DEPOSIT_STATE_BELOW_MINIMUM
    assert (await mesh.deposits_of(unknown_user))[0].state == resources.DEPOSIT_STATE_UNKNOWN_TOKEN
    not_credited = await mesh.events(deposit_events_pb2.DepositNotCredited)
    assert {event.deposit.state for event in not_credited} == {
        resources.DEPOSIT_STATE_BELOW_MINIMUM,
        resources.DEPOSIT_STATE_UNKNOWN_TOKEN,
    }
    assert await mesh.events(deposit_events_pb2.DepositCredited) == []
    assert (await mesh.accounts_of(small_user)) == [] and (await mesh.accounts_of(unknown_user)) == []

    # Operators page through every user's deposits, newest first; a token is bound to its filters.
    support = mesh.staff("support-1", "support")
    first = await mesh.deposits.AdminListDeposits(
        service.AdminListDepositsRequest(page_size=1), metadata=support
    )
    second = await mesh.deposits.AdminListDeposits(
        service.AdminListDepositsRequest(page_size=1, page_token=first.next_page_token), metadata=support
    )
    assert [d.user_id for d in (*first.deposits, *second.deposits)] == [unknown_user, small_user]
    assert not second.next_page_token
    await refused(
        mesh.deposits.AdminListDeposits(
            service.AdminListDepositsRequest(page_size=1, page_token=first.next_page_token, chain=CHAIN),
            metadata=support,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    only_small = await mesh.deposits.AdminListDeposits(
        service.AdminListDepositsRequest(states=[resources.DEPOSIT_STATE_BELOW_MINIMUM]), metadata=support
    )
    assert [d.to_address for d in only_small.deposits] == [small_address]
    got = await mesh.deposits.AdminGetDeposit(
        service.AdminGetDepositRequest(deposit_id=unknown.deposit_id), metadata=support
    )
    assert got.deposit.state == resources.DEPOSIT_STATE_UNKNOWN_TOKEN


async def _idle(mesh: Mesh) -> bool:
    transfers = "finmesh.chain_gateway.v1.transfers"
    return mesh.bus.committed("deposit-transfers", transfers) >= len(mesh.bus.messages(transfers))


async def test_config_rules(mesh: Mesh) -> None:
    await refused(
        _configure(mesh, "NOPE", minimum_amount="1"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    await refused(
        _configure(mesh, "ETH", confirmation_depth=DEPTH - 1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        mesh.deposits.UpdateDepositConfig(
            service.UpdateDepositConfigRequest(
                request_id=f"config-{uuid.uuid4().hex}",
                config=resources.DepositConfig(
                    chain=CHAIN, symbol="ETH", minimum_amount="5", sweep_threshold="0"
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["minimum_amount"]),
                allow_missing=True,
            ),
            metadata=mesh.user(str(uuid.uuid4())),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    first = await _configure(mesh, "ETH", confirmation_depth=DEPTH + 2)
    assert first.version == 1 and first.confirmation_depth == DEPTH + 2 and first.minimum_amount == "0"
    second = await _configure(mesh, "ETH", sweep_threshold="1000", version=1)
    assert second.version == 2 and second.confirmation_depth == DEPTH + 2 and second.sweep_threshold == "1000"
    await refused(_configure(mesh, "ETH", minimum_amount="1", version=1), grpc.StatusCode.ABORTED, "CONFLICT")
