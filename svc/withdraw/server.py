"""WithdrawService: translates the contract's messages to the lifecycle and back.

CreateWithdrawal's id derives from (user, request_id), and the withdrawal row is inserted under a
lock of the user's row, so any number of concurrent repeats make one withdrawal, one hold (the
ledger entry id derives from the withdrawal) and, later, one transaction.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from typing import Any

from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.common.v1 import money_pb2
from finmesh.events.v1 import withdraw_events_pb2
from finmesh.withdraw.v1 import withdraw_resources_pb2 as resources
from finmesh.withdraw.v1 import withdraw_service_pb2 as service
from finmesh.withdraw.v1 import withdraw_service_pb2_grpc as service_grpc
from google.protobuf import timestamp_pb2
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit import errors, idempotency, paging, principals
from svc.kit.amount import AMOUNT_MAX
from svc.kit.context import EndUser
from svc.kit.db import Database
from svc.withdraw import convert, domain, events, store
from svc.withdraw.config import KYC_LEVEL_L0, WithdrawSettings
from svc.withdraw.domain import Actor, Address, AddressState, Decision, Hold, Outcome, Withdrawal
from svc.withdraw.execution import REPLACEABLE, Executor
from svc.withdraw.flow import Lifecycle, message_of, move, now_us
from svc.withdraw.peers import Accounts, Kyc, StepUp
from svc.withdraw.states import CANCELLABLE, State

SERVICE = "/finmesh.withdraw.v1.WithdrawService/"
APPROVE = 1
REJECT = 2


def _time_us(stamp: timestamp_pb2.Timestamp, present: bool) -> int | None:
    return stamp.ToMicroseconds() if present else None


def _not_found(withdrawal_id: str) -> errors.NotFound:
    return errors.NotFound(f"no withdrawal {withdrawal_id}", metadata={"withdrawal_id": withdrawal_id})


class WithdrawServicer(service_grpc.WithdrawServiceServicer):
    """The withdraw service's gRPC surface."""

    def __init__(
        self,
        database: Database,
        settings: WithdrawSettings,
        lifecycle: Lifecycle,
        executor: Executor,
        step_up: StepUp,
        accounts: Accounts,
        kyc: Kyc,
    ) -> None:
        self.database = database
        self.settings = settings
        self.lifecycle = lifecycle
        self.executor = executor
        self.step_up = step_up
        self.accounts = accounts
        self.kyc = kyc

    # Helpers

    def _policy(self, asset: str, field: str) -> Any:
        policy = self.settings.withdrawal_assets.get(asset)
        if policy is None:
            raise errors.InvalidArgument([errors.FieldViolation(field, f"{asset} is not withdrawable")])
        return policy

    async def _redeem(
        self, token: str, user: EndUser, purpose: auth_resources.StepUpPurpose.ValueType, request_id: str
    ) -> None:
        try:
            await self.step_up.redeem(token, user, purpose, request_id)
        except errors.DomainError as refusal:
            if refusal.reason == "STEP_UP_REQUIRED":
                raise domain.StepUpRequired(
                    "a valid step-up (2FA) token is required", metadata={"purpose": str(purpose)}
                ) from None
            raise

    async def _own(
        self, session: AsyncSession, user: EndUser, withdrawal_id: str, *, lock: bool = False
    ) -> Withdrawal:
        withdrawal = await store.withdrawal_by_id(session, withdrawal_id, lock=lock)
        if withdrawal is None or withdrawal.user_id != user.subject:
            raise _not_found(withdrawal_id)
        return withdrawal

    async def _any(self, session: AsyncSession, withdrawal_id: str, *, lock: bool = False) -> Withdrawal:
        withdrawal = await store.withdrawal_by_id(session, withdrawal_id, lock=lock)
        if withdrawal is None:
            raise _not_found(withdrawal_id)
        return withdrawal

    async def _used(self, session: AsyncSession, user_id: str, asset: str) -> int:
        return await store.used_since(session, user_id, asset, now_us() - domain.DAY_US)

    # Withdrawals

    async def CreateWithdrawal(self, request: service.CreateWithdrawalRequest, context: Any) -> Any:
        user = principals.require_end_user()
        asset = request.amount.asset
        policy = self._policy(asset, "amount.asset")
        amount = int(request.amount.amount)
        if amount > AMOUNT_MAX:
            raise errors.InvalidArgument([errors.FieldViolation("amount.amount", "above 2^256 - 1", "range")])
        chain = self.settings.chain_of(asset)
        withdrawal_id = domain.withdrawal_id_for(user.subject, request.request_id)
        fingerprint = idempotency.fingerprint(request)
        async with self.database.transaction() as session:
            existing = await store.withdrawal_by_id(session, withdrawal_id)
        if existing is None:
            await self._redeem(
                request.step_up_token,
                user,
                auth_resources.STEP_UP_PURPOSE_WITHDRAWAL,
                domain.step_id(withdrawal_id, "step-up"),
            )
            account = await self.accounts.main_account(user.subject, asset)
            level = await self.kyc.level(user.subject, KYC_LEVEL_L0)
            existing = await self._insert(
                request,
                user,
                withdrawal_id,
                fingerprint,
                chain,
                amount,
                policy,
                account.ledger_account_id,
                level,
            )
        if existing.fingerprint != fingerprint:
            raise errors.IdempotencyKeyReused(
                "request_id was already used with a different request",
                metadata={"request_id": request.request_id, "withdrawal_id": withdrawal_id},
            )
        if existing.state is State.FAILED and existing.outcome is Outcome.HOLD_REFUSED:
            raise errors.InsufficientFunds(
                "the available balance does not cover amount plus fee; nothing was held",
                metadata={"withdrawal_id": withdrawal_id, "total_debit": str(existing.total)},
            )
        withdrawal = await self.lifecycle.place_hold(existing)
        withdrawal = await self.lifecycle.assess(withdrawal)
        async with self.database.transaction() as session:
            current = await self._any(session, withdrawal_id)
            return service.CreateWithdrawalResponse(
                withdrawal=await message_of(session, current, staff=False)
            )

    async def _insert(
        self,
        request: service.CreateWithdrawalRequest,
        user: EndUser,
        withdrawal_id: str,
        fingerprint: str,
        chain: str,
        amount: int,
        policy: Any,
        ledger_account_id: str,
        level: int,
    ) -> Withdrawal:
        """The REQUESTED withdrawal, inserted after the whitelist, limit and fee checks under the
        user's lock (or the one a concurrent repeat inserted)."""
        try:
            async with self.database.transaction() as session:
                await store.lock_user(session, user.subject)
                found = await store.withdrawal_by_id(session, withdrawal_id)
                if found is not None:
                    return found
                address = await self._destination(session, request, user, chain)
                limits = domain.limits_for(
                    request.amount.asset,
                    policy,
                    level,
                    await self._used(session, user.subject, request.amount.asset),
                )
                domain.check_limits(limits, amount)
                fee = policy.fee
                if request.HasField("max_fee"):
                    if request.max_fee.asset != request.amount.asset:
                        raise errors.InvalidArgument(
                            [errors.FieldViolation("max_fee.asset", "must be the amount's asset")]
                        )
                    if fee > int(request.max_fee.amount):
                        raise domain.FeeAboveMaximum(
                            f"the fee is {fee}, above the accepted {request.max_fee.amount}",
                            metadata={"fee": str(fee), "max_fee": request.max_fee.amount},
                        )
                time_us = now_us()
                withdrawal = Withdrawal(
                    withdrawal_id=withdrawal_id,
                    user_id=user.subject,
                    request_id=request.request_id,
                    fingerprint=fingerprint,
                    chain=chain,
                    asset=request.amount.asset,
                    amount=amount,
                    fee=fee,
                    destination=address.address,
                    address_id=address.address_id,
                    destination_label=address.label,
                    note=request.note,
                    state=State.REQUESTED,
                    outcome=Outcome.NONE,
                    outcome_message="",
                    risk_decision=0,
                    risk_reasons="",
                    risk_time_us=None,
                    auto_approved=False,
                    required_approvals=0,
                    user_ledger_account_id=ledger_account_id,
                    hold_entry_id=domain.hold_entry_id(withdrawal_id),
                    hold=Hold.NONE,
                    source_wallet_id="",
                    tx_hash="",
                    confirmations=0,
                    required_confirmations=0,
                    network_fee_asset="",
                    network_fee=0,
                    replacements=0,
                    create_time_us=time_us,
                    update_time_us=time_us,
                    approve_time_us=None,
                    broadcast_time_us=None,
                    complete_time_us=None,
                    approval_expire_time_us=None,
                    version=1,
                )
                await store.insert_withdrawal(session, withdrawal)
                return withdrawal
        except IntegrityError:
            async with self.database.transaction() as session:
                found = await store.withdrawal_by_id(session, withdrawal_id)
            if found is None:
                raise
            return found

    async def _destination(
        self, session: AsyncSession, request: service.CreateWithdrawalRequest, user: EndUser, chain: str
    ) -> Address:
        if request.WhichOneof("destination") == "destination_address_id":
            address = await store.address_by_id(session, request.destination_address_id)
            field = "destination_address_id"
        else:
            given = request.destination_address
            if given.chain != chain:
                raise errors.InvalidArgument(
                    [errors.FieldViolation("destination_address.chain", "must be the asset's chain")]
                )
            address = await store.listed_address(session, user.subject, given.chain, given.address)
            field = "destination_address"
        if address is None or address.user_id != user.subject or address.state is AddressState.REMOVED:
            raise errors.NotFound(f"the {field} is not in your whitelist", metadata={"field": field})
        if address.chain != chain:
            raise errors.InvalidArgument([errors.FieldViolation(field, "is on another chain than the asset")])
        state = address.state_at(now_us())
        if state is not AddressState.ACTIVE:
            raise errors.InvalidState(
                "the address is still in its cool-down",
                metadata={"address_id": address.address_id, "usable_time_us": str(address.usable_time_us)},
            )
        return address

    async def GetWithdrawal(self, request: service.GetWithdrawalRequest, context: Any) -> Any:
        user = principals.require_end_user()
        async with self.database.transaction() as session:
            withdrawal = await self._own(session, user, request.withdrawal_id)
            return service.GetWithdrawalResponse(
                withdrawal=await message_of(session, withdrawal, staff=False)
            )

    async def _list(
        self, request: Any, *, user_id: str, staff: bool, tx_hash: str = "", awaiting: str = ""
    ) -> tuple[list[resources.Withdrawal], str]:
        limit = paging.page_size(request.page_size)
        after = paging.position(request.page_token, "create_time_us", "withdrawal_id")
        async with self.database.transaction() as session:
            found = await store.list_withdrawals(
                session,
                user_id=user_id,
                states=list(request.states),
                chain=request.chain,
                asset=request.asset,
                create_after_us=_time_us(request.create_after, request.HasField("create_after")),
                create_before_us=_time_us(request.create_before, request.HasField("create_before")),
                tx_hash=tx_hash,
                awaiting_approver=awaiting,
                after=tuple(after) if after is not None else None,
                limit=limit + 1,
            )
            messages = [await message_of(session, withdrawal, staff=staff) for withdrawal in found[:limit]]
        return messages, paging.next_token(found, limit, "create_time_us", "withdrawal_id")

    async def ListWithdrawals(self, request: service.ListWithdrawalsRequest, context: Any) -> Any:
        user = principals.require_end_user()
        listed, token = await self._list(request, user_id=user.subject, staff=False)
        return service.ListWithdrawalsResponse(withdrawals=listed, next_page_token=token)

    async def CancelWithdrawal(self, request: service.CancelWithdrawalRequest, context: Any) -> Any:
        user = principals.require_end_user()

        async def work(session: AsyncSession) -> service.CancelWithdrawalResponse:
            withdrawal = await self._own(session, user, request.withdrawal_id, lock=True)
            if withdrawal.state not in CANCELLABLE:
                raise errors.InvalidState(
                    f"a {withdrawal.state.name} withdrawal cannot be cancelled",
                    metadata={
                        "withdrawal_id": withdrawal.withdrawal_id,
                        "state": f"WITHDRAWAL_STATE_{withdrawal.state.name}",
                    },
                )
            cancelled = await move(
                session,
                withdrawal,
                State.CANCELLED,
                actor=Actor.USER,
                actor_id=user.subject,
                outcome=Outcome.USER_CANCELLED,
                note="cancelled by the user",
            )
            return service.CancelWithdrawalResponse(
                withdrawal=await message_of(session, cancelled, staff=False)
            )

        response = await idempotency.run_once(
            self.database, SERVICE + "CancelWithdrawal", request, service.CancelWithdrawalResponse, work
        )
        await self._settle(request.withdrawal_id)
        return response

    async def _settle(self, withdrawal_id: str) -> None:
        """Voids the hold now; if the ledger is unreachable the worker does it on its next round."""
        async with self.database.transaction() as session:
            withdrawal = await self._any(session, withdrawal_id)
        with contextlib.suppress(errors.DependencyUnavailable):
            await self.lifecycle.settle(withdrawal)

    async def QuoteWithdrawalFee(self, request: service.QuoteWithdrawalFeeRequest, context: Any) -> Any:
        policy = self._policy(request.asset, "asset")
        amount = int(request.amount)
        if amount > AMOUNT_MAX:
            raise errors.InvalidArgument([errors.FieldViolation("amount", "above 2^256 - 1", "range")])
        stamp = timestamp_pb2.Timestamp()
        stamp.GetCurrentTime()
        return service.QuoteWithdrawalFeeResponse(
            quote=resources.FeeQuote(
                amount=money_pb2.Money(asset=request.asset, amount=str(amount)),
                fee=money_pb2.Money(asset=request.asset, amount=str(policy.fee)),
                total_debit=money_pb2.Money(asset=request.asset, amount=str(amount + policy.fee)),
                quote_time=stamp,
            )
        )

    async def GetWithdrawalLimits(self, request: service.GetWithdrawalLimitsRequest, context: Any) -> Any:
        user = principals.require_end_user()
        level = await self.kyc.level(user.subject, KYC_LEVEL_L0)
        assets = [request.asset] if request.asset else sorted(self.settings.withdrawal_assets)
        if request.asset:
            self._policy(request.asset, "asset")
        limits = []
        async with self.database.transaction() as session:
            for asset in assets:
                used = await self._used(session, user.subject, asset)
                found = domain.limits_for(asset, self.settings.withdrawal_assets[asset], level, used)
                limits.append(
                    resources.AssetWithdrawalLimit(
                        asset=asset,
                        allowed=found.allowed,
                        min_amount=str(found.min_amount),
                        max_amount=str(found.max_amount),
                        daily_limit=str(found.daily_limit),
                        used_amount=str(found.used),
                        remaining_amount=str(found.remaining),
                        fee=str(found.fee),
                    )
                )
        return service.GetWithdrawalLimitsResponse(
            kyc_level=level,  # type: ignore[arg-type]
            limits=limits,
            address_cool_down_hours=math.ceil(self.settings.address_cool_down_s / 3600),
        )

    # Whitelist

    async def CreateWithdrawalAddress(
        self, request: service.CreateWithdrawalAddressRequest, context: Any
    ) -> Any:
        user = principals.require_end_user()
        address_id = domain.address_id_for(user.subject, request.request_id)
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(
                session, SERVICE + "CreateWithdrawalAddress", request, service.CreateWithdrawalAddressResponse
            )
        if replay is not None:
            return replay
        await self._redeem(
            request.step_up_token,
            user,
            auth_resources.STEP_UP_PURPOSE_WITHDRAWAL_ADDRESS_ADD,
            f"withdraw.address.{address_id}",
        )
        chain, text = request.address.chain, request.address.address.lower()
        if await self.kyc.sanctioned(user.subject, chain, text, f"withdraw.address.{address_id}.screen"):
            raise domain.RiskRejected("the address cannot be added", metadata={"address": text})

        async def work(session: AsyncSession) -> service.CreateWithdrawalAddressResponse:
            await store.lock_user(session, user.subject)
            if await store.listed_address(session, user.subject, chain, text) is not None:
                raise errors.AlreadyExists(
                    "the address is already in your whitelist", metadata={"address": text}
                )
            if await store.count_listed(session, user.subject) >= domain.ADDRESSES_PER_USER_MAX:
                raise errors.LimitExceeded(
                    f"at most {domain.ADDRESSES_PER_USER_MAX} addresses", metadata={"limit": "addresses"}
                )
            time_us = now_us()
            cool_down_us = int(self.settings.address_cool_down_s * 1_000_000)
            address = Address(
                address_id=address_id,
                user_id=user.subject,
                chain=chain,
                address=text,
                label=request.label,
                state=AddressState.COOLING_DOWN if cool_down_us else AddressState.ACTIVE,
                usable_time_us=time_us + cool_down_us,
                used=False,
                create_time_us=time_us,
                remove_time_us=None,
                version=1,
            )
            await store.insert_address(session, address)
            message = convert.address_message(address, time_us)
            await events.publish_address(session, message, 1, withdraw_events_pb2.WithdrawalAddressAdded)
            return service.CreateWithdrawalAddressResponse(address=message)

        return await idempotency.run_once(
            self.database,
            SERVICE + "CreateWithdrawalAddress",
            request,
            service.CreateWithdrawalAddressResponse,
            work,
        )

    async def _address(self, session: AsyncSession, user: EndUser, address_id: str) -> Address:
        address = await store.address_by_id(session, address_id)
        if address is None or address.user_id != user.subject:
            raise errors.NotFound(f"no address {address_id}", metadata={"address_id": address_id})
        return address

    async def GetWithdrawalAddress(self, request: service.GetWithdrawalAddressRequest, context: Any) -> Any:
        user = principals.require_end_user()
        async with self.database.transaction() as session:
            address = await self._address(session, user, request.address_id)
        return service.GetWithdrawalAddressResponse(address=convert.address_message(address, now_us()))

    async def ListWithdrawalAddresses(
        self, request: service.ListWithdrawalAddressesRequest, context: Any
    ) -> Any:
        user = principals.require_end_user()
        limit = paging.page_size(request.page_size)
        after = paging.position(request.page_token, "create_time_us", "address_id")
        async with self.database.transaction() as session:
            found = await store.list_addresses(
                session,
                user.subject,
                chain=request.chain,
                include_removed=request.include_removed,
                after=tuple(after) if after is not None else None,
                limit=limit + 1,
            )
        time_us = now_us()
        return service.ListWithdrawalAddressesResponse(
            addresses=[convert.address_message(address, time_us) for address in found[:limit]],
            next_page_token=paging.next_token(found, limit, "create_time_us", "address_id"),
        )

    async def DeleteWithdrawalAddress(
        self, request: service.DeleteWithdrawalAddressRequest, context: Any
    ) -> Any:
        user = principals.require_end_user()

        async def work(session: AsyncSession) -> service.DeleteWithdrawalAddressResponse:
            await store.lock_user(session, user.subject)
            address = await self._address(session, user, request.address_id)
            time_us = now_us()
            if address.state is not AddressState.REMOVED:
                address = replace(
                    address, state=AddressState.REMOVED, remove_time_us=time_us, version=address.version + 1
                )
                await store.update_address(session, address)
                message = convert.address_message(address, time_us)
                await events.publish_address(
                    session, message, address.version, withdraw_events_pb2.WithdrawalAddressRemoved
                )
            return service.DeleteWithdrawalAddressResponse(address=convert.address_message(address, time_us))

        return await idempotency.run_once(
            self.database,
            SERVICE + "DeleteWithdrawalAddress",
            request,
            service.DeleteWithdrawalAddressResponse,
            work,
        )

    # Staff

    async def AdminListWithdrawals(self, request: service.AdminListWithdrawalsRequest, context: Any) -> Any:
        staff = principals.service_or_roles(domain.STAFF_ROLES, "listing withdrawals")
        awaiting = ""
        if request.awaiting_my_approval:
            if staff is None:
                raise errors.InvalidArgument(
                    [errors.FieldViolation("awaiting_my_approval", "needs a staff member as caller")]
                )
            awaiting = staff.subject
        listed, token = await self._list(
            request, user_id=request.user_id, staff=True, tx_hash=request.tx_hash, awaiting=awaiting
        )
        return service.AdminListWithdrawalsResponse(withdrawals=listed, next_page_token=token)

    async def AdminGetWithdrawal(self, request: service.AdminGetWithdrawalRequest, context: Any) -> Any:
        principals.service_or_roles(domain.STAFF_ROLES, "reading withdrawals")
        async with self.database.transaction() as session:
            withdrawal = await self._any(session, request.withdrawal_id)
            return service.AdminGetWithdrawalResponse(
                withdrawal=await message_of(session, withdrawal, staff=True)
            )

    async def ApproveWithdrawal(self, request: service.ApproveWithdrawalRequest, context: Any) -> Any:
        approver = principals.require_roles(domain.APPROVER_ROLES, "approving withdrawals")
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(
                session, SERVICE + "ApproveWithdrawal", request, service.ApproveWithdrawalResponse
            )
            if replay is not None:
                return replay
            withdrawal = await self._any(session, request.withdrawal_id)
        self._check_decider(withdrawal, approver)
        await self._redeem(
            request.step_up_token,
            approver,
            auth_resources.STEP_UP_PURPOSE_STAFF_APPROVAL,
            domain.step_id(withdrawal.withdrawal_id, f"approve.{approver.subject}"),
        )

        async def work(session: AsyncSession) -> service.ApproveWithdrawalResponse:
            current = await self._any(session, request.withdrawal_id, lock=True)
            if request.expected_version and request.expected_version != current.version:
                raise errors.Conflict(
                    "the withdrawal changed since it was reviewed",
                    metadata={"version": str(current.version)},
                )
            decided = await self._decide(session, current, approver, APPROVE, request.comment)
            approvals = [
                d for d in await store.decisions_of(session, current.withdrawal_id) if d.decision == APPROVE
            ]
            if len(approvals) >= current.required_approvals:
                decided = await move(
                    session,
                    decided,
                    State.APPROVED,
                    actor=Actor.STAFF,
                    actor_id=approver.subject,
                    note=f"{len(approvals)} of {current.required_approvals} approvals",
                )
            return service.ApproveWithdrawalResponse(
                withdrawal=await message_of(session, decided, staff=True)
            )

        return await idempotency.run_once(
            self.database, SERVICE + "ApproveWithdrawal", request, service.ApproveWithdrawalResponse, work
        )

    def _check_decider(self, withdrawal: Withdrawal, staff: EndUser) -> None:
        if withdrawal.user_id == staff.subject:
            raise errors.PermissionDenied(
                "the requester cannot decide on their own withdrawal",
                metadata={"withdrawal_id": withdrawal.withdrawal_id},
            )

    async def _decide(
        self, session: AsyncSession, withdrawal: Withdrawal, staff: EndUser, decision: int, comment: str
    ) -> Withdrawal:
        """Records an approver's decision on an AWAITING_APPROVAL withdrawal, with its event."""
        self._check_decider(withdrawal, staff)
        if withdrawal.state is not State.AWAITING_APPROVAL:
            raise errors.InvalidState(
                f"a {withdrawal.state.name} withdrawal takes no approvals",
                metadata={
                    "withdrawal_id": withdrawal.withdrawal_id,
                    "state": f"WITHDRAWAL_STATE_{withdrawal.state.name}",
                },
            )
        previous = {d.approver_id for d in await store.decisions_of(session, withdrawal.withdrawal_id)}
        if staff.subject in previous:
            raise domain.AlreadyDecided(
                "you have already decided on this withdrawal",
                metadata={"withdrawal_id": withdrawal.withdrawal_id, "approver_id": staff.subject},
            )
        record = Decision(withdrawal.withdrawal_id, staff.subject, decision, comment, now_us())
        await store.insert_decision(session, record)
        decided = replace(withdrawal, update_time_us=record.decide_time_us, version=withdrawal.version + 1)
        await store.update_withdrawal(session, decided)
        await events.publish_decision(
            session, await message_of(session, decided, staff=True), convert.approval_message(record)
        )
        return decided

    async def RejectWithdrawal(self, request: service.RejectWithdrawalRequest, context: Any) -> Any:
        staff = principals.require_roles(domain.REJECTER_ROLES, "rejecting withdrawals")

        async def work(session: AsyncSession) -> service.RejectWithdrawalResponse:
            current = await self._any(session, request.withdrawal_id, lock=True)
            self._check_decider(current, staff)
            message = request.user_message or "The withdrawal was not approved."
            if current.state is State.AWAITING_APPROVAL and staff.roles & domain.APPROVER_ROLES:
                current = await self._decide(session, current, staff, REJECT, request.comment)
                outcome = Outcome.APPROVER_REJECTED
            elif current.state in (
                State.HELD,
                State.RISK_REVIEW,
                State.APPROVED,
                State.AWAITING_APPROVAL,
            ) and (staff.roles & domain.OPERATOR_ROLES):
                outcome = Outcome.OPERATOR_REJECTED
            else:
                raise errors.InvalidState(
                    f"a {current.state.name} withdrawal cannot be rejected by this role",
                    metadata={
                        "withdrawal_id": current.withdrawal_id,
                        "state": f"WITHDRAWAL_STATE_{current.state.name}",
                    },
                )
            rejected = await move(
                session,
                current,
                State.REJECTED,
                actor=Actor.STAFF,
                actor_id=staff.subject,
                outcome=outcome,
                outcome_message=message,
                note=request.comment,
            )
            return service.RejectWithdrawalResponse(
                withdrawal=await message_of(session, rejected, staff=True)
            )

        response = await idempotency.run_once(
            self.database, SERVICE + "RejectWithdrawal", request, service.RejectWithdrawalResponse, work
        )
        await self._settle(request.withdrawal_id)
        return response

    async def ReplaceWithdrawalTransaction(
        self, request: service.ReplaceWithdrawalTransactionRequest, context: Any
    ) -> Any:
        principals.require_roles(domain.OPERATOR_ROLES, "replacing withdrawal transactions")
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(
                session,
                SERVICE + "ReplaceWithdrawalTransaction",
                request,
                service.ReplaceWithdrawalTransactionResponse,
            )
            if replay is not None:
                return replay
            withdrawal = await self._any(session, request.withdrawal_id)
            current = [
                t
                for t in await store.transactions_of(session, withdrawal.withdrawal_id)
                if t.tx_hash == withdrawal.tx_hash
            ]
        if withdrawal.state is not State.BROADCAST or not current or current[0].status not in REPLACEABLE:
            raise errors.InvalidState(
                "only a BROADCAST withdrawal with a pending or dropped transaction can be replaced",
                metadata={"withdrawal_id": withdrawal.withdrawal_id},
            )
        if withdrawal.replacements >= self.settings.replacements_max:
            raise errors.LimitExceeded(
                f"at most {self.settings.replacements_max} replacements",
                metadata={"withdrawal_id": withdrawal.withdrawal_id, "limit": "replacements"},
            )
        await self.executor.replace(withdrawal, request.max_fee_per_gas)
        await self.executor.advance(withdrawal)

        async def work(session: AsyncSession) -> service.ReplaceWithdrawalTransactionResponse:
            replaced = await self._any(session, request.withdrawal_id)
            return service.ReplaceWithdrawalTransactionResponse(
                withdrawal=await message_of(session, replaced, staff=True)
            )

        return await idempotency.run_once(
            self.database,
            SERVICE + "ReplaceWithdrawalTransaction",
            request,
            service.ReplaceWithdrawalTransactionResponse,
            work,
        )
