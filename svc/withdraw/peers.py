"""The calls the withdraw service makes to its peers: auth (step-up tokens), account (the user's
account of an asset), ledger (the hold, its post or void, the gas), kyc (level and sanctions) and
custody (hot wallets). Each turns a peer's refusal into this service's typed error (kit remote)."""

from __future__ import annotations

import hashlib

import grpc
from finmesh.account.v1 import account_resources_pb2 as account_resources
from finmesh.account.v1 import account_service_pb2 as account_service
from finmesh.account.v1 import account_service_pb2_grpc as account_grpc
from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.auth.v1 import auth_service_pb2 as auth_service
from finmesh.auth.v1 import auth_service_pb2_grpc as auth_grpc
from finmesh.common.v1 import money_pb2
from finmesh.custody.v1 import custody_resources_pb2 as custody_resources
from finmesh.custody.v1 import custody_service_pb2 as custody_service
from finmesh.custody.v1 import custody_service_pb2_grpc as custody_grpc
from finmesh.kyc.v1 import kyc_service_pb2 as kyc_service
from finmesh.kyc.v1 import kyc_service_pb2_grpc as kyc_grpc
from finmesh.ledger.v1 import ledger_resources_pb2 as ledger_resources
from finmesh.ledger.v1 import ledger_service_pb2 as ledger_service
from finmesh.ledger.v1 import ledger_service_pb2_grpc as ledger_grpc

from svc.kit import errors, remote
from svc.kit.client import as_service
from svc.kit.context import EndUser
from svc.withdraw import domain
from svc.withdraw.domain import Withdrawal

CALL_TIMEOUT_S = 10.0
DEBIT = ledger_resources.POSTING_SIDE_DEBIT
CREDIT = ledger_resources.POSTING_SIDE_CREDIT
MAIN_ACCOUNT = account_resources.ACCOUNT_KIND_MAIN
SANCTIONS_MATCH = 3  # finmesh.common.v1.Decision DENY


class StepUp:
    """Step-up tokens spent at the auth service, once per operation (a retried operation redeems
    the same token again under the same request id)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._auth = auth_grpc.AuthServiceStub(channel)

    async def redeem(
        self, token: str, user: EndUser, purpose: auth_resources.StepUpPurpose.ValueType, request_id: str
    ) -> None:
        request = auth_service.RedeemStepUpTokenRequest(
            request_id=request_id,
            step_up_token=token,
            user_id=user.subject,
            session_id=user.session_id,
            purpose=purpose,
        )
        try:
            # As the withdraw service itself: redeeming is internal to the auth service.
            with as_service():
                await self._auth.RedeemStepUpToken(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "auth") from None


class Accounts:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = account_grpc.AccountServiceStub(channel)

    async def main_account(self, user_id: str, asset: str) -> account_resources.Account:
        """The user's MAIN account of `asset`; FAILED_PRECONDITION when there is none, FROZEN when
        it is frozen."""
        try:
            with as_service():
                listed = await self._stub.ListAccounts(
                    account_service.ListAccountsRequest(user_id=user_id, asset=asset, kind=MAIN_ACCOUNT),
                    timeout=CALL_TIMEOUT_S,
                )
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "account") from None
        if not listed.accounts:
            raise errors.InsufficientFunds(f"no {asset} account to withdraw from", metadata={"asset": asset})
        account = listed.accounts[0]
        if account.status == account_resources.ACCOUNT_STATUS_FROZEN:
            raise errors.Frozen(f"the {asset} account is frozen", metadata={"account_id": account.account_id})
        if account.status != account_resources.ACCOUNT_STATUS_ACTIVE:
            raise errors.InvalidState(
                f"the {asset} account is not active", metadata={"account_id": account.account_id}
            )
        return account


class Codes:
    """The ledger codes of the platform's accounts of an asset."""

    def __init__(self, custody: str, fee_revenue: str, gas_expense: str) -> None:
        self.custody = custody
        self.fee_revenue = fee_revenue
        self.gas_expense = gas_expense


class Ledger:
    """The withdrawal's entries: the PENDING hold of amount plus fee (user debited, custody and fee
    revenue credited), its post or void, and the gas (expense debited, custody credited). Every
    entry id derives from the withdrawal, so a repeated call never books twice."""

    def __init__(self, channel: grpc.aio.Channel, codes: Codes) -> None:
        self._stub = ledger_grpc.LedgerServiceStub(channel)
        self.codes = codes
        self._opened: set[str] = set()

    async def _ensure(self, code: str, kind: ledger_resources.AccountType.ValueType, asset: str) -> None:
        if code in self._opened:
            return
        request = ledger_service.CreateLedgerAccountRequest(
            request_id="withdraw.open." + hashlib.sha256(code.encode()).hexdigest()[:40],
            account=ledger_resources.LedgerAccount(
                code=code,
                type=kind,
                asset=asset,
                constraint=ledger_resources.BALANCE_CONSTRAINT_NONE,
            ),
        )
        try:
            with as_service():
                await self._stub.CreateLedgerAccount(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            refused = remote.translate(error, "ledger")
            if refused.reason != "ALREADY_EXISTS":
                raise refused from None
        self._opened.add(code)

    async def _entry(self, entry: ledger_resources.JournalEntry) -> None:
        try:
            with as_service():
                await self._stub.CreateJournalEntry(
                    ledger_service.CreateJournalEntryRequest(request_id=entry.entry_id, entry=entry),
                    timeout=CALL_TIMEOUT_S,
                )
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "ledger") from None

    async def hold(self, withdrawal: Withdrawal) -> None:
        asset = withdrawal.asset
        custody = self.codes.custody.format(asset=asset)
        revenue = self.codes.fee_revenue.format(asset=asset)
        await self._ensure(custody, ledger_resources.ACCOUNT_TYPE_ASSET, asset)
        postings = [
            ledger_resources.Posting(
                account_id=withdrawal.user_ledger_account_id,
                side=DEBIT,
                asset=asset,
                amount=str(withdrawal.total),
            ),
            ledger_resources.Posting(
                account_code=custody, side=CREDIT, asset=asset, amount=str(withdrawal.amount)
            ),
        ]
        if withdrawal.fee:
            await self._ensure(revenue, ledger_resources.ACCOUNT_TYPE_REVENUE, asset)
            postings.append(
                ledger_resources.Posting(
                    account_code=revenue, side=CREDIT, asset=asset, amount=str(withdrawal.fee)
                )
            )
        await self._entry(
            ledger_resources.JournalEntry(
                entry_id=withdrawal.hold_entry_id,
                kind=ledger_resources.ENTRY_KIND_PENDING,
                category=domain.HOLD_CATEGORY,
                description=f"Withdrawal {withdrawal.withdrawal_id}",
                correlation_id=withdrawal.withdrawal_id,
                postings=postings,
            )
        )

    async def post(self, withdrawal: Withdrawal) -> None:
        try:
            with as_service():
                await self._stub.PostPendingEntry(
                    ledger_service.PostPendingEntryRequest(
                        request_id=domain.post_entry_id(withdrawal.withdrawal_id),
                        entry_id=domain.post_entry_id(withdrawal.withdrawal_id),
                        pending_entry_id=withdrawal.hold_entry_id,
                    ),
                    timeout=CALL_TIMEOUT_S,
                )
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "ledger") from None

    async def void(self, withdrawal: Withdrawal, why: str) -> None:
        try:
            with as_service():
                await self._stub.VoidPendingEntry(
                    ledger_service.VoidPendingEntryRequest(
                        request_id=domain.void_entry_id(withdrawal.withdrawal_id),
                        entry_id=domain.void_entry_id(withdrawal.withdrawal_id),
                        pending_entry_id=withdrawal.hold_entry_id,
                        description=why[:256] or "withdrawal ended",
                    ),
                    timeout=CALL_TIMEOUT_S,
                )
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "ledger") from None

    async def gas(self, withdrawal: Withdrawal, asset: str, amount: int) -> None:
        """The network fee the hot wallet paid, booked to the platform's gas expense."""
        if amount == 0:
            return
        custody = self.codes.custody.format(asset=asset)
        expense = self.codes.gas_expense.format(asset=asset)
        await self._ensure(custody, ledger_resources.ACCOUNT_TYPE_ASSET, asset)
        await self._ensure(expense, ledger_resources.ACCOUNT_TYPE_EXPENSE, asset)
        await self._entry(
            ledger_resources.JournalEntry(
                entry_id=domain.gas_entry_id(withdrawal.withdrawal_id),
                kind=ledger_resources.ENTRY_KIND_STANDARD,
                category=domain.GAS_CATEGORY,
                description=f"Gas of withdrawal {withdrawal.withdrawal_id}",
                correlation_id=withdrawal.withdrawal_id,
                postings=[
                    ledger_resources.Posting(
                        account_code=expense, side=DEBIT, asset=asset, amount=str(amount)
                    ),
                    ledger_resources.Posting(
                        account_code=custody, side=CREDIT, asset=asset, amount=str(amount)
                    ),
                ],
            )
        )


class Kyc:
    """KYC levels and the sanctions screening of destinations (only where kyc is deployed)."""

    def __init__(self, channel: grpc.aio.Channel | None) -> None:
        self._stub = kyc_grpc.KycServiceStub(channel) if channel is not None else None

    async def level(self, user_id: str, default: int) -> int:
        if self._stub is None:
            return default
        try:
            with as_service():
                found = await self._stub.GetKycProfile(
                    kyc_service.GetKycProfileRequest(user_id=user_id), timeout=CALL_TIMEOUT_S
                )
        except grpc.aio.AioRpcError as error:
            refused = remote.translate(error, "kyc")
            if refused.reason == "NOT_FOUND":
                return default
            raise refused from None
        return int(found.profile.level) or default

    async def sanctioned(self, user_id: str, chain: str, address: str, request_id: str) -> bool:
        if self._stub is None:
            return False
        try:
            with as_service():
                screened = await self._stub.ScreenAddress(
                    kyc_service.ScreenAddressRequest(
                        request_id=request_id,
                        address=money_pb2.ChainAddress(chain=chain, address=address),
                        user_id=user_id,
                        context=5,  # type: ignore[arg-type]  # WITHDRAWAL_DESTINATION
                    ),
                    timeout=CALL_TIMEOUT_S,
                )
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "kyc") from None
        return int(screened.screening.decision) == SANCTIONS_MATCH


class Custody:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = custody_grpc.CustodyServiceStub(channel)

    async def wallet(self, wallet_id: str) -> custody_resources.CustodyWallet:
        try:
            with as_service():
                found = await self._stub.GetCustodyWallet(
                    custody_service.GetCustodyWalletRequest(wallet_id=wallet_id), timeout=CALL_TIMEOUT_S
                )
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "custody") from None
        return found.wallet

    async def sign(
        self, request: custody_service.SignTransactionRequest
    ) -> custody_service.SignTransactionResponse:
        """Raw errors: the execution tells a refusal (never retried) from an outage (retried)."""
        with as_service():
            return await self._stub.SignTransaction(request, timeout=CALL_TIMEOUT_S)
