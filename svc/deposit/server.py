"""DepositService: translates the contract's messages to the domain and back; the processor makes
the changes that events and operators cause, the sweeper runs sweeps."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from finmesh.deposit.v1 import deposit_service_pb2 as service
from finmesh.deposit.v1 import deposit_service_pb2_grpc as service_grpc
from google.protobuf.message import Message
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from svc.deposit import convert, domain, events, store
from svc.deposit.domain import Config, Deposit, Resolution, State
from svc.deposit.peers import Chains
from svc.deposit.processor import Processor
from svc.deposit.sweeps import Sweeper
from svc.kit import errors, idempotency, paging
from svc.kit.amount import AMOUNT_MAX
from svc.kit.db import Database
from svc.kit.principals import require_end_user, service_or_roles

SERVICE = "/finmesh.deposit.v1.DepositService/"
STAFF_ROLES = frozenset({"support", "operator", "approver", "admin", "auditor"})
APPROVER_ROLES = frozenset({"approver"})
ADMIN_ROLES = frozenset({"admin"})
CONFIG_FIELDS = ("minimum_amount", "confirmation_depth", "sweep_threshold")
DEPOSIT_ORDER = ("seen_time_us", "deposit_id", "q")
CONFIG_ORDER = ("chain", "symbol", "q")
SWEEP_ORDER = ("create_time_us", "sweep_id", "q")


def _now_us() -> int:
    return time.time_ns() // 1000


def _filters_digest(request: Message) -> str:
    """What a page token is bound to: the request without its page fields."""
    bound = type(request)()
    bound.CopyFrom(request)
    for name in ("page_size", "page_token"):
        bound.ClearField(name)
    return hashlib.sha256(bound.SerializeToString(deterministic=True)).hexdigest()[:16]


def _after(request: Message, names: tuple[str, ...]) -> tuple[Any, ...] | None:
    found = paging.position(request.page_token, *names)  # type: ignore[attr-defined]
    if found is None:
        return None
    if found[-1] != _filters_digest(request):
        raise errors.InvalidArgument(
            [errors.FieldViolation("page_token", "the other fields changed since the token was issued")]
        )
    return found[:-1]


def _next_token(request: Message, found: list[Any], limit: int, names: tuple[str, ...]) -> str:
    if len(found) <= limit:
        return ""
    last = found[limit - 1]
    position: dict[str, Any] = {name: getattr(last, name) for name in names[:-1]}
    position["q"] = _filters_digest(request)
    return paging.encode_token(position)


def _amount(text: str, field: str) -> int:
    amount = int(text or "0")
    if amount > AMOUNT_MAX:
        raise errors.InvalidArgument([errors.FieldViolation(field, "above 2^256 - 1", "range")])
    return amount


def _time_us(request: Message, field: str) -> int | None:
    return getattr(request, field).ToMicroseconds() if request.HasField(field) else None


class DepositServicer(service_grpc.DepositServiceServicer):
    """The deposit service's gRPC surface."""

    def __init__(self, database: Database, processor: Processor, chains: Chains, sweeper: Sweeper) -> None:
        self.database = database
        self.processor = processor
        self.chains = chains
        self.sweeper = sweeper

    async def _messages(self, found: list[Deposit]) -> list[Any]:
        """Deposits with confirmations from the follower's progress (left out if it cannot be read)."""
        progress: dict[str, int | None] = {}
        for chain in {deposit.chain for deposit in found}:
            try:
                progress[chain] = await self.chains.last_block(chain)
            except errors.DomainError:
                progress[chain] = None
        return [convert.deposit_message(deposit, progress[deposit.chain]) for deposit in found]

    async def _list(self, request: Any, filters: dict[str, Any]) -> tuple[list[Any], str]:
        limit = paging.page_size(request.page_size)
        after = _after(request, DEPOSIT_ORDER)
        async with self.database.transaction() as session:
            found = await store.list_deposits(
                session,
                after=(int(after[0]), str(after[1])) if after else None,
                limit=limit + 1,
                filters=filters,
                states=[State(state) for state in request.states],
                seen_after_us=_time_us(request, "seen_after"),
                seen_before_us=_time_us(request, "seen_before"),
            )
        return await self._messages(found[:limit]), _next_token(request, found, limit, DEPOSIT_ORDER)

    async def _deposit(self, deposit_id: str, user_id: str | None = None) -> Any:
        async with self.database.transaction() as session:
            deposit = await store.deposit_by_id(session, deposit_id)
        if deposit is None or (user_id is not None and deposit.user_id != user_id):
            raise errors.NotFound(f"no deposit {deposit_id}", metadata={"deposit_id": deposit_id})
        return (await self._messages([deposit]))[0]

    async def ListDeposits(self, request: service.ListDepositsRequest, context: Any) -> Any:
        """The caller's deposits, newest first."""
        user = require_end_user()
        filters = {"user_id": user.subject, "chain": request.chain, "asset": request.asset}
        deposits, token = await self._list(request, filters)
        return service.ListDepositsResponse(deposits=deposits, next_page_token=token)

    async def GetDeposit(self, request: service.GetDepositRequest, context: Any) -> Any:
        """One of the caller's deposits; another user's is NOT_FOUND (no enumeration)."""
        user = require_end_user()
        return service.GetDepositResponse(deposit=await self._deposit(request.deposit_id, user.subject))

    async def AdminListDeposits(self, request: service.AdminListDepositsRequest, context: Any) -> Any:
        """Deposits of any user, for staff and internal callers."""
        service_or_roles(STAFF_ROLES, "listing every user's deposits")
        filters = {
            "user_id": request.user_id,
            "chain": request.chain,
            "asset": request.asset,
            "tx_hash": request.tx_hash.lower(),
            "to_address": request.to_address.lower(),
            "sweep_id": request.sweep_id,
        }
        deposits, token = await self._list(request, filters)
        return service.AdminListDepositsResponse(deposits=deposits, next_page_token=token)

    async def AdminGetDeposit(self, request: service.AdminGetDepositRequest, context: Any) -> Any:
        """Any deposit, for staff and internal callers."""
        service_or_roles(STAFF_ROLES, "reading any deposit")
        return service.AdminGetDepositResponse(deposit=await self._deposit(request.deposit_id))

    async def ResolveDeposit(self, request: service.ResolveDepositRequest, context: Any) -> Any:
        """FROZEN -> CREDITED (RELEASE) or REVERSED (REVERSE), once per request_id."""
        user = service_or_roles(APPROVER_ROLES, "resolving a frozen deposit")
        resolution = Resolution(request.resolution)
        if resolution is Resolution.REVERSE and not request.approval_id:
            # The reversal captures the user's frozen funds, which the account service only does
            # under an approved (maker-checker) admin action.
            raise errors.InvalidArgument(
                [
                    errors.FieldViolation(
                        "approval_id", "REVERSE needs the admin service's approval", "required"
                    )
                ]
            )
        by = user.subject if user is not None else "admin"

        async def work(session: AsyncSession) -> service.ResolveDepositResponse:
            resolved = await self.processor.resolve(
                session, request.deposit_id, resolution, by, request.note, request.approval_id
            )
            return service.ResolveDepositResponse(deposit=convert.deposit_message(resolved))

        return await idempotency.run_once(
            self.database, SERVICE + "ResolveDeposit", request, service.ResolveDepositResponse, work
        )

    async def ListDepositConfigs(self, request: service.ListDepositConfigsRequest, context: Any) -> Any:
        """Deposit settings of the assets that have any, by asset id. Public."""
        limit = paging.page_size(request.page_size)
        after = _after(request, CONFIG_ORDER)
        async with self.database.transaction() as session:
            found = await store.list_configs(
                session, request.chain, (str(after[0]), str(after[1])) if after else None, limit + 1
            )
        return service.ListDepositConfigsResponse(
            configs=[convert.config_message(config) for config in found[:limit]],
            next_page_token=_next_token(request, found, limit, CONFIG_ORDER),
        )

    async def UpdateDepositConfig(self, request: service.UpdateDepositConfigRequest, context: Any) -> Any:
        """Changes (or with allow_missing creates) an asset's settings. Admin role."""
        user = service_or_roles(ADMIN_ROLES, "changing deposit settings")
        paths = list(request.update_mask.paths)
        if not paths or any(path not in CONFIG_FIELDS for path in paths):
            raise errors.InvalidArgument(
                [errors.FieldViolation("update_mask", f"paths must be among {', '.join(CONFIG_FIELDS)}")]
            )
        wanted = request.config
        info = await self.chains.chain(wanted.chain)
        asset = f"{wanted.chain}:{wanted.symbol}"
        if asset not in info.assets:
            raise errors.InvalidArgument(
                [errors.FieldViolation("config.symbol", f"{asset} is not an asset of the chain gateway")]
            )
        values = {
            "minimum_amount": _amount(wanted.minimum_amount, "config.minimum_amount"),
            "confirmation_depth": wanted.confirmation_depth,
            "sweep_threshold": _amount(wanted.sweep_threshold, "config.sweep_threshold"),
        }
        if "confirmation_depth" in paths:
            domain.check_depth(wanted.confirmation_depth, info.confirmation_depth)

        async def work(session: AsyncSession) -> service.UpdateDepositConfigResponse:
            current = await store.config_of(session, wanted.chain, wanted.symbol, lock=True)
            if current is None and not request.allow_missing:
                raise errors.NotFound(f"no deposit settings for {asset}", metadata={"asset": asset})
            if current is not None and wanted.version and wanted.version != current.version:
                raise errors.Conflict(
                    f"settings of {asset} are at version {current.version}",
                    metadata={"asset": asset, "version": str(current.version)},
                )
            base = current or Config(chain=wanted.chain, symbol=wanted.symbol)
            changed = Config(
                chain=base.chain,
                symbol=base.symbol,
                **{name: values[name] if name in paths else getattr(base, name) for name in CONFIG_FIELDS},
                update_time_us=_now_us(),
                update_user_id=user.subject if user is not None else "service",
                version=base.version + 1,
            )
            await store.put_config(session, changed)
            await events.publish_config_changed(session, changed)
            return service.UpdateDepositConfigResponse(config=convert.config_message(changed))

        method = SERVICE + "UpdateDepositConfig"
        try:
            return await idempotency.run_once(
                self.database, method, request, service.UpdateDepositConfigResponse, work
            )
        except IntegrityError:
            raise errors.Conflict(
                f"settings of {asset} were created concurrently", metadata={"asset": asset}
            ) from None

    async def CreateSweep(self, request: service.CreateSweepRequest, context: Any) -> Any:
        """Plans a sweep of one asset to the hot wallet; it runs in the background."""
        return await self.sweeper.create(request)

    async def GetSweep(self, request: service.GetSweepRequest, context: Any) -> Any:
        """One sweep with its items."""
        return await self.sweeper.get(request)

    async def ListSweeps(self, request: service.ListSweepsRequest, context: Any) -> Any:
        """Sweeps newest first, without items."""
        limit = paging.page_size(request.page_size)
        after = _after(request, SWEEP_ORDER)
        found = await self.sweeper.list(request, (int(after[0]), str(after[1])) if after else None, limit + 1)
        return service.ListSweepsResponse(
            sweeps=[convert.sweep_message(sweep) for sweep in found[:limit]],
            next_page_token=_next_token(request, found, limit, SWEEP_ORDER),
        )
