"""Sweeps after real deposits on a Hardhat node: a native sweep and an ERC-20 sweep with a gas
top-up from the hot wallet, each signed by custody under the deposit service's approvals and
broadcast through the chain gateway; afterwards the books equal the chain, to the base unit, for
every address involved and the hot wallet, and the gas expense is the sum of the fees paid. An
address whose coins on chain are not (yet) in the books is not swept, and a later sweep takes it
once they are."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from finmesh.deposit.v1 import deposit_resources_pb2 as resources
from finmesh.deposit.v1 import deposit_service_pb2 as service
from finmesh.events.v1 import deposit_events_pb2
from google.protobuf import field_mask_pb2
from web3 import AsyncWeb3

from svc.deposit.config import DepositSettings
from svc.deposit.peers import Chains, Custody, Ledger
from svc.deposit.sweeps import Sweeper

from .conftest import (
    CHAIN,
    DEPTH,
    ETHER,
    HOT_FUNDS,
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

CREDITED = resources.DEPOSIT_STATE_CREDITED
TERMINAL = {
    resources.SWEEP_STATE_COMPLETED,
    resources.SWEEP_STATE_PARTIALLY_COMPLETED,
    resources.SWEEP_STATE_FAILED,
}
GAS_CODE = f"expenses:gas:withdrawal:{NATIVE}"


def _custody(address: str, asset: str) -> str:
    return f"assets:custody:deposit:{address}:{asset}"


async def _booked(mesh: Mesh, code: str) -> int:
    """Posted debits less posted credits of a ledger account (0 if it has none yet)."""
    try:
        balance = await mesh.ledger_balance(code)
    except ValueError:
        return 0
    return int(balance.debits_posted) - int(balance.credits_posted)


async def _on_chain(web3: AsyncWeb3[Any], token: Token, address: str, asset: str) -> int:
    checksum = AsyncWeb3.to_checksum_address(address)
    if asset == NATIVE:
        return int(await web3.eth.get_balance(checksum))
    contract = web3.eth.contract(address=AsyncWeb3.to_checksum_address(token.address), abi=token.abi)
    return int(await contract.functions.balanceOf(checksum).call())


async def _fee(web3: AsyncWeb3[Any], tx_hash: str) -> int:
    receipt = await web3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


async def _sweep_done(mesh: Mesh, web3: AsyncWeb3[Any], sweep_id: str) -> resources.Sweep:
    """Mines a block at a time (the gateway confirms at depth) until the sweep has finished."""
    found: list[resources.Sweep] = []
    operator = mesh.staff("operator-1", "operator")

    async def finished() -> bool:
        await mine(web3, 1)
        got = await mesh.deposits.GetSweep(service.GetSweepRequest(sweep_id=sweep_id), metadata=operator)
        found[:] = [got.sweep]
        return got.sweep.state in TERMINAL

    await eventually(finished, 60.0)
    return found[0]


async def _credited(mesh: Mesh, web3: AsyncWeb3[Any], users: list[str]) -> None:
    await mine(web3, DEPTH)
    for user in users:
        await mesh.one_deposit(user, CREDITED)


async def test_native_and_erc20_sweeps_leave_the_books_equal_to_the_chain(
    mesh: Mesh, web3: AsyncWeb3[Any], token: Token
) -> None:
    operator = mesh.staff("operator-1", "operator")
    await mesh.deposits.UpdateDepositConfig(
        service.UpdateDepositConfigRequest(
            request_id=f"config-{uuid.uuid4().hex}",
            config=resources.DepositConfig(
                chain=CHAIN, symbol="ETH", minimum_amount="0", sweep_threshold=str(ETHER)
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["sweep_threshold"]),
            allow_missing=True,
        ),
        metadata=mesh.staff("admin-1", "admin"),
    )
    rich, small, holder = [await mesh.new_user() for _ in range(3)]
    rich_address = await mesh.deposit_address(rich)
    small_address = await mesh.deposit_address(small)
    token_address = await mesh.deposit_address(holder)
    sender = await funded_account(web3)
    await send_native(web3, sender, rich_address, 3 * ETHER)
    await send_native(web3, sender, small_address, ETHER // 10)
    await send_token(web3, token, token_address, 4_000_000)
    await _credited(mesh, web3, [rich, small, holder])

    native_request = service.CreateSweepRequest(
        request_id=f"sweep-{uuid.uuid4().hex}",
        chain=CHAIN,
        asset=NATIVE,
        addresses=[rich_address, small_address],
    )
    await refused(
        mesh.deposits.CreateSweep(native_request, metadata=mesh.staff("support-1", "support")),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    created = (await mesh.deposits.CreateSweep(native_request, metadata=operator)).sweep
    assert (
        created.state == resources.SWEEP_STATE_CREATED and created.trigger == resources.SWEEP_TRIGGER_MANUAL
    )
    assert created.destination_address == mesh.hot_address and created.requested_by == "operator-1"
    assert [(item.address, item.state) for item in created.items] == [
        (rich_address, resources.SWEEP_ITEM_STATE_PENDING),
        (small_address, resources.SWEEP_ITEM_STATE_SKIPPED),
    ]
    again = (await mesh.deposits.CreateSweep(native_request, metadata=operator)).sweep
    assert again.sweep_id == created.sweep_id
    second = service.CreateSweepRequest(request_id=f"sweep-{uuid.uuid4().hex}", chain=CHAIN, asset=NATIVE)
    info = await refused(
        mesh.deposits.CreateSweep(second, metadata=operator), grpc.StatusCode.FAILED_PRECONDITION, "CONFLICT"
    )
    assert info.metadata["sweep_id"] == created.sweep_id
    changed = service.CreateSweepRequest()
    changed.CopyFrom(native_request)
    changed.min_amount = "1"
    await refused(
        mesh.deposits.CreateSweep(changed, metadata=operator),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )

    # The token sweep (another asset: it may run beside the native one) plans from the books: the
    # one address holding the token.
    token_request = service.CreateSweepRequest(
        request_id=f"sweep-{uuid.uuid4().hex}", chain=CHAIN, asset=TOKEN_ASSET
    )
    planned = (await mesh.deposits.CreateSweep(token_request, metadata=operator)).sweep
    assert [(item.address, item.amount.amount) for item in planned.items] == [(token_address, "4000000")]

    native = await _sweep_done(mesh, web3, created.sweep_id)
    assert native.state == resources.SWEEP_STATE_COMPLETED, native
    swept, skipped = native.items
    assert swept.state == resources.SWEEP_ITEM_STATE_CONFIRMED and swept.sweep_tx_hash
    assert skipped.state == resources.SWEEP_ITEM_STATE_SKIPPED and "threshold" in skipped.message
    assert 0 < int(swept.amount.amount) < 3 * ETHER
    assert native.total_amount.amount == swept.amount.amount
    native_fee = await _fee(web3, swept.sweep_tx_hash)
    assert int(native.total_network_fee.amount) == native_fee == int(swept.network_fee.amount)
    assert len(native.ledger_entry_ids) == 2

    erc20 = await _sweep_done(mesh, web3, planned.sweep_id)
    assert erc20.state == resources.SWEEP_STATE_COMPLETED, erc20
    [item] = erc20.items
    assert (
        item.state == resources.SWEEP_ITEM_STATE_CONFIRMED and item.gas_top_up_tx_hash and item.sweep_tx_hash
    )
    top_up = int(item.gas_top_up.amount)
    fees = await _fee(web3, item.gas_top_up_tx_hash) + await _fee(web3, item.sweep_tx_hash)
    assert top_up > 0 and int(item.network_fee.amount) == fees == int(erc20.total_network_fee.amount)
    assert erc20.total_amount.amount == "4000000" and int(erc20.total_gas_top_up.amount) == top_up
    assert len(erc20.ledger_entry_ids) == 4
    # The top-up is the platform's own coin, not a deposit of the address's user.
    assert len(await mesh.deposits_of(holder)) == 1

    # Books = chain, to the base unit, for every address involved and the hot wallet.
    for address, asset in (
        (rich_address, NATIVE),
        (small_address, NATIVE),
        (token_address, NATIVE),
        (token_address, TOKEN_ASSET),
    ):
        assert await _booked(mesh, _custody(address, asset)) == await _on_chain(
            web3, token, address, asset
        ), (
            address,
            asset,
        )
    assert await _on_chain(web3, token, token_address, TOKEN_ASSET) == 0
    hot_native = await _booked(mesh, f"assets:custody:hot:{NATIVE}")
    assert hot_native == await _on_chain(web3, token, mesh.hot_address, NATIVE) - HOT_FUNDS
    assert hot_native == int(swept.amount.amount) - top_up - await _fee(web3, item.gas_top_up_tx_hash)
    assert await _booked(mesh, f"assets:custody:hot:{TOKEN_ASSET}") == 4_000_000
    assert await _on_chain(web3, token, mesh.hot_address, TOKEN_ASSET) == 4_000_000
    assert await _booked(mesh, GAS_CODE) == native_fee + fees

    listed = await mesh.deposits.ListSweeps(
        service.ListSweepsRequest(chain=CHAIN, page_size=1), metadata=operator
    )
    assert [sweep.sweep_id for sweep in listed.sweeps] == [planned.sweep_id] and not listed.sweeps[0].items
    rest = await mesh.deposits.ListSweeps(
        service.ListSweepsRequest(chain=CHAIN, page_size=1, page_token=listed.next_page_token),
        metadata=operator,
    )
    assert [sweep.sweep_id for sweep in rest.sweeps] == [created.sweep_id] and not rest.next_page_token
    finished = await mesh.events(deposit_events_pb2.DepositSweepFinished)
    assert {event.sweep.sweep_id for event in finished} == {created.sweep_id, planned.sweep_id}
    assert len(await mesh.events(deposit_events_pb2.DepositSweepCreated)) == 2
    swept_deposits = await mesh.deposits.AdminListDeposits(
        service.AdminListDepositsRequest(sweep_id=planned.sweep_id), metadata=operator
    )
    assert [deposit.to_address for deposit in swept_deposits.deposits] == [token_address]

    # Coins the books do not show yet (a deposit still confirming): the item fails, nothing moves.
    await send_native(web3, sender, rich_address, ETHER)
    retry = service.CreateSweepRequest(
        request_id=f"sweep-{uuid.uuid4().hex}",
        chain=CHAIN,
        asset=NATIVE,
        addresses=[rich_address],
        min_amount="1",
    )
    failed = await _sweep_done(
        mesh, web3, (await mesh.deposits.CreateSweep(retry, metadata=operator)).sweep.sweep_id
    )
    assert failed.state == resources.SWEEP_STATE_FAILED and not failed.ledger_entry_ids
    assert (
        failed.items[0].state == resources.SWEEP_ITEM_STATE_FAILED and "books show" in failed.items[0].message
    )
    await mine(web3, DEPTH)
    await eventually(lambda: _credit_count(mesh, rich, 2))
    # The schedule's round (what the periodic trigger runs): ETH has settings, its address is over
    # the threshold again; the token has none.
    assert await _scheduler(mesh).schedule_once() == 1
    [scheduled] = (
        await mesh.deposits.ListSweeps(service.ListSweepsRequest(page_size=1), metadata=operator)
    ).sweeps
    assert (scheduled.trigger, scheduled.requested_by) == (resources.SWEEP_TRIGGER_SCHEDULED, "deposit")
    again_swept = await _sweep_done(mesh, web3, scheduled.sweep_id)
    assert again_swept.state == resources.SWEEP_STATE_COMPLETED
    assert [item.address for item in again_swept.items] == [rich_address]
    assert await _booked(mesh, _custody(rich_address, NATIVE)) == await _on_chain(
        web3, token, rich_address, NATIVE
    )
    later_fee = await _fee(web3, again_swept.items[0].sweep_tx_hash)
    assert await _booked(mesh, GAS_CODE) == native_fee + fees + later_fee


def _scheduler(mesh: Mesh) -> Sweeper:
    """A sweeper like the deposit service's, on its database and peers, to run one schedule round."""
    app = mesh.apps["deposit"]
    settings = app.settings
    assert isinstance(settings, DepositSettings)
    ledger, chains, custody = (
        Ledger(mesh.channels[2]),
        Chains(mesh.channels[1], 0.0),
        Custody(mesh.channels[5]),
    )
    return Sweeper(app.database, settings, ledger, chains, custody, can_sign=True)


async def _credit_count(mesh: Mesh, user: str, count: int) -> bool:
    return sum(deposit.state == CREDITED for deposit in await mesh.deposits_of(user)) == count
