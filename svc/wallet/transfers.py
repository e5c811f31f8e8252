"""Internal transfers: one STANDARD ledger entry debiting the sender's MAIN account and crediting
the recipient's, then the transfer, its two history entries and its event in one local transaction.

The ledger entry's id derives from the transfer id, which derives from the sender and the request
id: a retry (after a timeout, or a crash between the ledger's commit and ours) replays the ledger's
entry instead of moving the funds twice, and then records the transfer. The ledger refuses an
overdraft or a frozen account atomically (nothing is posted); nothing is recorded here unless the
entry was posted. A reversal is the ledger's CORRECTION entry of the transfer's entry, named after
the transfer, so it too is applied once.
"""

from __future__ import annotations

import time
from dataclasses import replace

import grpc
from finmesh.account.v1 import account_resources_pb2 as account_resources
from finmesh.ledger.v1 import ledger_resources_pb2 as ledger_resources
from finmesh.user.v1 import user_service_pb2 as user_service
from finmesh.wallet.v1 import wallet_service_pb2 as service
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit import errors
from svc.kit.amount import AMOUNT_MAX
from svc.wallet import domain, events, projection, store
from svc.wallet.domain import InternalTransfer, TransferState
from svc.wallet.peers import Accounts, Ledger, Users

ACTIVE = user_service.USER_STATUS_ACTIVE
DESCRIPTION_CHARS_MAX = 256


def _now_us() -> int:
    return time.time_ns() // 1000


def amount_of(text: str, field: str) -> int:
    """A positive base-unit amount (the contract's pattern was checked), at most 2^256 - 1."""
    amount = int(text)
    if amount > AMOUNT_MAX:
        raise errors.InvalidArgument([errors.FieldViolation(field, "above 2^256 - 1", "range")])
    assert amount > 0, text
    return amount


def _no_recipient() -> errors.NotFound:
    # The same refusal whatever the reason (unknown, frozen, closed), so identifiers cannot be probed.
    return errors.NotFound("no active user matches the recipient")


class InternalTransfers:
    """Posts and reverses internal transfers through the ledger."""

    def __init__(self, users: Users, accounts: Accounts, ledger: Ledger) -> None:
        self.users = users
        self.accounts = accounts
        self.ledger = ledger

    async def recipient(self, request: service.CreateInternalTransferRequest) -> user_service.User:
        """The ACTIVE user the request names; NOT_FOUND otherwise."""
        which = request.WhichOneof("recipient")
        if which == "to_user_id":
            try:
                found: user_service.User | None = await self.users.get(request.to_user_id)
            except errors.DomainError as error:
                if error.code is not grpc.StatusCode.NOT_FOUND:
                    raise
                found = None
        elif which == "to_email":
            found = await self.users.lookup(email=request.to_email)
        else:
            found = await self.users.lookup(phone=request.to_phone)
        if found is None or found.status != ACTIVE:
            raise _no_recipient()
        return found

    async def _ledger_account(
        self, user_id: str, asset: str, open_request_id: str
    ) -> account_resources.Account | None:
        found = await self.accounts.main_accounts(user_id, asset=asset)
        if found:
            return found[0]
        if not open_request_id:
            return None
        return await self.accounts.open_main(user_id, asset, open_request_id)

    async def post(self, sender_id: str, request: service.CreateInternalTransferRequest) -> InternalTransfer:
        """Checks the users and posts the ledger entry; the transfer to record (not yet stored)."""
        amount = amount_of(request.amount.amount, "amount.amount")
        asset = request.amount.asset
        transfer_id = domain.transfer_id_for(sender_id, request.request_id)
        sender = await self.users.get(sender_id)
        if sender.status != ACTIVE:
            raise errors.Frozen("the sender is frozen or closed", metadata={"user_id": sender_id})
        recipient = await self.recipient(request)
        if recipient.user_id == sender_id:
            raise errors.InvalidArgument([errors.FieldViolation("recipient", "the recipient is the sender")])
        source = await self._ledger_account(sender_id, asset, "")
        if source is None:
            raise errors.InsufficientFunds(
                f"no {asset} balance", metadata={"asset": asset, "available": "0", "requested": str(amount)}
            )
        if source.status != account_resources.ACCOUNT_STATUS_ACTIVE:
            raise errors.Frozen(
                f"the sender's {asset} account is frozen", metadata={"account_id": source.account_id}
            )
        target = await self._ledger_account(recipient.user_id, asset, f"wallet.open.{transfer_id}")
        assert target is not None
        if target.status == account_resources.ACCOUNT_STATUS_CLOSED:
            raise _no_recipient()
        entry_id = domain.transfer_entry_id(transfer_id)
        entry = await self.ledger.post(
            ledger_resources.JournalEntry(
                entry_id=entry_id,
                kind=ledger_resources.ENTRY_KIND_STANDARD,
                category=domain.TRANSFER_CATEGORY,
                description=f"internal transfer {transfer_id}",
                correlation_id=transfer_id,
                postings=[
                    ledger_resources.Posting(
                        account_id=source.ledger_account_id,
                        side=ledger_resources.POSTING_SIDE_DEBIT,
                        asset=asset,
                        amount=str(amount),
                    ),
                    ledger_resources.Posting(
                        account_id=target.ledger_account_id,
                        side=ledger_resources.POSTING_SIDE_CREDIT,
                        asset=asset,
                        amount=str(amount),
                    ),
                ],
            )
        )
        assert entry.entry_id == entry_id, entry
        return InternalTransfer(
            transfer_id=transfer_id,
            request_id=request.request_id,
            chain=request.chain,
            from_user_id=sender_id,
            to_user_id=recipient.user_id,
            from_display=domain.display_of(sender.email, sender.phone),
            to_display=domain.display_of(recipient.email, recipient.phone),
            asset=asset,
            amount=amount,
            memo=request.memo,
            state=TransferState.COMPLETED,
            ledger_entry_id=entry_id,
            reversal_entry_id="",
            reversed_by="",
            reverse_reason="",
            approval_id="",
            version=1,
            create_time_us=entry.post_time.ToMicroseconds() or _now_us(),
            reverse_time_us=None,
            ledger_sequence=entry.sequence,
            reversal_sequence=0,
        )

    async def record(self, session: AsyncSession, transfer: InternalTransfer) -> None:
        """Stores a posted transfer, its history entries and InternalTransferCompleted."""
        await store.insert_transfer(session, transfer)
        for entry in projection.transfer_entries(transfer):
            await projection.project(session, entry)
        await events.publish_transfer_completed(session, transfer)

    async def reverse(
        self, session: AsyncSession, request: service.ReverseInternalTransferRequest
    ) -> InternalTransfer:
        """COMPLETED -> REVERSED with the ledger's correcting entry, in the caller's transaction."""
        transfer = await store.transfer_by_id(session, request.transfer_id, lock=True)
        if transfer is None:
            raise errors.NotFound(
                f"no internal transfer {request.transfer_id}", metadata={"transfer_id": request.transfer_id}
            )
        domain.require_transition(transfer, TransferState.REVERSED)
        reversal_id = domain.reversal_entry_id(transfer.transfer_id)
        correction = await self.ledger.reverse(
            reversal_id,
            transfer.ledger_entry_id,
            domain.REVERSAL_CATEGORY,
            request.reason[:DESCRIPTION_CHARS_MAX],
            transfer.transfer_id,
        )
        reversed_ = replace(
            transfer,
            state=TransferState.REVERSED,
            reversal_entry_id=reversal_id,
            reversed_by=request.actor_id,
            reverse_reason=request.reason,
            approval_id=request.approval_id,
            version=transfer.version + 1,
            reverse_time_us=correction.post_time.ToMicroseconds() or _now_us(),
            reversal_sequence=correction.sequence,
        )
        await store.update_transfer(session, reversed_)
        for entry in projection.transfer_entries(reversed_):
            await projection.project(session, entry)
        await events.publish_transfer_reversed(session, reversed_)
        return reversed_
