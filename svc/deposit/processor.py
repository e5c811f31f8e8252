"""Deposits from the chain gateway's transfer events: recording, the pending hold, the credit at
depth, reorganisations before and after credit, re-inclusion and the operator's resolution.

Every change happens in one database transaction with the deposit's row locked, and the peer calls
it makes (ledger entries, freezes) carry ids derived from the deposit and the step: if our commit
fails after a peer's, the redelivered event or the next round repeats the step, the peer answers
with what it did the first time, and the state converges without a second credit.

Ordering: the chain gateway publishes a transfer's events under its key in order, but a
re-inclusion with another log index has another key, so its ChainTransferSeen may overtake the
old inclusion's ChainTransferReorged. The chain cannot hold one transaction twice, so a sighting
of a known transfer on another block retires the old inclusion first; the late Reorged then no
longer matches the deposit's inclusion and is dropped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as chain_resources
from finmesh.events.v1 import chain_events_pb2, deposit_events_pb2
from finmesh.ledger.v1 import ledger_resources_pb2 as ledger_resources
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from svc.deposit import domain, events, store
from svc.deposit.domain import Deposit, Kind, Resolution, State
from svc.deposit.peers import CREDIT, DEBIT, Accounts, Chains, Ledger, Wallets
from svc.kit import errors
from svc.kit.bus import ReceivedMessage
from svc.kit.db import Database

log = logging.getLogger(__name__)

ROUND_DEPOSITS_MAX = 200
ASSET = ledger_resources.ACCOUNT_TYPE_ASSET
EXPENSE = ledger_resources.ACCOUNT_TYPE_EXPENSE
UNCONSTRAINED = ledger_resources.BALANCE_CONSTRAINT_NONE


def _now_us() -> int:
    return time.time_ns() // 1000


def _bumped(deposit: Deposit, **changes: object) -> Deposit:
    return replace(deposit, version=deposit.version + 1, update_time_us=_now_us(), **changes)  # type: ignore[arg-type]


class Processor:
    """Applies transfer events and rounds to deposits (see the module doc)."""

    def __init__(
        self, database: Database, ledger: Ledger, accounts: Accounts, chains: Chains, wallets: Wallets
    ) -> None:
        self.database = database
        self.ledger = ledger
        self.accounts = accounts
        self.chains = chains
        self.wallets = wallets

    # -- the consumer ---------------------------------------------------------------------------

    async def __call__(self, session: AsyncSession, event: Message, message: ReceivedMessage) -> None:
        """Handles one ChainTransfer* event in the consumer's transaction."""
        if isinstance(event, chain_events_pb2.ChainTransferSeen):
            await self.seen(session, event.transfer)
        elif isinstance(event, chain_events_pb2.ChainTransferConfirmed):
            await self.confirmed(session, event.transfer)
        elif isinstance(event, chain_events_pb2.ChainTransferReorged):
            await self.reorged(session, event.transfer)

    async def _owner(self, session: AsyncSession, chain: str, address: str) -> tuple[str, str] | None:
        """(user, wallet) of a deposit address: recorded from WalletCreated, else asked of the wallet
        service (its event may not have arrived yet). None: a watched address that is no deposit
        address (a custody wallet's, say)."""
        owner = await store.address_owner(session, chain, address)
        if owner is not None:
            return owner
        wallet = await self.wallets.resolve(chain, address)
        if wallet is None:
            return None
        await store.add_address(
            session, chain, address, wallet.user_id, wallet.wallet_id,
            wallet.deposit_address.derivation_path, _now_us(),
        )  # fmt: skip
        return wallet.user_id, wallet.wallet_id

    async def _current(
        self, session: AsyncSession, transfer: chain_resources.Transfer
    ) -> tuple[list[Deposit], Deposit | None]:
        """The deposits of the transfer's transaction (locked), and the one whose current inclusion
        the transfer is."""
        found = await store.deposits_of_transaction(
            session, transfer.chain, transfer.tx_hash.lower(), lock=True
        )
        for deposit in found:
            if (
                deposit.is_inclusion(transfer.block_hash.lower(), transfer.log_index)
                and deposit.to_address == transfer.to_address.lower()
            ):
                return found, deposit
        return found, None

    async def seen(self, session: AsyncSession, transfer: chain_resources.Transfer) -> Deposit | None:
        """A transfer to a watched address: a new deposit, a re-inclusion, or a repeat (ignored)."""
        chain, to_address = transfer.chain, transfer.to_address.lower()
        if await store.is_gas_top_up(session, chain, transfer.tx_hash.lower()):
            return None  # gas the hot wallet sent for a sweep: the platform's own coin, no deposit
        owner = await self._owner(session, chain, to_address)
        if owner is None:
            return None
        found, current = await self._current(session, transfer)
        if current is not None:
            return current
        token, amount = transfer.token_contract.lower(), int(transfer.amount)
        same = [
            deposit
            for deposit in found
            if domain.same_transfer(
                deposit, transfer.tx_hash.lower(), to_address, transfer.asset, token, amount
            )
        ]
        if same:
            # Prefer the inclusion already retired; else the one still live is retired now.
            same.sort(key=lambda deposit: deposit.included)
            return await self._reinclude(session, same[0], transfer)
        return await self._record(session, transfer, owner)

    async def _record(
        self, session: AsyncSession, transfer: chain_resources.Transfer, owner: tuple[str, str]
    ) -> Deposit:
        user_id, wallet_id = owner
        chain, asset, amount = transfer.chain, transfer.asset, int(transfer.amount)
        deposit_id = domain.deposit_id_for(chain, transfer.tx_hash, transfer.log_index)
        info = await self.chains.chain(chain)
        config = await store.config_of(session, chain, asset.split(":", 1)[1]) if asset else None
        now_us = _now_us()
        state = domain.acceptance(asset, amount, config)
        deposit = Deposit(
            deposit_id=deposit_id,
            user_id=user_id,
            wallet_id=wallet_id,
            chain=chain,
            tx_hash=transfer.tx_hash.lower(),
            log_index=transfer.log_index,
            block_number=transfer.block_number,
            block_hash=transfer.block_hash.lower(),
            block_time_us=transfer.block_time.ToMicroseconds(),
            kind=Kind(transfer.kind),
            from_address=transfer.from_address.lower(),
            to_address=transfer.to_address.lower(),
            asset=asset,
            amount=amount,
            token_contract=transfer.token_contract.lower(),
            state=State.PENDING,
            included=True,
            chain_confirmed=False,
            required_confirmations=domain.required_confirmations(config, info.confirmation_depth),
            minimum_amount=config.minimum_amount if config is not None else 0,
            seen_time_us=now_us,
            update_time_us=now_us,
        )
        if state is not State.CONFIRMING:
            deposit = replace(deposit, state=domain.transition(deposit, state))
            await store.insert_deposit(session, deposit)
            await events.publish_deposit(session, deposit_events_pb2.DepositNotCredited, deposit)
            return deposit
        account = await self.accounts.open(user_id, asset)
        deposit = replace(
            deposit,
            state=domain.transition(deposit, State.CONFIRMING),
            account_id=account.account_id,
            ledger_account_id=account.ledger_account_id,
            pending_entry_id=domain.pending_entry_id(deposit_id, 0),
        )
        await self._hold(deposit)
        await store.insert_deposit(session, deposit)
        await events.publish_deposit(session, deposit_events_pb2.DepositDetected, deposit)
        return deposit

    async def _hold(self, deposit: Deposit) -> None:
        """The PENDING entry of the current inclusion: custody debited, the user's pending incoming."""
        custody = await self.ledger.custody_account(deposit.to_address, deposit.asset)
        entry = ledger_resources.JournalEntry(
            entry_id=deposit.pending_entry_id,
            kind=ledger_resources.ENTRY_KIND_PENDING,
            category=domain.PENDING_CATEGORY,
            description=f"deposit {deposit.tx_hash}",
            correlation_id=deposit.deposit_id,
            chain_transfer=ledger_resources.ChainTransferRef(chain=deposit.chain, tx_hash=deposit.tx_hash),
            postings=[
                ledger_resources.Posting(
                    account_id=custody, side=DEBIT, asset=deposit.asset, amount=str(deposit.amount)
                ),
                ledger_resources.Posting(
                    account_id=deposit.ledger_account_id,
                    side=CREDIT,
                    asset=deposit.asset,
                    amount=str(deposit.amount),
                ),
            ],
        )
        if deposit.log_index >= 0:
            entry.chain_transfer.log_index = deposit.log_index
        await self.ledger.commit(entry.entry_id, [entry])

    async def confirmed(self, session: AsyncSession, transfer: chain_resources.Transfer) -> None:
        """The current inclusion reached the chain's depth: credit (or release) if that is enough."""
        _, deposit = await self._current(session, transfer)
        if deposit is None:
            # Never seen (its address became known late, say): record it first.
            await self.seen(session, transfer)
            _, deposit = await self._current(session, transfer)
            if deposit is None:
                return
        if deposit.chain_confirmed:
            return
        deposit = _bumped(deposit, chain_confirmed=True)
        info = await self.chains.chain(deposit.chain)
        if deposit.required_confirmations > info.confirmation_depth:
            await store.update_deposit(session, deposit)  # the credit round waits for the asset's depth
        elif deposit.state is State.CONFIRMING:
            await self._credit(session, deposit)
        elif deposit.state is State.FROZEN:
            await self._release_reincluded(session, deposit)
        else:
            await store.update_deposit(session, deposit)

    async def _credit(self, session: AsyncSession, deposit: Deposit) -> Deposit:
        """CONFIRMING -> CREDITED: the pending entry posted, under the deposit's one credit id."""
        credit_id = domain.credit_entry_id(deposit.deposit_id)
        entry = ledger_resources.JournalEntry(
            entry_id=credit_id,
            kind=ledger_resources.ENTRY_KIND_POST_PENDING,
            pending_entry_id=deposit.pending_entry_id,
        )
        await self.ledger.commit(credit_id, [entry])
        credited = replace(
            deposit,
            state=domain.transition(deposit, State.CREDITED),
            credit_entry_id=credit_id,
            credit_time_us=_now_us(),
        )
        await store.update_deposit(session, credited)
        await events.publish_deposit(session, deposit_events_pb2.DepositCredited, credited)
        return credited

    async def reorged(self, session: AsyncSession, transfer: chain_resources.Transfer) -> None:
        """The current inclusion left the canonical chain (other inclusions' reorgs are stale)."""
        _, deposit = await self._current(session, transfer)
        if deposit is None or not deposit.included:
            return
        await self._retire(session, deposit)

    async def _retire(self, session: AsyncSession, deposit: Deposit) -> Deposit:
        """The deposit's inclusion is gone: withdraw the pending amount, or freeze a credited one."""
        assert deposit.included, deposit
        changes: dict[str, object] = {
            "included": False, "chain_confirmed": False, "reorg_count": deposit.reorg_count + 1,
        }  # fmt: skip
        if deposit.state is State.CREDITED:
            return await self._freeze(session, deposit, changes)
        if deposit.state is not State.CONFIRMING:
            gone = _bumped(deposit, **changes)  # REORGED, FROZEN or not credited: nothing held
            await store.update_deposit(session, gone)
            return gone
        void_id = domain.void_entry_id(deposit.deposit_id, deposit.reorg_count)
        void = ledger_resources.JournalEntry(
            entry_id=void_id,
            kind=ledger_resources.ENTRY_KIND_VOID_PENDING,
            pending_entry_id=deposit.pending_entry_id,
        )
        await self.ledger.commit(void_id, [void])
        gone = _bumped(deposit, state=domain.transition(deposit, State.REORGED), **changes)
        await store.update_deposit(session, gone)
        await events.publish_deposit(session, deposit_events_pb2.DepositReorged, gone)
        return gone

    async def _freeze(self, session: AsyncSession, deposit: Deposit, changes: dict[str, object]) -> Deposit:
        """CREDITED -> FROZEN: what the user still holds of the amount is frozen in their account."""
        available = await self.accounts.available(deposit.account_id)
        frozen_amount = min(deposit.amount, available)
        freeze_id = entry_id = ""
        if frozen_amount > 0:
            freeze = await self.accounts.freeze(
                domain.request_id_for(deposit.deposit_id, f"freeze.{deposit.reorg_count}"),
                deposit.account_id,
                frozen_amount,
                f"deposit {deposit.transfer_key} removed by a chain reorganisation after credit",
            )
            freeze_id, entry_id = freeze.freeze_id, freeze.ledger_pending_entry_id
        frozen = _bumped(
            deposit,
            **changes,
            state=domain.transition(deposit, State.FROZEN),
            freeze_id=freeze_id,
            freeze_entry_id=entry_id,
            freeze_time_us=_now_us(),
            # The transfer event does not name the common ancestor: the fork is below this block.
            fork_block_number=max(deposit.block_number - 1, 0),
            frozen_amount=frozen_amount,
            resolution=Resolution.UNSPECIFIED,
            resolved_by="",
            approval_id="",
            resolve_note="",
            resolve_time_us=None,
        )
        await store.update_deposit(session, frozen)
        await events.publish_deposit(session, deposit_events_pb2.DepositFrozen, frozen)
        log.error("deposit %s frozen after a reorganisation beyond its credit", deposit.deposit_id)
        return frozen

    async def _reinclude(
        self, session: AsyncSession, deposit: Deposit, transfer: chain_resources.Transfer
    ) -> Deposit:
        """The same transfer on a new branch: the deposit moves to the new inclusion."""
        if deposit.included:
            deposit = await self._retire(session, deposit)
        previous_hash, previous_index = deposit.block_hash, deposit.log_index
        moved = _bumped(
            deposit,
            included=True,
            chain_confirmed=False,
            log_index=transfer.log_index,
            block_number=transfer.block_number,
            block_hash=transfer.block_hash.lower(),
            block_time_us=transfer.block_time.ToMicroseconds(),
        )
        if deposit.state is not State.REORGED:
            await store.update_deposit(session, moved)  # FROZEN waits for depth; others are not credited
            return moved
        moved = replace(
            moved,
            state=domain.transition(deposit, State.CONFIRMING),
            pending_entry_id=domain.pending_entry_id(deposit.deposit_id, deposit.reorg_count),
        )
        await self._hold(moved)
        await store.update_deposit(session, moved)
        await events.publish_deposit(
            session,
            deposit_events_pb2.DepositReincluded,
            moved,
            previous_block_hash=previous_hash,
            previous_log_index=previous_index,
        )
        return moved

    async def _release_reincluded(self, session: AsyncSession, deposit: Deposit) -> Deposit:
        """FROZEN -> CREDITED: the transfer is back on chain at depth; the freeze is lifted."""
        if deposit.freeze_id:
            await self.accounts.release(
                domain.request_id_for(deposit.deposit_id, f"release.{deposit.reorg_count}"),
                deposit.account_id,
                deposit.freeze_id,
                "the deposit's transfer was included again and reached its depth",
                domain.SYSTEM_PRINCIPAL,
                "",
            )
        released = replace(
            deposit,
            state=domain.transition(deposit, State.CREDITED),
            resolved_by=domain.SYSTEM_PRINCIPAL,
            resolve_time_us=_now_us(),
        )
        await store.update_deposit(session, released)
        await events.publish_deposit(session, deposit_events_pb2.DepositResolved, released)
        return released

    # -- the credit round -------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Credits (or releases) deposits whose asset's depth exceeds the chain's once the follower
        is that far; returns how many changed."""
        async with self.database.transaction() as session:
            candidates = await store.awaiting_credit(session, ROUND_DEPOSITS_MAX)
            candidates += await store.awaiting_release(session, ROUND_DEPOSITS_MAX)
        changed = 0
        for candidate in candidates:
            if not candidate.chain_confirmed:
                continue
            last = await self.chains.last_block(candidate.chain)
            if domain.confirmations(candidate.block_number, last, True) < candidate.required_confirmations:
                continue
            async with self.database.transaction() as session:
                deposit = await store.deposit_by_id(session, candidate.deposit_id, lock=True)
                if deposit is None or not (deposit.included and deposit.chain_confirmed):
                    continue
                if deposit.block_hash != candidate.block_hash:
                    continue
                if deposit.state is State.CONFIRMING:
                    await self._credit(session, _bumped(deposit))
                elif deposit.state is State.FROZEN:
                    await self._release_reincluded(session, _bumped(deposit))
                else:
                    continue
                changed += 1
        return changed

    # -- the operator's resolution ---------------------------------------------------------------

    async def resolve(
        self,
        session: AsyncSession,
        deposit_id: str,
        resolution: Resolution,
        by: str,
        note: str,
        approval_id: str,
    ) -> Deposit:
        """FROZEN -> CREDITED (RELEASE) or REVERSED (REVERSE), in the caller's transaction."""
        deposit = await store.deposit_by_id(session, deposit_id, lock=True)
        if deposit is None:
            raise errors.NotFound(f"no deposit {deposit_id}", metadata={"deposit_id": deposit_id})
        if deposit.state is not State.FROZEN:
            raise errors.InvalidState(
                f"deposit is {deposit.state.name}, not FROZEN",
                metadata={"deposit_id": deposit_id, "state": deposit.state.name},
            )
        step = f"{resolution.name.lower()}.{deposit.reorg_count}"
        resolved = _bumped(
            deposit, resolution=resolution, resolved_by=by, approval_id=approval_id, resolve_note=note,
            resolve_time_us=_now_us(),
        )  # fmt: skip
        if resolution is Resolution.RELEASE:
            if deposit.freeze_id:
                await self.accounts.release(
                    domain.request_id_for(deposit_id, step),
                    deposit.account_id,
                    deposit.freeze_id,
                    note,
                    by,
                    approval_id,
                )
            if not deposit.included:
                # Kept without the coins on chain: the platform absorbs the loss.
                await self._post(
                    domain.loss_entry_id(deposit_id, deposit.reorg_count),
                    domain.LOSS_CATEGORY,
                    deposit,
                    debit=await self.ledger.platform_account(
                        domain.loss_code(deposit.asset), deposit.asset, EXPENSE, UNCONSTRAINED
                    ),
                    amount=deposit.amount,
                )
            resolved = replace(resolved, state=domain.transition(deposit, State.CREDITED))
        else:
            reversal_id = ""
            if deposit.freeze_id:
                captured = await self.accounts.capture(
                    domain.request_id_for(deposit_id, step),
                    deposit.account_id,
                    deposit.freeze_id,
                    domain.custody_code(deposit.to_address, deposit.asset),
                    note,
                    by,
                    approval_id,
                )
                reversal_id = captured.capture_entry_id
            remainder = deposit.amount - deposit.frozen_amount
            if remainder > 0:
                remainder_id = domain.remainder_entry_id(deposit_id)
                await self._post(
                    remainder_id,
                    domain.REVERSAL_CATEGORY,
                    deposit,
                    debit=await self.ledger.platform_account(
                        domain.receivable_code(deposit.user_id, deposit.asset),
                        deposit.asset,
                        ASSET,
                        UNCONSTRAINED,
                    ),
                    amount=remainder,
                )
                reversal_id = reversal_id or remainder_id
            resolved = replace(
                resolved, state=domain.transition(deposit, State.REVERSED), reversal_entry_id=reversal_id
            )
        await store.update_deposit(session, resolved)
        await events.publish_deposit(session, deposit_events_pb2.DepositResolved, resolved)
        return resolved

    async def _post(self, entry_id: str, category: str, deposit: Deposit, *, debit: str, amount: int) -> None:
        """A STANDARD entry crediting the deposit address's custody account (it no longer holds it)."""
        custody = await self.ledger.custody_account(deposit.to_address, deposit.asset)
        entry = ledger_resources.JournalEntry(
            entry_id=entry_id,
            kind=ledger_resources.ENTRY_KIND_STANDARD,
            category=category,
            correlation_id=deposit.deposit_id,
            description=f"deposit {deposit.tx_hash} removed by a reorganisation",
            postings=[
                ledger_resources.Posting(
                    account_id=debit, side=DEBIT, asset=deposit.asset, amount=str(amount)
                ),
                ledger_resources.Posting(
                    account_id=custody, side=CREDIT, asset=deposit.asset, amount=str(amount)
                ),
            ],
        )
        await self.ledger.commit(entry_id, [entry])
