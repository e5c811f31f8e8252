"""Executes sweeps, one persisted step of one item at a time, so that a crash anywhere resumes at
the step it was in (on start the executor takes up every unfinished sweep) and no transaction is
ever sent twice:

1. PENDING: the address's balance on chain is compared with its custody account (for a token
   also the native coin that pays the gas); if they differ the item FAILS: what the books do not
   show is never swept. A native sweep sends the balance less the most its gas can cost (SKIPPED
   if that is nothing); a token sweep first needs native coin for gas at the address, else the
   hot wallet sends a top-up (FUNDING_GAS).
2. A transaction (the top-up, then the sweep) is built by the chain gateway (idempotent by
   request id), approved by this service (GAS_TOP_UP, DEPOSIT_SWEEP) and stored; custody signs it
   (idempotent by request id) and the signed bytes and hash are stored BEFORE any broadcast; the
   stored bytes are broadcast, again after a restart (idempotent by hash); then followed until
   the gateway reports them CONFIRMED (at the chain's depth) or FAILED.
3. When an item ends, the ledger entries of what its transactions did are posted in one linked
   batch, every id derived from (sweep, address, purpose) (domain module doc); when every item
   has ended the sweep finishes with its totals and DepositSweepFinished.

A stuck sweep transaction is followed, not replaced (no fee bump yet).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import grpc
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as chain_resources
from finmesh.common.v1 import money_pb2
from finmesh.custody.v1 import custody_resources_pb2 as custody_resources
from finmesh.custody.v1 import custody_service_pb2 as custody_service
from finmesh.events.v1 import deposit_events_pb2
from finmesh.ledger.v1 import ledger_resources_pb2 as ledger_resources

from svc.deposit import domain, events, store
from svc.deposit.config import DepositSettings
from svc.deposit.domain import ItemState, Sweep, SweepItem, SweepState, SweepTransaction, TxPurpose, TxStatus
from svc.deposit.peers import CREDIT, DEBIT, Custody, Gateway, Ledger
from svc.kit import errors, remote
from svc.kit.approvals import ClaimsSigner
from svc.kit.db import Database

log = logging.getLogger(__name__)

SWEEPS_PER_ROUND_MAX = 20
STEPS_PER_ITEM_MAX = 8
MESSAGE_CHARS_MAX = 500
ASSET = ledger_resources.ACCOUNT_TYPE_ASSET
EXPENSE = ledger_resources.ACCOUNT_TYPE_EXPENSE
UNCONSTRAINED = ledger_resources.BALANCE_CONSTRAINT_NONE
FINAL = frozenset({TxStatus.CONFIRMED, TxStatus.FAILED})
# Gateway answers no retry changes: the item fails instead of being retried forever.
PERMANENT_REASONS = frozenset({"INVALID_ARGUMENT", "INVALID_STATE", "INSUFFICIENT_FUNDS"})


def _now_us() -> int:
    return time.time_ns() // 1000


def _fee_per_gas(fees: Any) -> int:
    """The most a transaction (or estimate) pays per gas: EIP-1559 max fee, else the gas price."""
    return int(fees.max_fee_per_gas or fees.gas_price or "0")


class SweepExecutor:
    """The background worker of sweeps (see the module doc)."""

    def __init__(
        self,
        database: Database,
        settings: DepositSettings,
        ledger: Ledger,
        gateway: Gateway,
        custody: Custody,
        signer: ClaimsSigner | None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.ledger = ledger
        self.gateway = gateway
        self.custody = custody
        self.signer = signer

    async def run_once(self) -> int:
        """One round over the unfinished sweeps; returns how many steps were taken."""
        if self.signer is None:
            return 0
        async with self.database.transaction() as session:
            due = await store.unfinished_sweeps(session, SWEEPS_PER_ROUND_MAX)
        steps = 0
        for sweep in due:
            steps += await self.advance(sweep)
        return steps

    async def advance(self, sweep: Sweep) -> int:
        """Moves every unfinished item on as far as it goes now, and finishes the sweep when all
        items have ended."""
        if sweep.state is SweepState.CREATED:
            sweep = await self._start(sweep)
        async with self.database.transaction() as session:
            items = await store.items_of(session, sweep.sweep_id)
        steps = 0
        for item in items:
            current: SweepItem | None = item
            for _ in range(STEPS_PER_ITEM_MAX):
                if current is None or current.state in domain.ITEM_TERMINAL:
                    break
                try:
                    current = await self.step(sweep, current)
                except errors.DomainError as failure:
                    log.warning(
                        "sweep %s item %s not moved on: %s", sweep.sweep_id, item.address, failure.message
                    )
                    break
                except grpc.aio.AioRpcError as failure:
                    log.warning(
                        "sweep %s item %s not moved on: %s", sweep.sweep_id, item.address, failure.details()
                    )
                    break
                steps += 1
        async with self.database.transaction() as session:
            items = await store.items_of(session, sweep.sweep_id)
        if all(item.state in domain.ITEM_TERMINAL for item in items):
            await self._finish(sweep, items)
        return steps

    async def _start(self, sweep: Sweep) -> Sweep:
        async with self.database.transaction() as session:
            current = await store.sweep_by_id(session, sweep.sweep_id, lock=True)
            assert current is not None, sweep.sweep_id
            if current.state is not SweepState.CREATED:
                return current
            running = replace(current, state=SweepState.RUNNING, version=current.version + 1)
            await store.update_sweep(session, running)
            return running

    async def step(self, sweep: Sweep, item: SweepItem) -> SweepItem | None:
        """One persisted step of an item; None when it waits (for the chain)."""
        if item.state is ItemState.PENDING:
            return await self._prepare(sweep, item)
        if item.state is ItemState.FUNDING_GAS:
            return await self._fund(sweep, item)
        if item.state is ItemState.READY:
            return await self._send_sweep(sweep, item)
        if item.state is ItemState.BROADCAST:
            return await self._follow_sweep(sweep, item)
        return None

    # -- records --------------------------------------------------------------------------------

    async def _move(self, item: SweepItem, target: ItemState, **changes: Any) -> SweepItem:
        moved = replace(item, state=domain.transition_item(item, target), **changes)
        async with self.database.transaction() as session:
            await store.update_item(session, moved)
        return moved

    async def _fail(self, sweep: Sweep, item: SweepItem, message: str) -> SweepItem:
        """FAILED, after posting what its transactions already did (a confirmed top-up, fees)."""
        await self._settle(sweep, item)
        log.warning("sweep %s item %s failed: %s", sweep.sweep_id, item.address, message)
        fees = 0
        for purpose in TxPurpose:
            paid = await self._transaction(sweep, item, purpose)
            fees += paid.network_fee if paid is not None else 0
        return await self._move(item, ItemState.FAILED, message=message[:MESSAGE_CHARS_MAX], network_fee=fees)

    async def _transaction(
        self, sweep: Sweep, item: SweepItem, purpose: TxPurpose
    ) -> SweepTransaction | None:
        async with self.database.transaction() as session:
            return await store.transaction_of(session, sweep.sweep_id, item.address, purpose)

    async def _store(self, transaction: SweepTransaction) -> SweepTransaction:
        async with self.database.transaction() as session:
            await store.update_transaction(session, transaction)
        return transaction

    # -- PENDING --------------------------------------------------------------------------------

    async def _booked_equals_chain(self, sweep: Sweep, item: SweepItem, asset: str) -> tuple[int, str]:
        """The address's balance of an asset, and '' if the books show the same, else why not."""
        on_chain = await self.gateway.balance(sweep.chain, item.address, asset)
        account = await self.ledger.custody_account(item.address, asset)
        booked = (await self.ledger.posted_balances([account])).get(account, 0)
        if on_chain != booked:
            return on_chain, (
                f"the address holds {on_chain} of {asset} on chain but the books show {booked}: "
                "not swept until they agree"
            )
        return on_chain, ""

    async def _prepare(self, sweep: Sweep, item: SweepItem) -> SweepItem:
        balance, differs = await self._booked_equals_chain(sweep, item, sweep.asset)
        if differs:
            return await self._move(item, ItemState.FAILED, message=differs)
        if balance == 0:
            return await self._move(item, ItemState.SKIPPED, message="nothing to sweep")
        try:
            estimate = await self.gateway.estimate(
                sweep.chain, item.address, sweep.destination_address, sweep.asset, balance
            )
        except errors.DomainError as refusal:
            if refusal.reason not in PERMANENT_REASONS:
                raise
            return await self._move(
                item, ItemState.FAILED, message=f"cannot estimate the sweep: {refusal.message}"
            )
        if sweep.native:
            value = domain.native_sweep_value(balance, estimate.gas_limit, _fee_per_gas(estimate))
            if value <= 0:
                return await self._move(
                    item, ItemState.SKIPPED, message=f"the gas would cost more than the balance {balance}"
                )
            return await self._move(item, ItemState.READY, amount=value)
        native_balance, differs = await self._booked_equals_chain(sweep, item, sweep.native_asset)
        if differs:
            return await self._move(item, ItemState.FAILED, message=differs)
        top_up = domain.gas_top_up(native_balance, estimate.gas_limit * _fee_per_gas(estimate))
        if top_up == 0:
            return await self._move(item, ItemState.READY, amount=balance)
        built = await self._build(
            sweep, item, TxPurpose.TOP_UP,
            sender=sweep.destination_address, recipient=item.address, asset=sweep.native_asset, amount=top_up,
        )  # fmt: skip
        funding = replace(
            item, state=domain.transition_item(item, ItemState.FUNDING_GAS), amount=balance, gas_top_up=top_up
        )
        return await self._record(
            sweep, item, TxPurpose.TOP_UP, built, recipient=item.address, asset=sweep.native_asset,
            amount=top_up, changed=funding,
        )  # fmt: skip

    # -- transactions ---------------------------------------------------------------------------

    async def _build(
        self, sweep: Sweep, item: SweepItem, purpose: TxPurpose, *, sender: str, recipient: str, asset: str,
        amount: int, fee_cap: int | None = None,
    ) -> Any:  # fmt: skip
        """The gateway's build of a transaction of the item (idempotent by request id)."""
        return await self.gateway.build(
            domain.sweep_step_id(sweep.sweep_id, item.address, f"build.{purpose.name.lower()}"),
            sweep.chain, sender, recipient, asset, amount,
            domain.SWEEP_REFERENCE_PREFIX + sweep.sweep_id,
            min(fee_cap or self.settings.fee_cap_per_gas, self.settings.fee_cap_per_gas),
        )  # fmt: skip

    async def _record(
        self, sweep: Sweep, item: SweepItem, purpose: TxPurpose, built: Any, *, recipient: str, asset: str,
        amount: int, changed: SweepItem,
    ) -> SweepItem:  # fmt: skip
        """Approves a built transaction and stores it with the item's change, in one transaction."""
        assert self.signer is not None
        unsigned: chain_resources.UnsignedTransaction = built.transaction
        claims = custody_resources.ApprovalClaims(
            approval_id=domain.sweep_approval_id(sweep.sweep_id, item.address, purpose),
            purpose=(
                custody_resources.APPROVAL_PURPOSE_GAS_TOP_UP
                if purpose is TxPurpose.TOP_UP
                else custody_resources.APPROVAL_PURPOSE_DEPOSIT_SWEEP
            ),
            issuer=domain.SYSTEM_PRINCIPAL,
            reference=domain.SWEEP_REFERENCE_PREFIX + sweep.sweep_id,
            chain=unsigned.chain,
            chain_id=unsigned.chain_id,
            from_address=unsigned.from_address,
            to_address=recipient,
            amount=money_pb2.Money(asset=asset, amount=str(amount)),
            nonce=unsigned.nonce,
            max_fee_per_gas=str(self.settings.fee_cap_per_gas),
            derivation_path=item.derivation_path,
        )
        transaction = SweepTransaction(
            sweep_id=sweep.sweep_id,
            address=item.address,
            purpose=purpose,
            chain=sweep.chain,
            unsigned=unsigned.SerializeToString(deterministic=True),
            approval=self.signer.sign(claims, _now_us()).SerializeToString(deterministic=True),
            reservation_id=built.reservation.reservation_id,
            value=amount,
            create_time_us=_now_us(),
        )
        async with self.database.transaction() as session:
            await store.insert_transaction(session, transaction)
            if changed != item:
                await store.update_item(session, changed)
        return changed

    async def _release_reservation(
        self, sweep: Sweep, item: SweepItem, purpose: TxPurpose, reservation_id: str, why: str = ""
    ) -> None:
        """The nonce of a transaction that will never be broadcast goes back to the gateway."""
        try:
            await self.gateway.release(
                domain.sweep_step_id(sweep.sweep_id, item.address, f"release.{purpose.name.lower()}"),
                reservation_id,
                why or "sweep transaction abandoned before broadcast",
            )
        except errors.DomainError as refusal:
            log.warning("nonce of sweep %s not released: %s", sweep.sweep_id, refusal.message)

    async def _release(self, sweep: Sweep, item: SweepItem, transaction: SweepTransaction, why: str) -> None:
        await self._release_reservation(sweep, item, transaction.purpose, transaction.reservation_id, why)

    async def _drive(
        self, sweep: Sweep, item: SweepItem, transaction: SweepTransaction
    ) -> tuple[SweepTransaction, str]:
        """Signs, broadcasts and follows a stored transaction one step; '' or why it failed for good."""
        if not transaction.signed_transaction:
            root = transaction.purpose is TxPurpose.SWEEP
            wallet_id = (
                (await self.custody.deposit_root(sweep.chain)).wallet_id
                if root
                else sweep.destination_wallet_id
            )
            request = custody_service.SignTransactionRequest(
                request_id=domain.sweep_step_id(
                    sweep.sweep_id, item.address, f"sign.{transaction.purpose.name.lower()}"
                ),
                wallet_id=wallet_id,
                derivation_path=item.derivation_path if root else "",
                transaction=chain_resources.UnsignedTransaction.FromString(transaction.unsigned),
                authorization=custody_resources.SigningAuthorization(
                    approval=custody_resources.SignedApproval.FromString(transaction.approval)
                ),
            )
            try:
                signed = await self.custody.sign(request)
            except grpc.aio.AioRpcError as error:
                if error.code() is grpc.StatusCode.PERMISSION_DENIED:
                    await self._release(sweep, item, transaction, "custody refused to sign")
                    return transaction, f"custody refused to sign: {error.details()}"
                raise remote.translate(error, "custody") from None
            stored = replace(
                transaction, signed_transaction=signed.signed_transaction, tx_hash=signed.tx_hash.lower()
            )
            return await self._store(stored), ""
        if transaction.status is TxStatus.UNSPECIFIED:
            try:
                sent = await self.gateway.broadcast(
                    domain.sweep_step_id(
                        sweep.sweep_id, item.address, f"send.{transaction.purpose.name.lower()}"
                    ),
                    sweep.chain,
                    transaction.signed_transaction,
                )
            except errors.DomainError as refusal:
                if refusal.reason not in PERMANENT_REASONS:
                    raise
                await self._release(sweep, item, transaction, "the node refused the transaction")
                return transaction, f"the node refused the transaction: {refusal.message}"
            return await self._store(
                replace(transaction, status=TxStatus(sent.status or TxStatus.PENDING))
            ), ""
        found = await self.gateway.transaction(sweep.chain, transaction.tx_hash)
        status = TxStatus(found.status)
        fee = int(found.network_fee.amount or "0") if found.HasField("network_fee") else 0
        if status in FINAL and (status, fee) != (transaction.status, transaction.network_fee):
            transaction = await self._store(replace(transaction, status=status, network_fee=fee))
        if status is TxStatus.FAILED:
            what = transaction.purpose.name.lower()
            return transaction, f"the {what} transaction failed on chain: {found.failure_message}"
        return transaction, ""

    # -- FUNDING_GAS, READY, BROADCAST ----------------------------------------------------------

    async def _fund(self, sweep: Sweep, item: SweepItem) -> SweepItem | None:
        transaction = await self._transaction(sweep, item, TxPurpose.TOP_UP)
        assert transaction is not None, (sweep.sweep_id, item.address)
        before = transaction
        transaction, failure = await self._drive(sweep, item, transaction)
        if failure:
            return await self._fail(sweep, item, failure)
        if transaction.status is TxStatus.CONFIRMED:
            return await self._move(
                item,
                ItemState.READY,
                gas_top_up_tx_hash=transaction.tx_hash,
                network_fee=transaction.network_fee,
            )
        return item if transaction != before else None

    async def _send_sweep(self, sweep: Sweep, item: SweepItem) -> SweepItem | None:
        transaction = await self._transaction(sweep, item, TxPurpose.SWEEP)
        if transaction is None:
            return await self._build_sweep(sweep, item)
        transaction, failure = await self._drive(sweep, item, transaction)
        if failure:
            return await self._fail(sweep, item, failure)
        if transaction.status is TxStatus.UNSPECIFIED:
            return item  # signed, stored: broadcast next
        return await self._move(item, ItemState.BROADCAST, sweep_tx_hash=transaction.tx_hash)

    async def _build_sweep(self, sweep: Sweep, item: SweepItem) -> SweepItem:
        """The sweep transaction, checked to be payable by what the address holds."""
        native = await self.gateway.balance(sweep.chain, item.address, sweep.native_asset)
        cap: int | None = None
        if not sweep.native:
            estimate = await self.gateway.estimate(
                sweep.chain, item.address, sweep.destination_address, sweep.asset, item.amount
            )
            cap = native // max(estimate.gas_limit, 1)
        built = await self._build(
            sweep, item, TxPurpose.SWEEP, sender=item.address, recipient=sweep.destination_address,
            asset=sweep.asset, amount=item.amount, fee_cap=cap or None,
        )  # fmt: skip
        unsigned = built.transaction
        value = item.amount if sweep.native else 0
        if value + unsigned.gas_limit * _fee_per_gas(unsigned) > native:
            await self._release_reservation(sweep, item, TxPurpose.SWEEP, built.reservation.reservation_id)
            return await self._fail(
                sweep, item, f"the address holds {native} native, less than the sweep and its gas would need"
            )
        return await self._record(
            sweep, item, TxPurpose.SWEEP, built, recipient=sweep.destination_address, asset=sweep.asset,
            amount=item.amount, changed=item,
        )  # fmt: skip

    async def _follow_sweep(self, sweep: Sweep, item: SweepItem) -> SweepItem | None:
        transaction = await self._transaction(sweep, item, TxPurpose.SWEEP)
        assert transaction is not None, (sweep.sweep_id, item.address)
        transaction, failure = await self._drive(sweep, item, transaction)
        if failure:
            return await self._fail(sweep, item, failure)
        if transaction.status is not TxStatus.CONFIRMED:
            return None
        await self._settle(sweep, item)
        async with self.database.transaction() as session:
            await store.mark_swept(session, sweep.chain, sweep.asset, item.address, sweep.sweep_id, _now_us())
        top_up = await self._transaction(sweep, item, TxPurpose.TOP_UP)
        fees = transaction.network_fee + (top_up.network_fee if top_up is not None else 0)
        return await self._move(item, ItemState.CONFIRMED, network_fee=fees)

    # -- the ledger -----------------------------------------------------------------------------

    async def _entries(self, sweep: Sweep, item: SweepItem) -> list[ledger_resources.JournalEntry]:
        """The entries of what the item's transactions did on chain (final ones only)."""
        top_up = await self._transaction(sweep, item, TxPurpose.TOP_UP)
        swept = await self._transaction(sweep, item, TxPurpose.SWEEP)
        native = sweep.native_asset
        hot_native = await self._platform(self.settings.hot_account_code, native, ASSET)
        gas = await self._platform(self.settings.gas_expense_account_code, native, EXPENSE)
        address_native = await self.ledger.custody_account(item.address, native)
        entries: list[ledger_resources.JournalEntry] = []

        def entry(purpose: str, asset: str, amount: int, debit: str, credit: str, tx_hash: str) -> None:
            if amount > 0:
                entries.append(
                    ledger_resources.JournalEntry(
                        entry_id=domain.sweep_entry_id(sweep.sweep_id, item.address, purpose),
                        kind=ledger_resources.ENTRY_KIND_STANDARD,
                        category=domain.SWEEP_CATEGORY
                        if purpose in ("amount", "top_up")
                        else domain.SWEEP_GAS_CATEGORY,
                        description=f"sweep {sweep.sweep_id} {purpose} of {item.address}",
                        correlation_id=sweep.sweep_id,
                        chain_transfer=ledger_resources.ChainTransferRef(chain=sweep.chain, tx_hash=tx_hash),
                        postings=[
                            ledger_resources.Posting(
                                account_id=debit, side=DEBIT, asset=asset, amount=str(amount)
                            ),
                            ledger_resources.Posting(
                                account_id=credit, side=CREDIT, asset=asset, amount=str(amount)
                            ),
                        ],
                    )
                )

        if top_up is not None and top_up.status in FINAL:
            if top_up.status is TxStatus.CONFIRMED:
                entry("top_up", native, top_up.value, address_native, hot_native, top_up.tx_hash)
            entry("top_up_fee", native, top_up.network_fee, gas, hot_native, top_up.tx_hash)
        if swept is not None and swept.status in FINAL:
            if swept.status is TxStatus.CONFIRMED:
                hot = await self._platform(self.settings.hot_account_code, sweep.asset, ASSET)
                custody = await self.ledger.custody_account(item.address, sweep.asset)
                entry("amount", sweep.asset, swept.value, hot, custody, swept.tx_hash)
            entry("fee", native, swept.network_fee, gas, address_native, swept.tx_hash)
        return entries

    async def _platform(self, template: str, asset: str, account_type: int) -> str:
        return await self.ledger.platform_account(
            template.format(asset=asset), asset, account_type, UNCONSTRAINED
        )

    async def _settle(self, sweep: Sweep, item: SweepItem) -> None:
        entries = await self._entries(sweep, item)
        if entries:
            await self.ledger.commit(domain.sweep_entry_id(sweep.sweep_id, item.address, "batch"), entries)

    async def _finish(self, sweep: Sweep, items: list[SweepItem]) -> None:
        entry_ids: list[str] = []
        for item in items:
            if item.state is not ItemState.SKIPPED:
                entry_ids.extend(entry.entry_id for entry in await self._entries(sweep, item))
        confirmed = [item for item in items if item.state is ItemState.CONFIRMED]
        async with self.database.transaction() as session:
            current = await store.sweep_by_id(session, sweep.sweep_id, lock=True)
            assert current is not None, sweep.sweep_id
            if current.state in domain.SWEEP_TERMINAL:
                return
            finished = replace(
                current,
                state=domain.sweep_outcome(items),
                total_amount=sum(item.amount for item in confirmed),
                total_gas_top_up=sum(item.gas_top_up for item in items if item.gas_top_up_tx_hash),
                total_network_fee=sum(item.network_fee for item in items),
                ledger_entry_ids=tuple(entry_ids),
                complete_time_us=_now_us(),
                version=current.version + 1,
            )
            await store.update_sweep(session, finished)
            await events.publish_sweep(session, deposit_events_pb2.DepositSweepFinished, finished, items)
        log.info("sweep %s %s", sweep.sweep_id, finished.state.name)
