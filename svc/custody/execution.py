"""Executes approved movements: the chain gateway builds the transfer, custody signs it under the
movement (the same signing policy as any caller), the gateway broadcasts it, and custody follows it
to confirmation.

APPROVED -> SIGNING (signed; the movement is bound to its nonce) -> BROADCAST -> CONFIRMED | FAILED.
Every step carries an id derived from the movement, so a step repeated after a crash or a lost
answer returns what the first one did (the gateway's BuildTransfer and BroadcastTransaction and
custody's SignTransaction are idempotent by request id): a movement is paid at most once. A
SIGNING movement is resumed only if custody itself signed it; one signed by another caller under
the movement is that caller's to broadcast. A refusal or a permanent error of the gateway ends the
movement FAILED; an unavailable gateway is retried on the next round.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import grpc
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as chain_resources
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as gateway
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2_grpc as gateway_grpc
from finmesh.common.v1 import money_pb2
from finmesh.custody.v1 import custody_resources_pb2 as resources
from finmesh.custody.v1 import custody_service_pb2 as service

from svc.custody import convert, domain, events, store
from svc.custody.domain import CUSTODY_PRINCIPAL, Movement, MovementState
from svc.custody.signing import Signing
from svc.kit import errors
from svc.kit.db import Database

log = logging.getLogger("finmesh.custody.execution")

MOVEMENTS_PER_ROUND_MAX = 100
OUTCOME_CHARS_MAX = 500
# Gateway answers that no retry changes: the movement fails with the gateway's message.
PERMANENT_CODES = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED}
)


def step_id(movement_id: str, step: str) -> str:
    """The request id of one step of a movement's execution."""
    return f"custody.movement.{movement_id}.{step}"


class MovementExecutor:
    """Sends APPROVED movements and follows BROADCAST ones, one round at a time."""

    def __init__(self, database: Database, signing: Signing, channel: grpc.aio.Channel) -> None:
        self.database = database
        self.signing = signing
        self.gateway = gateway_grpc.ChainGatewayServiceStub(channel)

    async def run_once(self) -> int:
        """One round; returns how many movements changed state."""
        async with self.database.transaction() as session:
            due = await store.list_movements(
                session,
                states=[
                    int(MovementState.APPROVED),
                    int(MovementState.SIGNING),
                    int(MovementState.BROADCAST),
                ],
                kind=0,
                wallet_id="",
                create_after_us=None,
                create_before_us=None,
                after=None,
                limit=MOVEMENTS_PER_ROUND_MAX,
            )
            own = {
                movement.movement_id
                for movement in due
                if movement.state is MovementState.SIGNING
                and await store.signed_by_request(session, step_id(movement.movement_id, "sign"))
            }
        changed = 0
        for movement in reversed(due):  # oldest first
            if movement.state is MovementState.BROADCAST:
                changed += await self._follow(movement)
            elif movement.state is MovementState.APPROVED or movement.movement_id in own:
                changed += await self._send(movement)
        return changed

    async def _send(self, movement: Movement) -> bool:
        try:
            built = await self.gateway.BuildTransfer(
                gateway.BuildTransferRequest(
                    request_id=step_id(movement.movement_id, "build"),
                    chain=movement.chain,
                    from_address=movement.from_address,
                    recipient=movement.to_address,
                    amount=money_pb2.Money(asset=movement.asset, amount=str(movement.amount)),
                    reference=f"movement:{movement.movement_id}",
                )
            )
            signed = await self.signing.sign(
                service.SignTransactionRequest(
                    request_id=step_id(movement.movement_id, "sign"),
                    wallet_id=movement.source_wallet_id,
                    transaction=built.transaction,
                    authorization=resources.SigningAuthorization(movement_id=movement.movement_id),
                ),
                CUSTODY_PRINCIPAL,
            )
            await self.gateway.BroadcastTransaction(
                gateway.BroadcastTransactionRequest(
                    request_id=step_id(movement.movement_id, "send"),
                    chain=movement.chain,
                    signed_transaction=signed.signed_transaction,
                )
            )
        except grpc.aio.AioRpcError as error:
            if error.code() not in PERMANENT_CODES:
                log.warning("movement %s not sent yet: %s", movement.movement_id, error.details())
                return False
            return await self._end(
                movement.movement_id, MovementState.FAILED, f"chain gateway: {error.details()}"
            )
        except errors.PermissionDenied as refusal:
            return await self._end(
                movement.movement_id, MovementState.FAILED, f"signing refused: {refusal.message}"
            )
        except errors.DependencyUnavailable as failure:
            log.warning("movement %s not signed yet: %s", movement.movement_id, failure.message)
            return False
        return await self._end(movement.movement_id, MovementState.BROADCAST, "", tx_hash=signed.tx_hash)

    async def _follow(self, movement: Movement) -> bool:
        try:
            found = await self.gateway.GetTransaction(
                gateway.GetTransactionRequest(chain=movement.chain, tx_hash=movement.tx_hash)
            )
        except grpc.aio.AioRpcError as error:
            log.warning("movement %s not followed: %s", movement.movement_id, error.details())
            return False
        transaction = found.transaction
        fee = transaction.network_fee if transaction.HasField("network_fee") else None
        if transaction.status == chain_resources.TRANSACTION_STATUS_CONFIRMED:
            return await self._end(movement.movement_id, MovementState.CONFIRMED, "", fee=fee)
        if transaction.status == chain_resources.TRANSACTION_STATUS_FAILED:
            return await self._end(
                movement.movement_id,
                MovementState.FAILED,
                f"reverted: {transaction.failure_message}",
                fee=fee,
            )
        if (
            transaction.status == chain_resources.TRANSACTION_STATUS_REPLACED
            and transaction.replaced_by_tx_hash
        ):
            return await self._end(
                movement.movement_id, MovementState.BROADCAST, "", tx_hash=transaction.replaced_by_tx_hash
            )
        return False

    async def _end(
        self,
        movement_id: str,
        target: MovementState,
        outcome: str,
        *,
        tx_hash: str = "",
        fee: money_pb2.Money | None = None,
    ) -> bool:
        """Moves a movement on (a replacement keeps it BROADCAST under the new hash)."""
        async with self.database.transaction() as session:
            movement = await store.movement_by_id(session, movement_id, lock=True)
            assert movement is not None, movement_id
            if movement.state is not target:
                domain.transition_movement(movement, target)
            moved = replace(
                movement,
                state=target,
                tx_hash=tx_hash or movement.tx_hash,
                outcome_message=outcome[:OUTCOME_CHARS_MAX] or movement.outcome_message,
                update_time_us=time.time_ns() // 1000,
                version=movement.version + 1,
            )
            if fee is not None:
                moved = replace(moved, network_fee_asset=fee.asset, network_fee=int(fee.amount))
            await store.update_movement(session, moved)
            message = convert.movement_message(moved, await store.decisions_of(session, movement_id))
            if movement.state is not target:
                await events.publish_movement_state_changed(session, message, int(movement.state))
        return True
