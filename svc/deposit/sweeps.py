"""Sweeps of credited deposits to the hot wallet: the RPCs (CreateSweep, GetSweep, ListSweeps), the
planning of a sweep and the schedule; svc/deposit/sweeping.py executes them.

A sweep plans, for one asset of one chain, the deposit addresses whose custody account (what the
books say the address holds) is at least the threshold: the asset's configured sweep threshold,
or the request's override. Without addresses given, every such address is planned, the one
credited first first, at most 500; given addresses under the threshold are planned SKIPPED. At
most one sweep of a chain and asset is unfinished at a time.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from finmesh.deposit.v1 import deposit_service_pb2 as service
from finmesh.events.v1 import deposit_events_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from svc.deposit import convert, domain, events, store
from svc.deposit.config import DepositSettings
from svc.deposit.domain import ItemState, Sweep, SweepItem, SweepState, Trigger
from svc.deposit.peers import Chains, Custody, Ledger
from svc.kit import errors, idempotency
from svc.kit.amount import AMOUNT_MAX
from svc.kit.client import as_service
from svc.kit.db import Database
from svc.kit.principals import service_or_roles

log = logging.getLogger(__name__)

OPERATOR_ROLES = frozenset({"operator"})
METHOD = "/finmesh.deposit.v1.DepositService/CreateSweep"


def _now_us() -> int:
    return time.time_ns() // 1000


def _time_us(request: service.ListSweepsRequest, field: str) -> int | None:
    return getattr(request, field).ToMicroseconds() if request.HasField(field) else None  # type: ignore[arg-type]


@dataclass(frozen=True)
class Plan:
    """What a new sweep will do: its destination and its items (sweep id still to be given)."""

    chain: str
    asset: str
    native_asset: str
    destination_wallet_id: str
    destination_address: str
    # (address, derivation path, booked balance, skip message or '')
    items: list[tuple[str, str, int, str]]


class Sweeper:
    """The sweep RPCs, the planning of sweeps and the scheduled trigger."""

    def __init__(
        self,
        database: Database,
        settings: DepositSettings,
        ledger: Ledger,
        chains: Chains,
        custody: Custody,
        *,
        can_sign: bool,
    ) -> None:
        self.database = database
        self.settings = settings
        self.ledger = ledger
        self.chains = chains
        self.custody = custody
        self.can_sign = can_sign

    # -- planning -------------------------------------------------------------------------------

    async def plan(self, chain: str, asset: str, addresses: list[str], min_amount: str) -> Plan:
        """The items of a sweep, from the books (see the module doc)."""
        if not self.can_sign:
            raise errors.InvalidState(
                "sweeps need the deposit service's approval key, which is not configured",
                metadata={"chain": chain},
            )
        wallet_id = self.settings.hot_wallets.get(chain)
        if not wallet_id:
            raise errors.InvalidState(f"no hot wallet is configured for {chain}", metadata={"chain": chain})
        info = await self.chains.chain(chain)
        if asset not in info.assets:
            raise errors.InvalidArgument(
                [errors.FieldViolation("asset", f"{asset} is not an asset of the chain gateway")]
            )
        if min_amount and int(min_amount) > AMOUNT_MAX:
            raise errors.InvalidArgument([errors.FieldViolation("min_amount", "above 2^256 - 1", "range")])
        hot = await self.custody.wallet(wallet_id)
        async with self.database.transaction() as session:
            config = await store.config_of(session, chain, asset.split(":", 1)[1])
            explicit = [address.lower() for address in addresses]
            candidates = explicit or await store.credited_addresses(session, chain, asset)
            paths = await store.derivation_paths(session, chain, candidates)
        unknown = [address for address in explicit if address not in paths]
        if unknown:
            raise errors.InvalidArgument(
                [errors.FieldViolation("addresses", f"{unknown[0]} is not a deposit address of {chain}")]
            )
        threshold = int(min_amount) if min_amount else (config.sweep_threshold if config is not None else 0)
        candidates = [address for address in candidates if address in paths]
        accounts = {address: await self.ledger.custody_account(address, asset) for address in candidates}
        booked = await self.ledger.posted_balances(list(accounts.values()))
        items: list[tuple[str, str, int, str]] = []
        for address in candidates:
            balance = booked.get(accounts[address], 0)
            worth = balance > 0 and balance >= threshold
            if worth or explicit:
                message = (
                    "" if worth else f"booked balance {balance} is under the sweep threshold {threshold}"
                )
                items.append((address, paths[address], balance, message))
            if len(items) >= domain.SWEEP_ITEMS_MAX:
                break
        return Plan(chain, asset, info.native_asset, wallet_id, hot.address.lower(), items)

    async def _insert(
        self, session: AsyncSession, plan: Plan, trigger: Trigger, requested_by: str
    ) -> tuple[Sweep, list[SweepItem]]:
        running = await store.running_sweep(session, plan.chain, plan.asset)
        if running is not None:
            raise domain.SweepRunning(
                f"sweep {running.sweep_id} of {plan.asset} has not finished",
                metadata={"sweep_id": running.sweep_id, "asset": plan.asset},
            )
        sweep = Sweep(
            sweep_id=str(uuid.uuid4()),
            chain=plan.chain,
            asset=plan.asset,
            native_asset=plan.native_asset,
            destination_wallet_id=plan.destination_wallet_id,
            destination_address=plan.destination_address,
            state=SweepState.CREATED,
            trigger=trigger,
            requested_by=requested_by,
            create_time_us=_now_us(),
        )
        items = [
            SweepItem(
                sweep_id=sweep.sweep_id,
                address=address,
                position=position,
                derivation_path=path,
                amount=balance,
                state=ItemState.SKIPPED if message else ItemState.PENDING,
                message=message,
            )
            for position, (address, path, balance, message) in enumerate(plan.items)
        ]
        await store.insert_sweep(session, sweep, items)
        await events.publish_sweep(session, deposit_events_pb2.DepositSweepCreated, sweep, items)
        return sweep, items

    # -- RPCs -----------------------------------------------------------------------------------

    async def create(self, request: service.CreateSweepRequest) -> service.CreateSweepResponse:
        user = service_or_roles(OPERATOR_ROLES, "starting a sweep")
        requested_by = user.subject if user is not None else domain.SYSTEM_PRINCIPAL
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(session, METHOD, request, service.CreateSweepResponse)
        if replay is not None:
            return replay
        with as_service():
            plan = await self.plan(request.chain, request.asset, list(request.addresses), request.min_amount)

        async def work(session: AsyncSession) -> service.CreateSweepResponse:
            sweep, items = await self._insert(session, plan, Trigger.MANUAL, requested_by)
            return service.CreateSweepResponse(sweep=convert.sweep_message(sweep, items))

        return await idempotency.run_once(self.database, METHOD, request, service.CreateSweepResponse, work)

    async def get(self, request: service.GetSweepRequest) -> service.GetSweepResponse:
        service_or_roles(OPERATOR_ROLES, "reading a sweep")
        async with self.database.transaction() as session:
            sweep = await store.sweep_by_id(session, request.sweep_id)
            items = await store.items_of(session, request.sweep_id) if sweep is not None else []
        if sweep is None:
            raise errors.NotFound(f"no sweep {request.sweep_id}", metadata={"sweep_id": request.sweep_id})
        return service.GetSweepResponse(sweep=convert.sweep_message(sweep, items))

    async def list(
        self, request: service.ListSweepsRequest, after: tuple[int, str] | None, limit: int
    ) -> list[Sweep]:
        """Sweeps newest first, from after a page position; the servicer pages them."""
        service_or_roles(OPERATOR_ROLES, "listing sweeps")
        async with self.database.transaction() as session:
            return await store.list_sweeps(
                session,
                after=after,
                limit=limit,
                chain=request.chain,
                asset=request.asset,
                state=int(request.state),
                create_after_us=_time_us(request, "create_after"),
                create_before_us=_time_us(request, "create_before"),
            )

    # -- the schedule ---------------------------------------------------------------------------

    async def schedule_once(self) -> int:
        """A SCHEDULED sweep of every asset with deposit settings that has nothing unfinished and
        something worth sweeping; returns how many were created."""
        async with self.database.transaction() as session:
            configs = await store.list_configs(session, "", None, 1000)
        created = 0
        for config in configs:
            if config.chain not in self.settings.hot_wallets:
                continue
            try:
                plan = await self.plan(config.chain, config.asset, [], "")
                if not plan.items:
                    continue
                async with self.database.transaction() as session:
                    await self._insert(session, plan, Trigger.SCHEDULED, domain.SYSTEM_PRINCIPAL)
                created += 1
            except errors.DomainError as refusal:
                log.info("no scheduled sweep of %s now: %s", config.asset, refusal.message)
        return created
