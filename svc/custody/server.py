"""CustodyService: translates the contract's messages to the domain and back.

Who may call what: signing and the extended public key are for internal callers (no end user);
the inventory, movements and the signature log are for staff end users whose roles come from the
JWT the edge forwards (verified by the kit): admin creates and re-enables wallets, operators
disable wallets and request and cancel movements, approvers decide on movements, auditors read.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from finmesh.custody.v1 import custody_resources_pb2 as resources
from finmesh.custody.v1 import custody_service_pb2 as service
from finmesh.custody.v1 import custody_service_pb2_grpc as service_grpc
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from svc.custody import convert, domain, events, store
from svc.custody.config import ChainAssets
from svc.custody.domain import (
    Approval,
    ChainFamily,
    Decision,
    Movement,
    MovementState,
    Wallet,
    WalletKind,
    WalletState,
)
from svc.custody.hd import evm_address
from svc.custody.keys import Backend, DepositRootKeys, KeyRecord, Keys
from svc.custody.movements import open_movement
from svc.custody.rebalance import Rebalancer, plan_message
from svc.custody.signing import Signing
from svc.kit import errors, idempotency, paging
from svc.kit.context import call
from svc.kit.db import Database

SERVICE = "/finmesh.custody.v1.CustodyService/"
READER_ROLES = frozenset({"operator", "approver", "admin", "auditor"})


def _now_us() -> int:
    return time.time_ns() // 1000


def _staff(*roles: str) -> str:
    """The end user's id if they hold one of `roles`; PERMISSION_DENIED otherwise."""
    served = call()
    user = served.user if served is not None else None
    if user is None:
        raise errors.PermissionDenied(f"needs a staff member with role {' or '.join(roles)}")
    if not user.roles & set(roles):
        raise errors.PermissionDenied(
            f"role {' or '.join(roles)} required", metadata={"required_roles": ",".join(roles)}
        )
    return user.subject


def _internal_or_reader() -> None:
    """Internal callers (no end user) and staff readers."""
    served = call()
    if served is not None and served.user is not None:
        _staff(*READER_ROLES)


def _internal() -> str:
    """The calling service; PERMISSION_DENIED for an end user."""
    served = call()
    if served is not None and served.user is not None:
        raise errors.PermissionDenied("only services call this method, never an end user")
    return served.caller if served is not None else ""


def _time_us(message: Any, name: str) -> int | None:
    return int(getattr(message, name).ToMicroseconds()) if message.HasField(name) else None


class CustodyServicer(service_grpc.CustodyServiceServicer):
    """The custody service's gRPC surface."""

    def __init__(
        self,
        database: Database,
        keys: Mapping[Backend, Keys],
        default_backend: Backend,
        roots: DepositRootKeys,
        signing: Signing,
        chains: Mapping[str, ChainAssets],
        approval_window_s: int,
        rebalancer: Rebalancer,
    ) -> None:
        self.database = database
        self.keys = keys
        self.default_backend = default_backend
        self.roots = roots
        self.signing = signing
        self.chains = chains
        self.approval_window_s = approval_window_s
        self.rebalancer = rebalancer

    # Wallets

    async def _wallet(self, session: AsyncSession, wallet_id: str, *, lock: bool = False) -> Wallet:
        wallet = await store.wallet_by_id(session, wallet_id, lock=lock)
        if wallet is None:
            raise errors.NotFound(f"no wallet {wallet_id}", metadata={"wallet_id": wallet_id})
        return wallet

    async def ListCustodyWallets(self, request: service.ListCustodyWalletsRequest, context: Any) -> Any:
        """Wallets ordered by name."""
        _internal_or_reader()
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token)
        async with self.database.transaction() as session:
            found = await store.list_wallets(
                session, kind=int(request.kind), chain=request.chain, state=int(request.state),
                after=str(position.get("name", "")), limit=limit + 1,
            )  # fmt: skip
        response = service.ListCustodyWalletsResponse(
            wallets=[convert.wallet_message(w) for w in found[:limit]]
        )
        if len(found) > limit:
            response.next_page_token = paging.encode_token({"name": found[limit - 1].name})
        return response

    async def GetCustodyWallet(self, request: service.GetCustodyWalletRequest, context: Any) -> Any:
        _internal_or_reader()
        async with self.database.transaction() as session:
            wallet = await self._wallet(session, request.wallet_id)
        return service.GetCustodyWalletResponse(wallet=convert.wallet_message(wallet))

    def _backend(self, kind: WalletKind, requested: int) -> Backend:
        if kind is WalletKind.DEPOSIT_ROOT:
            if requested == Backend.HSM_PKCS11:
                raise errors.InvalidArgument(
                    [
                        errors.FieldViolation(
                            "backend",
                            "a deposit root's seed is an envelope (PKCS#11 cannot derive BIP-32 child keys); "
                            "its master key is in the HSM when one is configured",
                        )
                    ]
                )
            return Backend.SOFTWARE_ENVELOPE
        backend = Backend(requested) if requested else self.default_backend
        if backend not in self.keys:
            raise errors.InvalidArgument(
                [errors.FieldViolation("backend", f"{backend.name} is not configured in this deployment")]
            )
        return backend

    async def CreateCustodyWallet(self, request: service.CreateCustodyWalletRequest, context: Any) -> Any:
        """Generates the key in its backend and registers the wallet, ACTIVE."""
        actor = _staff("admin")
        kind = WalletKind(request.kind)
        domain.check_required_approvals(kind, request.required_approvals)
        unknown = [chain for chain in request.chains if chain not in self.chains]
        if unknown:
            raise errors.InvalidArgument(
                [errors.FieldViolation("chains", f"not configured in custody: {', '.join(unknown)}")]
            )
        backend = self._backend(kind, int(request.backend))

        async def work(session: AsyncSession) -> service.CreateCustodyWalletResponse:
            if await store.wallet_by_name(session, request.name) is not None:
                raise errors.AlreadyExists(
                    f"a wallet is named {request.name}", metadata={"name": request.name}
                )
            key_id = f"custody-{uuid.uuid4().hex}"
            key: KeyRecord = (
                await self.roots.generate(key_id)
                if kind is WalletKind.DEPOSIT_ROOT
                else await self.keys[backend].generate(key_id)
            )
            now_us = _now_us()
            wallet = Wallet(
                wallet_id=str(uuid.uuid4()),
                name=request.name,
                kind=kind,
                chain_family=ChainFamily(request.chain_family),
                chains=tuple(request.chains),
                address="" if kind is WalletKind.DEPOSIT_ROOT else evm_address(key.public_key),
                key_id=key.key_id,
                backend=int(key.backend),
                public_key=key.public_key,
                backend_reference=key.reference,
                sealed=key.sealed,
                xpub=key.xpub,
                state=WalletState.ACTIVE,
                required_approvals=request.required_approvals,
                disable_reason="",
                disabled_by="",
                version=1,
                create_time_us=now_us,
                update_time_us=now_us,
            )
            await store.insert_wallet(session, wallet)
            message = convert.wallet_message(wallet)
            await events.publish_wallet_created(session, message, wallet.version, actor)
            return service.CreateCustodyWalletResponse(wallet=message)

        return await idempotency.run_once(
            self.database, SERVICE + "CreateCustodyWallet", request, service.CreateCustodyWalletResponse, work
        )

    async def _change_state(
        self, request: Any, method: str, response_type: Any, target: WalletState, actor: str
    ) -> Any:
        async def work(session: AsyncSession) -> Any:
            wallet = await self._wallet(session, request.wallet_id, lock=True)
            domain.transition_wallet(wallet, target)
            if target is WalletState.ACTIVE and actor == wallet.disabled_by:
                raise errors.PermissionDenied(
                    "the operator who disabled a wallet may not re-enable it",
                    metadata={"wallet_id": wallet.wallet_id},
                )
            disabling = target is WalletState.DISABLED
            changed = replace(
                wallet, state=target, disable_reason=request.reason if disabling else "",
                disabled_by=actor if disabling else "", version=wallet.version + 1, update_time_us=_now_us(),
            )  # fmt: skip
            await store.update_wallet_state(session, changed)
            message = convert.wallet_message(changed)
            await events.publish_wallet_state_changed(
                session, message, changed.version, int(wallet.state), actor, request.reason
            )
            return response_type(wallet=message)

        return await idempotency.run_once(self.database, SERVICE + method, request, response_type, work)

    async def DisableCustodyWallet(self, request: service.DisableCustodyWalletRequest, context: Any) -> Any:
        """ACTIVE -> DISABLED: every later signature request is refused."""
        actor = _staff("operator", "admin")
        return await self._change_state(
            request, "DisableCustodyWallet", service.DisableCustodyWalletResponse, WalletState.DISABLED, actor
        )

    async def EnableCustodyWallet(self, request: service.EnableCustodyWalletRequest, context: Any) -> Any:
        """DISABLED -> ACTIVE, by an admin other than the one who disabled it."""
        actor = _staff("admin")
        return await self._change_state(
            request, "EnableCustodyWallet", service.EnableCustodyWalletResponse, WalletState.ACTIVE, actor
        )

    async def GetExtendedPublicKey(self, request: service.GetExtendedPublicKeyRequest, context: Any) -> Any:
        """The xpub of the active deposit root's BIP-44 account node."""
        _internal_or_reader()
        async with self.database.transaction() as session:
            root = await store.active_deposit_root(session, ChainFamily(request.chain_family))
        if root is None:
            raise errors.NotFound("no active deposit root for this chain family")
        from svc.custody.hd import ExtendedPublic

        node = ExtendedPublic.parse(root.xpub)
        assert node.public_key == root.public_key, root.wallet_id
        return service.GetExtendedPublicKeyResponse(
            extended_public_key=resources.ExtendedPublicKey(
                wallet_id=root.wallet_id,
                chain_family=int(root.chain_family),  # type: ignore[arg-type]
                xpub=root.xpub,
                account_path=self.roots.account_path,
                fingerprint=node.fingerprint.hex(),
                create_time=convert.timestamp(root.create_time_us),
            )
        )

    # Signing

    async def SignTransaction(self, request: service.SignTransactionRequest, context: Any) -> Any:
        """Signs if and only if the authorisation holds; every request is recorded."""
        caller = _internal()
        return await self.signing.sign(request, caller)

    # Movements

    async def _movement(self, session: AsyncSession, movement_id: str, *, lock: bool = False) -> Movement:
        movement = await store.movement_by_id(session, movement_id, lock=lock)
        if movement is None:
            raise errors.NotFound(f"no movement {movement_id}", metadata={"movement_id": movement_id})
        return movement

    async def _message(self, session: AsyncSession, movement: Movement) -> resources.Movement:
        return convert.movement_message(movement, await store.decisions_of(session, movement.movement_id))

    async def CreateMovement(self, request: service.CreateMovementRequest, context: Any) -> Any:
        """PENDING_APPROVAL out of a cold wallet; APPROVED at once out of a hot wallet."""
        actor = _staff("operator")
        chain = self.chains.get(request.chain)
        asset = request.amount.asset
        if chain is None:
            raise errors.InvalidArgument([errors.FieldViolation("chain", "not configured in custody")])
        if asset != chain.native_asset and asset not in chain.tokens.values():
            raise errors.InvalidArgument(
                [errors.FieldViolation("amount.asset", f"not an asset of {request.chain}")]
            )
        amount = int(request.amount.amount)
        if amount <= 0:
            raise errors.InvalidArgument([errors.FieldViolation("amount.amount", "must be positive")])

        async def work(session: AsyncSession) -> service.CreateMovementResponse:
            source = await self._wallet(session, request.source_wallet_id)
            destination = await self._wallet(session, request.destination_wallet_id)
            movement = await open_movement(
                session,
                source,
                destination,
                chain=request.chain,
                asset=asset,
                amount=amount,
                requested_by=actor,
                reason=request.reason,
                plan_id="",
                approval_window_s=self.approval_window_s,
            )
            return service.CreateMovementResponse(movement=movement)

        return await idempotency.run_once(
            self.database, SERVICE + "CreateMovement", request, service.CreateMovementResponse, work
        )

    async def GetMovement(self, request: service.GetMovementRequest, context: Any) -> Any:
        _internal_or_reader()
        async with self.database.transaction() as session:
            movement = await self._movement(session, request.movement_id)
            return service.GetMovementResponse(movement=await self._message(session, movement))

    async def ListMovements(self, request: service.ListMovementsRequest, context: Any) -> Any:
        """Movements newest first."""
        _internal_or_reader()
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token)
        after = (int(position["time_us"]), str(position["movement_id"])) if position else None
        async with self.database.transaction() as session:
            found = await store.list_movements(
                session, states=[int(state) for state in request.states], kind=int(request.kind),
                wallet_id=request.wallet_id, create_after_us=_time_us(request, "create_after"),
                create_before_us=_time_us(request, "create_before"), after=after, limit=limit + 1,
            )  # fmt: skip
            response = service.ListMovementsResponse(
                movements=[await self._message(session, movement) for movement in found[:limit]]
            )
        if len(found) > limit:
            last = found[limit - 1]
            response.next_page_token = paging.encode_token(
                {"time_us": last.create_time_us, "movement_id": last.movement_id}
            )
        return response

    async def _expire_if_due(self, movement_id: str) -> None:
        """PENDING_APPROVAL past its window -> EXPIRED, committed before any decision is judged."""
        async with self.database.transaction() as session:
            movement = await self._movement(session, movement_id, lock=True)
            if (
                movement.state is not MovementState.PENDING_APPROVAL
                or _now_us() < movement.approval_expire_time_us
            ):
                return
            await self._move(
                session, movement, MovementState.EXPIRED, "not approved within the approval window"
            )

    async def _move(
        self, session: AsyncSession, movement: Movement, target: MovementState, outcome: str
    ) -> Movement:
        domain.transition_movement(movement, target)
        moved = replace(
            movement,
            state=target,
            outcome_message=outcome or movement.outcome_message,
            update_time_us=_now_us(),
            version=movement.version + 1,
        )
        await store.update_movement(session, moved)
        await events.publish_movement_state_changed(
            session, await self._message(session, moved), int(movement.state)
        )
        return moved

    async def _decide(self, request: Any, method: str, response_type: Any, decision: Decision) -> Any:
        approver = _staff("approver")
        await self._expire_if_due(request.movement_id)

        async def work(session: AsyncSession) -> Any:
            movement = await self._movement(session, request.movement_id, lock=True)
            expected = getattr(request, "expected_version", 0)
            if expected and expected != movement.version:
                raise errors.Conflict(
                    f"the movement is at version {movement.version}, not {expected}",
                    metadata={"movement_id": movement.movement_id, "version": str(movement.version)},
                )
            decisions = await store.decisions_of(session, movement.movement_id)
            now_us = _now_us()
            domain.decide(movement, decisions, approver, now_us)
            approval = Approval(approver, decision, request.comment, now_us)
            await store.insert_decision(session, movement.movement_id, approval)
            decided = replace(movement, version=movement.version + 1, update_time_us=now_us)
            await store.update_movement(session, decided)
            decisions.append(approval)
            await events.publish_decision(
                session, convert.movement_message(decided, decisions), convert.approval_message(approval)
            )
            if decision is Decision.REJECT:
                decided = await self._move(session, decided, MovementState.REJECTED, request.comment)
            elif domain.approvals_granted(decisions) >= decided.required_approvals:
                decided = await self._move(session, decided, MovementState.APPROVED, "")
            return response_type(movement=await self._message(session, decided))

        try:
            return await idempotency.run_once(self.database, SERVICE + method, request, response_type, work)
        except IntegrityError:
            # The same approver deciding twice at once: the decisions' primary key let one in.
            raise domain.AlreadyDecided(
                "this approver has already decided on the movement",
                metadata={"movement_id": request.movement_id},
            ) from None

    async def ApproveMovement(self, request: service.ApproveMovementRequest, context: Any) -> Any:
        """Records an approval; the M-th distinct one makes the movement APPROVED."""
        return await self._decide(
            request, "ApproveMovement", service.ApproveMovementResponse, Decision.APPROVE
        )

    async def RejectMovement(self, request: service.RejectMovementRequest, context: Any) -> Any:
        """Records a rejection: the movement is REJECTED."""
        return await self._decide(request, "RejectMovement", service.RejectMovementResponse, Decision.REJECT)

    async def CancelMovement(self, request: service.CancelMovementRequest, context: Any) -> Any:
        """PENDING_APPROVAL or APPROVED -> CANCELLED; refused once signing started."""
        _staff("operator")

        async def work(session: AsyncSession) -> service.CancelMovementResponse:
            movement = await self._movement(session, request.movement_id, lock=True)
            cancelled = await self._move(session, movement, MovementState.CANCELLED, request.reason)
            return service.CancelMovementResponse(movement=await self._message(session, cancelled))

        return await idempotency.run_once(
            self.database, SERVICE + "CancelMovement", request, service.CancelMovementResponse, work
        )

    # Signature log

    async def GetSignatureRecord(self, request: service.GetSignatureRecordRequest, context: Any) -> Any:
        _staff("auditor", "operator", "admin")
        async with self.database.transaction() as session:
            row = await store.record_by_id(session, request.record_id)
        if row is None:
            raise errors.NotFound(
                f"no signature record {request.record_id}", metadata={"record_id": request.record_id}
            )
        return service.GetSignatureRecordResponse(record=convert.record_message(row))

    async def ListSignatureRecords(self, request: service.ListSignatureRecordsRequest, context: Any) -> Any:
        """The signature log, newest first."""
        _staff("auditor", "operator", "admin")
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token)
        after = (int(position["time_us"]), str(position["record_id"])) if position else None
        filters = {name: getattr(request, name) for name in store.RECORD_FILTERS if getattr(request, name)}
        if "outcome" in filters:
            filters["outcome"] = int(filters["outcome"])
        async with self.database.transaction() as session:
            found = await store.list_records(
                session, filters=filters, request_after_us=_time_us(request, "request_after"),
                request_before_us=_time_us(request, "request_before"), after=after, limit=limit + 1,
            )  # fmt: skip
        response = service.ListSignatureRecordsResponse(
            records=[convert.record_message(r) for r in found[:limit]]
        )
        if len(found) > limit:
            last = found[limit - 1]
            response.next_page_token = paging.encode_token(
                {"time_us": last["request_time_us"], "record_id": last["record_id"]}
            )
        return response

    # Hot-wallet policies and rebalancing plans

    async def _policy_wallets(self, session: AsyncSession, policy: domain.Policy) -> None:
        chain = policy.asset.split(":", 1)[0]
        assets = self.chains.get(chain)
        if assets is None or (
            policy.asset != assets.native_asset and policy.asset not in assets.tokens.values()
        ):
            raise errors.InvalidArgument(
                [errors.FieldViolation("policy.asset", "not an asset configured in custody")]
            )
        domain.check_band(policy.floor, policy.target, policy.ceiling)
        hot = await self._wallet(session, policy.hot_wallet_id)
        cold = await self._wallet(session, policy.cold_wallet_id)
        domain.check_policy_wallets(policy, hot, cold, chain)

    async def CreateHotWalletPolicy(self, request: service.CreateHotWalletPolicyRequest, context: Any) -> Any:
        """The band of an asset's hot balance; one policy per asset."""
        actor = _staff("admin")
        given = request.policy

        async def work(session: AsyncSession) -> service.CreateHotWalletPolicyResponse:
            if await store.policy_by_asset(session, given.asset) is not None:
                raise errors.AlreadyExists(
                    f"asset {given.asset} has a policy", metadata={"asset": given.asset}
                )
            now_us = _now_us()
            policy = domain.Policy(
                policy_id=str(uuid.uuid4()), asset=given.asset, hot_wallet_id=given.hot_wallet_id,
                cold_wallet_id=given.cold_wallet_id, floor=int(given.floor), target=int(given.target),
                ceiling=int(given.ceiling), auto_sweep=given.auto_sweep, enabled=given.enabled,
                update_user_id=actor, create_time_us=now_us, update_time_us=now_us, version=1,
            )  # fmt: skip
            await self._policy_wallets(session, policy)
            await store.insert_policy(session, policy)
            message = convert.policy_message(policy)
            await events.publish_policy_changed(session, message, created=True)
            return service.CreateHotWalletPolicyResponse(policy=message)

        return await idempotency.run_once(
            self.database,
            SERVICE + "CreateHotWalletPolicy",
            request,
            service.CreateHotWalletPolicyResponse,
            work,
        )

    async def UpdateHotWalletPolicy(self, request: service.UpdateHotWalletPolicyRequest, context: Any) -> Any:
        """Changes the fields in the mask; a non-zero version must be the stored one."""
        actor = _staff("admin")
        paths = list(request.update_mask.paths)
        unknown = [path for path in paths if path not in domain.POLICY_FIELDS]
        if not paths or unknown:
            raise errors.InvalidArgument(
                [
                    errors.FieldViolation(
                        "update_mask", f"paths must be among {', '.join(domain.POLICY_FIELDS)}"
                    )
                ]
            )
        given = request.policy

        async def work(session: AsyncSession) -> service.UpdateHotWalletPolicyResponse:
            policy = await store.policy_by_id(session, given.policy_id, lock=True)
            if policy is None:
                raise errors.NotFound(f"no policy {given.policy_id}", metadata={"policy_id": given.policy_id})
            if given.version and given.version != policy.version:
                raise errors.Conflict(
                    f"the policy is at version {policy.version}, not {given.version}",
                    metadata={"policy_id": policy.policy_id, "version": str(policy.version)},
                )
            changes: dict[str, Any] = {}
            for path in paths:
                value = getattr(given, path)
                changes[path] = int(value) if path in ("floor", "target", "ceiling") else value
            changed = replace(
                policy, **changes, update_user_id=actor, update_time_us=_now_us(), version=policy.version + 1
            )
            await self._policy_wallets(session, changed)
            await store.update_policy(session, changed)
            message = convert.policy_message(changed)
            await events.publish_policy_changed(session, message, created=False)
            return service.UpdateHotWalletPolicyResponse(policy=message)

        return await idempotency.run_once(
            self.database,
            SERVICE + "UpdateHotWalletPolicy",
            request,
            service.UpdateHotWalletPolicyResponse,
            work,
        )

    async def GetHotWalletPolicy(self, request: service.GetHotWalletPolicyRequest, context: Any) -> Any:
        _internal_or_reader()
        async with self.database.transaction() as session:
            policy = await store.policy_by_id(session, request.policy_id)
        if policy is None:
            raise errors.NotFound(f"no policy {request.policy_id}", metadata={"policy_id": request.policy_id})
        return service.GetHotWalletPolicyResponse(policy=convert.policy_message(policy))

    async def ListHotWalletPolicies(self, request: service.ListHotWalletPoliciesRequest, context: Any) -> Any:
        _internal_or_reader()
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token)
        async with self.database.transaction() as session:
            found = await store.list_policies(
                session, chain=request.chain, after=str(position.get("asset", "")), limit=limit + 1
            )
        response = service.ListHotWalletPoliciesResponse(
            policies=[convert.policy_message(p) for p in found[:limit]]
        )
        if len(found) > limit:
            response.next_page_token = paging.encode_token({"asset": found[limit - 1].asset})
        return response

    async def _plan(self, session: AsyncSession, plan_id: str, *, lock: bool = False) -> domain.Plan:
        plan = await store.plan_by_id(session, plan_id, lock=lock)
        if plan is None:
            raise errors.NotFound(f"no plan {plan_id}", metadata={"plan_id": plan_id})
        return plan

    async def GetRebalancePlan(self, request: service.GetRebalancePlanRequest, context: Any) -> Any:
        _internal_or_reader()
        async with self.database.transaction() as session:
            plan = await self._plan(session, request.plan_id)
        return service.GetRebalancePlanResponse(plan=plan_message(plan))

    async def ListRebalancePlans(self, request: service.ListRebalancePlansRequest, context: Any) -> Any:
        _internal_or_reader()
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token)
        after = (int(position["time_us"]), str(position["plan_id"])) if position else None
        async with self.database.transaction() as session:
            found = await store.list_plans(
                session, state=int(request.state), kind=int(request.kind), policy_id=request.policy_id,
                after=after, limit=limit + 1,
            )  # fmt: skip
        response = service.ListRebalancePlansResponse(plans=[plan_message(plan) for plan in found[:limit]])
        if len(found) > limit:
            last = found[limit - 1]
            response.next_page_token = paging.encode_token(
                {"time_us": last.create_time_us, "plan_id": last.plan_id}
            )
        return response

    async def AcceptRebalancePlan(self, request: service.AcceptRebalancePlanRequest, context: Any) -> Any:
        """PROPOSED -> ACCEPTED, with the movement it describes (a top-up waits for the cold quorum)."""
        actor = _staff("operator")

        async def work(session: AsyncSession) -> service.AcceptRebalancePlanResponse:
            plan = await self._plan(session, request.plan_id, lock=True)
            accepted, movement = await self.rebalancer.accept(session, plan, actor, request.note)
            return service.AcceptRebalancePlanResponse(plan=plan_message(accepted), movement=movement)

        return await idempotency.run_once(
            self.database, SERVICE + "AcceptRebalancePlan", request, service.AcceptRebalancePlanResponse, work
        )

    async def DismissRebalancePlan(self, request: service.DismissRebalancePlanRequest, context: Any) -> Any:
        """PROPOSED -> DISMISSED."""
        actor = _staff("operator")

        async def work(session: AsyncSession) -> service.DismissRebalancePlanResponse:
            plan = await self._plan(session, request.plan_id, lock=True)
            dismissed = await self.rebalancer.dismiss(session, plan, actor, request.note)
            return service.DismissRebalancePlanResponse(plan=plan_message(dismissed))

        return await idempotency.run_once(
            self.database,
            SERVICE + "DismissRebalancePlan",
            request,
            service.DismissRebalancePlanResponse,
            work,
        )
