"""ChainGatewayService: translates the contract's messages to the adapters, the nonce manager,
the follower and the store, and back.

Chain reads (estimates, nonces, balances) happen before the database transaction that records
their outcome, so that no transaction is held open across a provider call, except where the
nonce manager must read the chain under the sender's lock (first use of a sender).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import Any

import rlp  # type: ignore[import-untyped]
from eth_account import Account
from eth_account._utils.legacy_transactions import Transaction as LegacyTransaction
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils.crypto import keccak
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as resources
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as service
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2_grpc as service_grpc
from hexbytes import HexBytes
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from svc.chain_gateway import convert, domain, events, store
from svc.chain_gateway.chain import ChainAdapter
from svc.chain_gateway.config import ChainStatus
from svc.chain_gateway.domain import ReservationState, TxStatus, TxType, Unsigned
from svc.chain_gateway.follower import Follower
from svc.kit import errors, idempotency
from svc.kit.db import Database

SERVICE = "/finmesh.chain_gateway.v1.ChainGatewayService/"


def _now_us() -> int:
    return time.time_ns() // 1000


def _page_size(requested: int) -> int:
    assert 0 <= requested <= store.PAGE_SIZE_MAX, requested
    return requested or store.PAGE_SIZE_DEFAULT


def _position(token: str) -> dict[str, Any]:
    if not token:
        return {}
    position = store.decode_token(token)
    if position is None:
        raise errors.InvalidArgument([errors.FieldViolation("page_token", "not a token from this listing")])
    return position


def _optional_amount(text: str, field: str) -> int | None:
    return domain.parse_amount(text, field) if text else None


def _decode_signed(raw: bytes) -> dict[str, Any]:
    """Sender, hash and fields of a signed transaction; InvalidArgument when it is not one."""
    violation = errors.InvalidArgument(
        [
            errors.FieldViolation(
                "signed_transaction", "not a signed legacy or EIP-1559 transaction", "encoding"
            )
        ]
    )
    try:
        sender = str(Account.recover_transaction(raw)).lower()
        if raw[0] == 2:
            fields = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
            kind = TxType.EIP1559
            chain_id = int(fields["chainId"])
        elif raw[0] >= 0xC0:
            fields = rlp.decode(raw, LegacyTransaction).as_dict()
            kind = TxType.LEGACY
            v = int(fields["v"])
            if v < 35:
                raise violation  # no EIP-155 chain id: replayable on every chain
            chain_id = (v - 35) // 2
        else:
            raise violation
    except errors.InvalidArgument:
        raise
    except Exception:
        raise violation from None
    to = fields.get("to") or b""
    return {
        "sender": sender,
        "hash": "0x" + keccak(raw).hex(),
        "type": kind,
        "chain_id": chain_id,
        "nonce": int(fields["nonce"]),
        "to": ("0x" + bytes(to).hex()) if to else "",
        "value": int(fields["value"]),
        "data": bytes(fields.get("data") or b""),
        "gas": int(fields["gas"]),
        "gas_price": fields.get("gasPrice"),
        "max_fee_per_gas": fields.get("maxFeePerGas"),
        "max_priority_fee_per_gas": fields.get("maxPriorityFeePerGas"),
    }


def _matches(unsigned: Unsigned, signed: Mapping[str, Any]) -> bool:
    """Whether a signed transaction is exactly the built one (custody signed what was built)."""
    return (
        unsigned.type is signed["type"]
        and unsigned.to_address == signed["to"]
        and unsigned.value == signed["value"]
        and unsigned.data == signed["data"]
        and unsigned.gas_limit == signed["gas"]
        and unsigned.gas_price == signed["gas_price"]
        and unsigned.max_fee_per_gas == signed["max_fee_per_gas"]
        and unsigned.max_priority_fee_per_gas == signed["max_priority_fee_per_gas"]
    )


def _transaction_row(
    chain: str,
    tx_hash: str,
    built: Unsigned,
    raw: str,
    *,
    reservation_id: str,
    reference: str,
    replaces: str,
    now: int,
) -> dict[str, Any]:
    """A broadcast transaction's first record (PENDING), from the unsigned transaction it signs."""
    return {
        "chain": chain,
        "tx_hash": tx_hash,
        "from_address": built.from_address,
        "to_address": built.to_address,
        "nonce": built.nonce,
        "type": int(built.type),
        "value": built.value,
        "data": "0x" + built.data.hex(),
        "gas_limit": built.gas_limit,
        "gas_price": built.gas_price,
        "max_fee_per_gas": built.max_fee_per_gas,
        "max_priority_fee_per_gas": built.max_priority_fee_per_gas,
        "intent": built.intent.as_json(),
        "status": int(TxStatus.PENDING),
        "confirmations": 0,
        "block_number": 0,
        "block_hash": "",
        "gas_used": 0,
        "effective_gas_price": None,
        "replaces_tx_hash": replaces,
        "replaced_by_tx_hash": "",
        "reference": reference,
        "failure_message": "",
        "raw": raw,
        "reservation_id": reservation_id,
        "broadcast_time_us": now,
        "last_broadcast_time_us": now,
        "block_time_us": None,
        "final_time_us": None,
    }


class ChainGatewayServicer(service_grpc.ChainGatewayServiceServicer):
    """The chain gateway's gRPC surface."""

    def __init__(
        self, database: Database, adapters: Mapping[str, ChainAdapter], followers: Mapping[str, Follower]
    ) -> None:
        self.database = database
        self.adapters = dict(sorted(adapters.items()))
        self.followers = followers
        self._dev_locks = {key: asyncio.Lock() for key in adapters}

    def _adapter(self, chain: str, *, writable: bool = False, readable: bool = True) -> ChainAdapter:
        adapter = self.adapters.get(chain)
        if adapter is None:
            raise errors.NotFound(f"no chain {chain}", metadata={"chain": chain})
        status = adapter.config.status
        if status is ChainStatus.DISABLED and readable:
            raise domain.ChainUnavailable(f"chain {chain} is disabled", metadata={"chain": chain})
        if writable and status is not ChainStatus.ENABLED:
            raise domain.ChainUnavailable(
                f"chain {chain} is {status.value}: no transaction is built or broadcast",
                metadata={"chain": chain},
            )
        return adapter

    def _transaction(self, adapter: ChainAdapter, row: Any) -> resources.Transaction:
        """The record, with confirmations counted to the newest head the follower saw (the
        tracker stops counting once a transaction is final)."""
        message = convert.transaction_message(row, adapter.config.confirmation_depth, adapter.native.asset_id)
        if row.block_number and row.status in (
            int(TxStatus.MINED),
            int(TxStatus.CONFIRMED),
            int(TxStatus.FAILED),
        ):
            head = self.followers[adapter.key].head_number
            message.confirmations = max(row.confirmations, domain.confirmations(row.block_number, head))
        return message

    # Chains and providers

    async def _last_block(self, chain: str) -> int:
        async with self.database.transaction() as session:
            row = await store.follower(session, chain)
        return row.last_block_number if row is not None else 0

    async def ListChains(self, request: service.ListChainsRequest, context: Any) -> Any:
        """Configured chains by key (DISABLED ones only on request)."""
        limit = _page_size(request.page_size)
        after = str(_position(request.page_token).get("c", ""))
        keys = [
            key
            for key, adapter in self.adapters.items()
            if key > after and (request.include_disabled or adapter.config.status is not ChainStatus.DISABLED)
        ]
        response = service.ListChainsResponse()
        for key in keys[:limit]:
            response.chains.append(convert.chain_message(self.adapters[key], await self._last_block(key)))
        if len(keys) > limit:
            response.next_page_token = store.encode_token({"c": keys[limit - 1]})
        return response

    async def GetChain(self, request: service.GetChainRequest, context: Any) -> Any:
        adapter = self._adapter(request.chain, readable=False)
        return service.GetChainResponse(
            chain=convert.chain_message(adapter, await self._last_block(adapter.key))
        )

    async def ListProviders(self, request: service.ListProvidersRequest, context: Any) -> Any:
        adapter = self._adapter(request.chain, readable=False)
        limit = _page_size(request.page_size)
        start = int(_position(request.page_token).get("i", 0))
        now_ms = time.monotonic() * 1000
        handles = adapter.pool.handles
        response = service.ListProvidersResponse(
            providers=[
                convert.provider_message(adapter.key, handle, now_ms)
                for handle in handles[start : start + limit]
            ]
        )
        if start + limit < len(handles):
            response.next_page_token = store.encode_token({"i": start + limit})
        return response

    # Building

    async def EstimateGas(self, request: service.EstimateGasRequest, context: Any) -> Any:
        adapter = self._adapter(request.chain)
        asset = domain.asset_of(adapter.key, adapter.config, request.amount.asset, "amount.asset")
        amount = domain.parse_amount(request.amount.amount, "amount.amount")
        fees = await adapter.estimate(request.from_address.lower(), asset, request.recipient.lower(), amount)
        return service.EstimateGasResponse(estimate=convert.fee_message(fees, adapter.native.asset_id))

    async def BuildTransfer(self, request: service.BuildTransferRequest, context: Any) -> Any:
        """Allocates the sender's next nonce and builds the unsigned transfer under the fee cap."""
        adapter = self._adapter(request.chain, writable=True)
        config = adapter.config
        asset = domain.asset_of(adapter.key, config, request.amount.asset, "amount.asset")
        amount = domain.parse_amount(request.amount.amount, "amount.amount")
        cap = _optional_amount(request.max_fee_per_gas, "max_fee_per_gas")
        sender, recipient = request.from_address.lower(), request.recipient.lower()
        method = SERVICE + "BuildTransfer"
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(session, method, request, service.BuildTransferResponse)
        if replay is not None:
            return replay
        fees = await adapter.estimate(sender, asset, recipient, amount, cap)
        latest, pending = await adapter.nonces(sender)

        async def work(session: AsyncSession) -> service.BuildTransferResponse:
            now = _now_us()
            nonce = await self._allocate(session, adapter.key, sender, latest, pending, now)
            unsigned = domain.build_unsigned(config, sender, asset, recipient, amount, nonce, fees)
            reservation = await self._reserve(session, adapter, unsigned, request.reference, "", now)
            return service.BuildTransferResponse(
                transaction=convert.unsigned_message(adapter.key, unsigned, reservation.reservation_id),
                estimate=convert.fee_message(fees, adapter.native.asset_id),
                reservation=reservation,
            )

        return await idempotency.run_once(self.database, method, request, service.BuildTransferResponse, work)

    async def _allocate(
        self, session: AsyncSession, chain: str, sender: str, latest: int, pending: int, now: int
    ) -> int:
        """The sender's next nonce, under the sender's lock: a nonce given back and not yet
        mined first (it blocks every later one), else the next one up, never below the chain's."""
        row = await store.lock_sender(session, chain, sender, pending, now)
        reusable = await store.reusable_nonce(session, chain, sender, latest)
        if reusable is not None and reusable < row.next_nonce:
            return reusable
        nonce = max(int(row.next_nonce), latest)
        await store.set_next_nonce(session, chain, sender, nonce + 1, now)
        return nonce

    async def _reserve(
        self,
        session: AsyncSession,
        adapter: ChainAdapter,
        unsigned: Unsigned,
        reference: str,
        replaces: str,
        now: int,
    ) -> resources.NonceReservation:
        values = {
            "reservation_id": str(uuid.uuid4()),
            "chain": adapter.key,
            "address": unsigned.from_address,
            "nonce": unsigned.nonce,
            "state": int(ReservationState.RESERVED),
            "reference": reference,
            "transaction": unsigned.as_json(),
            "replaces_tx_hash": replaces,
            "create_time_us": now,
            "expire_time_us": now + adapter.config.reservation_timeout_ms * 1000,
            "end_time_us": None,
            "end_reason": "",
        }
        await store.insert_reservation(session, values)
        row = await store.reservation(session, str(values["reservation_id"]))
        return convert.reservation_message(row)

    async def ReleaseNonce(self, request: service.ReleaseNonceRequest, context: Any) -> Any:
        """RESERVED -> RELEASED; the nonce goes to the next build."""

        async def work(session: AsyncSession) -> service.ReleaseNonceResponse:
            row = await store.reservation(session, request.reservation_id)
            if row is None:
                raise errors.NotFound(
                    f"no reservation {request.reservation_id}",
                    metadata={"reservation_id": request.reservation_id},
                )
            await store.lock_sender(session, row.chain, row.address, row.nonce, _now_us())
            row = await store.reservation(session, request.reservation_id)
            assert row is not None
            state = ReservationState(row.state)
            if state is not ReservationState.RESERVED and state is not ReservationState.RELEASED:
                raise errors.InvalidState(
                    f"reservation {row.reservation_id} is {state.name}, it cannot be released",
                    metadata={"reservation_id": row.reservation_id, "state": state.name},
                )
            if state is ReservationState.RESERVED:
                await store.end_reservation(
                    session, row.reservation_id, ReservationState.RELEASED, _now_us(), request.reason
                )
                row = await store.reservation(session, request.reservation_id)
                assert row is not None
            return service.ReleaseNonceResponse(reservation=convert.reservation_message(row))

        return await idempotency.run_once(
            self.database, SERVICE + "ReleaseNonce", request, service.ReleaseNonceResponse, work
        )

    async def ReplaceTransaction(self, request: service.ReplaceTransactionRequest, context: Any) -> Any:
        """Builds a same-nonce replacement with every fee field raised at least 10%."""
        adapter = self._adapter(request.chain, writable=True)
        method = SERVICE + "ReplaceTransaction"
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(session, method, request, service.ReplaceTransactionResponse)
            if replay is not None:
                return replay
            row = await store.transaction(session, adapter.key, request.tx_hash.lower())
            if row is None:
                raise errors.NotFound(
                    f"no transaction {request.tx_hash} on {adapter.key}",
                    metadata={"tx_hash": request.tx_hash},
                )
            built = await store.reservation(session, row.reservation_id)
        status = TxStatus(row.status)
        if status not in (TxStatus.PENDING, TxStatus.DROPPED):
            raise errors.InvalidState(
                f"transaction {row.tx_hash} is {status.name}: only PENDING or DROPPED ones are replaced",
                metadata={"tx_hash": row.tx_hash, "status": status.name},
            )
        if built is None:
            raise errors.InvalidState(
                f"transaction {row.tx_hash} was not built by the nonce manager (a development transfer)",
                metadata={"tx_hash": row.tx_hash},
            )
        original = Unsigned.from_json(built.transaction)
        mode = domain.ReplacementMode(request.mode)
        if mode is domain.ReplacementMode.SPEED_UP:
            asset = domain.asset_of(adapter.key, adapter.config, original.intent.asset, "tx_hash")
            market = await adapter.estimate(
                original.from_address, asset, original.intent.recipient, original.intent.amount
            )
        else:
            market = await adapter.estimate(original.from_address, adapter.native, original.from_address, 0)
        requested = _optional_amount(request.max_fee_per_gas, "max_fee_per_gas")
        fees = domain.replacement_fees(
            adapter.config, original, market, adapter.config.fee_cap_per_gas, requested
        )
        unsigned = domain.replacement(original, mode, fees, adapter.native.asset_id)

        async def work(session: AsyncSession) -> service.ReplaceTransactionResponse:
            reservation = await self._reserve(
                session, adapter, unsigned, row.reference, row.tx_hash, _now_us()
            )
            return service.ReplaceTransactionResponse(
                transaction=convert.unsigned_message(adapter.key, unsigned, reservation.reservation_id),
                estimate=convert.fee_message(fees, adapter.native.asset_id),
                reservation=reservation,
            )

        return await idempotency.run_once(
            self.database, method, request, service.ReplaceTransactionResponse, work
        )

    # Broadcast and status

    async def BroadcastTransaction(self, request: service.BroadcastTransactionRequest, context: Any) -> Any:
        """Sends a signed transaction built here; a hash already known is not sent again."""
        adapter = self._adapter(request.chain, writable=True)
        raw = bytes.fromhex(request.signed_transaction[2:])
        signed = _decode_signed(raw)
        if signed["chain_id"] != adapter.config.chain_id:
            raise errors.InvalidArgument(
                [
                    errors.FieldViolation(
                        "signed_transaction",
                        f"signed for chain id {signed['chain_id']}, "
                        f"{adapter.key} is {adapter.config.chain_id}",
                        "chain_id",
                    )
                ]
            )
        method = SERVICE + "BroadcastTransaction"
        tx_hash = signed["hash"]
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(session, method, request, service.BroadcastTransactionResponse)
            if replay is not None:
                return replay
            known = await store.transaction(session, adapter.key, tx_hash)
            if known is None:
                candidates = await store.open_reservation(
                    session, adapter.key, signed["sender"], signed["nonce"]
                )
        if known is not None:
            return await self._already_known(adapter, method, request, tx_hash)
        matching = [row for row in candidates if _matches(Unsigned.from_json(row.transaction), signed)]
        if not matching:
            raise errors.InvalidState(
                f"no open reservation of nonce {signed['nonce']} for {signed['sender']} matches this "
                "transaction: build it with BuildTransfer or ReplaceTransaction first",
                metadata={"address": signed["sender"], "nonce": str(signed["nonce"])},
            )
        reservation = matching[0]
        await adapter.send_raw(raw)
        built = Unsigned.from_json(reservation.transaction)

        async def work(session: AsyncSession) -> service.BroadcastTransactionResponse:
            now = _now_us()
            await store.insert_transaction(
                session,
                _transaction_row(
                    adapter.key,
                    tx_hash,
                    built,
                    request.signed_transaction.lower(),
                    reservation_id=reservation.reservation_id,
                    reference=reservation.reference,
                    replaces=reservation.replaces_tx_hash,
                    now=now,
                ),
            )
            await store.end_reservation(session, reservation.reservation_id, ReservationState.BROADCAST, now)
            row = await store.transaction(session, adapter.key, tx_hash)
            message = self._transaction(adapter, row)
            await events.transaction_broadcast(session, message)
            return service.BroadcastTransactionResponse(transaction=message, already_known=False)

        try:
            return await idempotency.run_once(
                self.database, method, request, service.BroadcastTransactionResponse, work
            )
        except IntegrityError:
            # The same signed transaction was recorded by a concurrent request meanwhile.
            return await self._already_known(adapter, method, request, tx_hash)

    async def _already_known(
        self, adapter: ChainAdapter, method: str, request: service.BroadcastTransactionRequest, tx_hash: str
    ) -> service.BroadcastTransactionResponse:
        async def work(session: AsyncSession) -> service.BroadcastTransactionResponse:
            row = await store.transaction(session, adapter.key, tx_hash)
            assert row is not None
            return service.BroadcastTransactionResponse(
                transaction=self._transaction(adapter, row), already_known=True
            )

        return await idempotency.run_once(
            self.database, method, request, service.BroadcastTransactionResponse, work
        )

    async def GetTransaction(self, request: service.GetTransactionRequest, context: Any) -> Any:
        adapter = self._adapter(request.chain, readable=False)
        async with self.database.transaction() as session:
            row = await store.transaction(session, adapter.key, request.tx_hash.lower())
        if row is None:
            raise errors.NotFound(
                f"no transaction {request.tx_hash} broadcast on {adapter.key}",
                metadata={"tx_hash": request.tx_hash},
            )
        return service.GetTransactionResponse(transaction=self._transaction(adapter, row))

    async def ListTransactions(self, request: service.ListTransactionsRequest, context: Any) -> Any:
        adapter = self._adapter(request.chain, readable=False)
        limit = _page_size(request.page_size)
        after = request.broadcast_after.ToMicroseconds() if request.HasField("broadcast_after") else None
        before = request.broadcast_before.ToMicroseconds() if request.HasField("broadcast_before") else None
        async with self.database.transaction() as session:
            rows = await store.list_transactions(
                session,
                adapter.key,
                from_address=request.from_address.lower(),
                reference=request.reference,
                statuses=[int(status) for status in request.statuses],
                after_us=after,
                before_us=before,
                position=_position(request.page_token),
                limit=limit + 1,
            )
        response = service.ListTransactionsResponse(
            transactions=[self._transaction(adapter, row) for row in rows[:limit]]
        )
        if len(rows) > limit:
            last = rows[limit - 1]
            response.next_page_token = store.encode_token({"t": last.broadcast_time_us, "h": last.tx_hash})
        return response

    async def nonce_state(self, session: AsyncSession, chain: str, address: str) -> resources.NonceState:
        """The nonce manager's view of one sender next to the chain's."""
        adapter = self.adapters[chain]
        latest, pending = await adapter.nonces(address)
        row = await store.sender(session, chain, address)
        next_nonce = max(row.next_nonce if row is not None else pending, latest)
        reusable = await store.reusable_nonce(session, chain, address, latest)
        if reusable is not None and reusable < next_nonce:
            next_nonce = reusable
        waiting = await store.pending_of(session, chain, address)
        stuck_before = _now_us() - adapter.config.stuck_timeout_ms * 1000
        state = resources.NonceState(
            chain=chain,
            address=address,
            next_nonce=next_nonce,
            chain_latest_nonce=latest,
            chain_pending_nonce=pending,
            reserved_count=await store.count_reserved(session, chain, address),
            pending_count=len(waiting),
            gap_nonces=await store.gap_nonces(session, chain, address, latest),
            stuck_tx_hashes=[tx.tx_hash for tx in waiting if tx.broadcast_time_us <= stuck_before],
        )
        stamp = convert.timestamp(row.sync_time_us if row is not None else _now_us())
        assert stamp is not None
        state.sync_time.CopyFrom(stamp)
        return state

    async def GetNonceState(self, request: service.GetNonceStateRequest, context: Any) -> Any:
        adapter = self._adapter(request.chain)
        async with self.database.transaction() as session:
            state = await self.nonce_state(session, adapter.key, request.address.lower())
        return service.GetNonceStateResponse(nonce_state=state)

    # Balances

    async def _block_of(self, adapter: ChainAdapter, selector: service.BlockSelector) -> Any:
        """The block of a read. `confirmed` is the follower's confirmed block (what deposits
        were credited against), or the head's when the follower has not started."""
        which = selector.WhichOneof("selector")
        if which == "confirmed":
            position = await self.followers[adapter.key].position()
            if position is not None and position.number >= adapter.config.confirmation_depth:
                return await adapter.resolve(
                    position.number - adapter.config.confirmation_depth + 1, confirmed=False
                )
        return await adapter.resolve(
            selector.number if which == "number" else None, confirmed=which == "confirmed"
        )

    async def GetBalance(self, request: service.GetBalanceRequest, context: Any) -> Any:
        adapter = self._adapter(request.chain)
        asset = domain.asset_of(adapter.key, adapter.config, request.query.asset, "query.asset")
        block = await self._block_of(adapter, request.block)
        address = request.query.address.lower()
        amount = await adapter.balance(address, asset, block.number)
        return service.GetBalanceResponse(
            balance=resources.Balance(
                chain=adapter.key,
                address=address,
                amount=convert.money(asset.asset_id, amount),
                block_number=block.number,
                block_hash=block.hash,
            )
        )

    async def BatchGetBalances(self, request: service.BatchGetBalancesRequest, context: Any) -> Any:
        adapter = self._adapter(request.chain)
        assets = [
            domain.asset_of(adapter.key, adapter.config, query.asset, f"queries[{index}].asset")
            for index, query in enumerate(request.queries)
        ]
        block = await self._block_of(adapter, request.block)
        response = service.BatchGetBalancesResponse(block_number=block.number, block_hash=block.hash)
        for query, asset in zip(request.queries, assets, strict=True):
            address = query.address.lower()
            amount = await adapter.balance(address, asset, block.number)
            response.balances.append(
                resources.Balance(
                    chain=adapter.key,
                    address=address,
                    amount=convert.money(asset.asset_id, amount),
                    block_number=block.number,
                    block_hash=block.hash,
                )
            )
        return response

    # Watched addresses and the follower

    async def CreateWatchedAddress(self, request: service.CreateWatchedAddressRequest, context: Any) -> Any:
        adapter = self._adapter(request.chain)
        address = request.address.lower()
        follower = self.followers[adapter.key]
        position = await follower.position()
        if position is None:
            await follower.tick()
            position = await follower.position()
        if position is None:
            # Only on a fresh deployment, on a replica that stands by while another one, holding
            # the follower lease, has yet to record where it starts.
            raise errors.DependencyUnavailable(
                f"the follower of chain {adapter.key} has not started yet; retry",
                metadata={"chain": adapter.key},
            )
        first = position.number + 1
        # An earlier start block: the follower rescans start_block..position for this address.
        rescan = 0 < request.start_block < first

        async def work(session: AsyncSession) -> service.CreateWatchedAddressResponse:
            existing = await store.watched_address(session, adapter.key, address)
            if existing is not None:
                return service.CreateWatchedAddressResponse(
                    watched_address=convert.watched_message(existing), created=False
                )
            await store.insert_watched(
                session,
                {
                    "chain": adapter.key,
                    "address": address,
                    "owner": request.owner,
                    "reference": request.reference,
                    "start_block": request.start_block or first,
                    "create_time_us": _now_us(),
                    "rescan_next": request.start_block if rescan else None,
                    "rescan_end": position.number if rescan else None,
                },
            )
            row = await store.watched_address(session, adapter.key, address)
            return service.CreateWatchedAddressResponse(
                watched_address=convert.watched_message(row), created=True
            )

        return await idempotency.run_once(
            self.database,
            SERVICE + "CreateWatchedAddress",
            request,
            service.CreateWatchedAddressResponse,
            work,
        )

    async def DeleteWatchedAddress(self, request: service.DeleteWatchedAddressRequest, context: Any) -> Any:
        adapter = self._adapter(request.chain)
        address = request.address.lower()

        async def work(session: AsyncSession) -> service.DeleteWatchedAddressResponse:
            if await store.watched_address(session, adapter.key, address) is None:
                raise errors.NotFound(
                    f"{address} is not watched on {adapter.key}", metadata={"address": address}
                )
            await store.delete_watched(session, adapter.key, address)
            return service.DeleteWatchedAddressResponse()

        return await idempotency.run_once(
            self.database,
            SERVICE + "DeleteWatchedAddress",
            request,
            service.DeleteWatchedAddressResponse,
            work,
        )

    async def ListWatchedAddresses(self, request: service.ListWatchedAddressesRequest, context: Any) -> Any:
        adapter = self._adapter(request.chain, readable=False)
        limit = _page_size(request.page_size)
        after = int(_position(request.page_token).get("s", 0))
        async with self.database.transaction() as session:
            rows = await store.list_watched(session, adapter.key, request.owner, after, limit + 1)
        response = service.ListWatchedAddressesResponse(
            watched_addresses=[convert.watched_message(row) for row in rows[:limit]]
        )
        if len(rows) > limit:
            response.next_page_token = store.encode_token({"s": rows[limit - 1].seq})
        return response

    async def GetFollowerStatus(self, request: service.GetFollowerStatusRequest, context: Any) -> Any:
        adapter = self._adapter(request.chain, readable=False)
        follower = self.followers[adapter.key]
        async with self.database.transaction() as session:
            row = await store.follower(session, adapter.key)
            watched = await store.count_watched(session, adapter.key)
        head = follower.head_number
        status = resources.FollowerStatus(
            chain=adapter.key,
            state=int(follower.state),  # type: ignore[arg-type]
            head_block_number=head,
            watched_address_count=watched,
        )
        if row is not None:
            last = row.last_block_number
            status.last_block_number = last
            status.last_block_hash = row.last_block_hash
            status.confirmed_block_number = max(0, last - adapter.config.confirmation_depth + 1)
            status.lag_blocks = max(0, head - last)
            status.reorg_count = row.reorg_count
            status.last_reorg_depth = row.last_reorg_depth
            for field, value in (
                ("last_reorg_time", row.last_reorg_time_us),
                ("update_time", row.update_time_us),
            ):
                stamp = convert.timestamp(value)
                if stamp is not None:
                    getattr(status, field).CopyFrom(stamp)
        return service.GetFollowerStatusResponse(status=status)

    async def ListBlocks(self, request: service.ListBlocksRequest, context: Any) -> Any:
        adapter = self._adapter(request.chain, readable=False)
        limit = _page_size(request.page_size)
        async with self.database.transaction() as session:
            rows = await store.list_blocks(
                session,
                adapter.key,
                request.from_block,
                request.to_block,
                int(request.status),
                _position(request.page_token),
                limit + 1,
            )
        response = service.ListBlocksResponse(blocks=[convert.block_message(row) for row in rows[:limit]])
        if len(rows) > limit:
            last = rows[limit - 1]
            response.next_page_token = store.encode_token({"n": last.number, "h": last.hash})
        return response

    async def ListTransfers(self, request: service.ListTransfersRequest, context: Any) -> Any:
        adapter = self._adapter(request.chain, readable=False)
        limit = _page_size(request.page_size)
        async with self.database.transaction() as session:
            row = await store.follower(session, adapter.key)
            rows = await store.list_transfers(
                session,
                adapter.key,
                to_address=request.to_address.lower(),
                tx_hash=request.tx_hash.lower(),
                status=int(request.status),
                from_block=request.from_block,
                to_block=request.to_block,
                position=_position(request.page_token),
                limit=limit + 1,
            )
        last = row.last_block_number if row is not None else 0
        response = service.ListTransfersResponse(
            transfers=[
                convert.transfer_message(found, domain.confirmations(found.block_number, last))
                for found in rows[:limit]
            ]
        )
        if len(rows) > limit:
            final = rows[limit - 1]
            response.next_page_token = store.encode_token(
                {"b": final.block_number, "l": final.log_index, "i": final.id}
            )
        return response

    # Development

    async def CreateDevTransfer(self, request: service.CreateDevTransferRequest, context: Any) -> Any:
        """Sends from the development chain's funding key (simulates a deposit from outside)."""
        adapter = self._adapter(request.chain, writable=True)
        config = adapter.config
        if not config.development or not config.dev_funding_key:
            raise domain.ChainUnavailable(
                f"{adapter.key} is not a development chain: dev transfers are refused",
                metadata={"chain": adapter.key},
            )
        asset = domain.asset_of(adapter.key, config, request.amount.asset, "amount.asset")
        amount = domain.parse_amount(request.amount.amount, "amount.amount")
        method = SERVICE + "CreateDevTransfer"
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(session, method, request, service.CreateDevTransferResponse)
        if replay is not None:
            return replay
        funder = Account.from_key(config.dev_funding_key)
        sender = str(funder.address).lower()
        async with self._dev_locks[adapter.key]:
            fees = await adapter.estimate(sender, asset, request.recipient.lower(), amount)
            _, pending = await adapter.nonces(sender)
            unsigned = domain.build_unsigned(
                config, sender, asset, request.recipient.lower(), amount, pending, fees
            )
            signed = funder.sign_transaction(unsigned.fields())
            raw = bytes(signed.raw_transaction)
            await adapter.send_raw(raw)
        tx_hash = "0x" + keccak(raw).hex()

        async def work(session: AsyncSession) -> service.CreateDevTransferResponse:
            now = _now_us()
            await store.insert_transaction(
                session,
                _transaction_row(
                    adapter.key,
                    tx_hash,
                    unsigned,
                    "0x" + raw.hex(),
                    reservation_id="",
                    reference="dev-transfer",
                    replaces="",
                    now=now,
                ),
            )
            row = await store.transaction(session, adapter.key, tx_hash)
            return service.CreateDevTransferResponse(transaction=self._transaction(adapter, row))

        return await idempotency.run_once(
            self.database, method, request, service.CreateDevTransferResponse, work
        )
