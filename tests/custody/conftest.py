"""The custody service served by the kit (no TLS) in this process on each database backend, with a
real SoftHSM2 token (one per test session), a real Ed25519 approval issuer and real staff JWTs."""

from __future__ import annotations

import base64
import datetime
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_tester import EthereumTester, PyEVMBackend  # type: ignore[import-untyped]
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as chain_resources
from finmesh.common.v1 import money_pb2
from finmesh.custody.v1 import custody_resources_pb2 as resources
from finmesh.custody.v1 import custody_service_pb2 as service
from finmesh.custody.v1 import custody_service_pb2_grpc as service_grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import select

from svc.custody import main as custody_main
from svc.custody.config import ChainAssets, CustodySettings, IssuerSettings
from svc.kit import catalog
from svc.kit.bus import InProcessBus
from svc.kit.client import channel
from svc.kit.server import ServiceApp
from svc.kit.tables import outbox
from tests.harness.process import free_port
from tests.harness.softhsm import SoftHsmToken
from tests.harness.tokens import TokenIssuer

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "svc" / "custody" / "migrations" / "versions"
CHAIN = "evm-test"
# eth-tester's (py-evm) chain id, so that what custody signs for CHAIN broadcasts there.
CHAIN_ID = 131277322940537
NATIVE = f"{CHAIN}:ETH"
TOKEN_ADDRESS = "0x00000000000000000000000000000000000C0FFE"
TOKEN = f"{CHAIN}:USDC"
WITHDRAW_KEY_ID = "withdraw-2026-12"
DEPOSIT_KEY_ID = "deposit-2026-12"
ROGUE_KEY_ID = "rogue-1"
FEE_CAP = 100_000_000_000
STEP_UP = "step-up-token-from-auth"
ROUND_S = 3600.0


@pytest.fixture(scope="session")
def evm() -> EthereumTester:
    """One in-process py-evm chain for the session (each test pays fresh addresses of its own)."""
    return EthereumTester(PyEVMBackend())


def fund(chain: EthereumTester, address: str, amount: int) -> None:
    """Pays `amount` wei to `address` from the chain's first (funded) account."""
    funder = chain.get_accounts()[0]
    chain.send_transaction(
        {"from": funder, "to": address, "value": amount, "gas": 21_000, "gas_price": 10**9}
    )


@dataclass
class Issuer:
    """An approval-signing service (withdraw or deposit): its Ed25519 key and key id."""

    key_id: str
    name: str
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def public_key(self) -> str:
        return base64.b64encode(self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()

    def sign(self, claims: resources.ApprovalClaims) -> resources.SignedApproval:
        body = claims.SerializeToString(deterministic=True)
        return resources.SignedApproval(claims=body, issuer_key_id=self.key_id, signature=self.key.sign(body))


def stamp(offset_s: float = 0.0) -> timestamp_pb2.Timestamp:
    value = timestamp_pb2.Timestamp()
    value.FromDatetime(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset_s))
    return value


def claims_for(
    transaction: chain_resources.UnsignedTransaction,
    recipient: str,
    amount: int,
    *,
    asset: str = NATIVE,
    purpose: int = resources.APPROVAL_PURPOSE_WITHDRAWAL,
    issuer: str = "withdraw",
    **fields: Any,
) -> resources.ApprovalClaims:
    """Claims that exactly describe `transaction` (fields override)."""
    values: dict[str, Any] = {
        "approval_id": str(uuid.uuid4()),
        "purpose": purpose,
        "issuer": issuer,
        "reference": f"withdrawal:{uuid.uuid4()}",
        "chain": transaction.chain,
        "chain_id": transaction.chain_id,
        "from_address": transaction.from_address,
        "to_address": recipient,
        "amount": money_pb2.Money(asset=asset, amount=str(amount)),
        "nonce": transaction.nonce,
        "max_fee_per_gas": str(FEE_CAP),
        "issue_time": stamp(),
        "expire_time": stamp(600),
    }
    values.update(fields)
    return resources.ApprovalClaims(**values)


def native_transaction(
    sender: str, recipient: str, value: int, nonce: int = 0, *, legacy: bool = False, **fields: Any
) -> chain_resources.UnsignedTransaction:
    """An unsigned native transfer as the chain gateway builds it."""
    values: dict[str, Any] = {
        "chain": CHAIN,
        "chain_id": CHAIN_ID,
        "type": chain_resources.TRANSACTION_TYPE_LEGACY
        if legacy
        else chain_resources.TRANSACTION_TYPE_EIP1559,
        "from_address": sender,
        "to_address": recipient,
        "value": str(value),
        "data": "0x",
        "nonce": nonce,
        "gas_limit": 21_000,
        "nonce_reservation_id": str(uuid.uuid4()),
    }
    if legacy:
        values["gas_price"] = str(2_000_000_000)
    else:
        values.update(max_fee_per_gas=str(3_000_000_000), max_priority_fee_per_gas=str(1_000_000_000))
    values.update(fields)
    return chain_resources.UnsignedTransaction(**values)


def token_transaction(
    sender: str, recipient: str, amount: int, nonce: int = 0
) -> chain_resources.UnsignedTransaction:
    """An unsigned ERC-20 transfer(recipient, amount) of TOKEN."""
    data = "0xa9059cbb" + recipient[2:].lower().rjust(64, "0") + f"{amount:064x}"
    return native_transaction(sender, TOKEN_ADDRESS, 0, nonce, data=data, gas_limit=60_000)


@dataclass
class Custody:
    """A running custody service and what the tests need around it."""

    app: ServiceApp
    stub: service_grpc.CustodyServiceAsyncStub
    connection: grpc.aio.Channel
    jwt: TokenIssuer
    withdraw: Issuer
    deposit: Issuer
    rogue: Issuer

    def staff(self, subject: str, *roles: str) -> tuple[tuple[str, str], ...]:
        return self.jwt.metadata(subject, *roles)

    async def create_wallet(
        self, name: str, kind: int = resources.WALLET_KIND_HOT, required: int = 0, **fields: Any
    ) -> resources.CustodyWallet:
        fields.setdefault("chains", [CHAIN])
        request = service.CreateCustodyWalletRequest(
            request_id=f"create-{uuid.uuid4().hex}",
            name=name,
            kind=kind,  # type: ignore[arg-type]
            chain_family=resources.CHAIN_FAMILY_EVM,
            required_approvals=required,
            step_up_token=STEP_UP,
            **fields,
        )
        response = await self.stub.CreateCustodyWallet(request, metadata=self.staff("admin-1", "admin"))
        return response.wallet

    async def sign(
        self,
        wallet_id: str,
        transaction: chain_resources.UnsignedTransaction,
        *,
        approval: resources.SignedApproval | None = None,
        movement_id: str = "",
        request_id: str = "",
        path: str = "",
    ) -> service.SignTransactionResponse:
        authorization = (
            resources.SigningAuthorization(approval=approval)
            if approval is not None
            else resources.SigningAuthorization(movement_id=movement_id)
        )
        return await self.stub.SignTransaction(
            service.SignTransactionRequest(
                request_id=request_id or f"sign-{uuid.uuid4().hex}",
                wallet_id=wallet_id,
                derivation_path=path,
                transaction=transaction,
                authorization=authorization,
            )
        )

    async def events(self, event_type: type[Message]) -> list[Any]:
        """Every event of a type in the outbox, oldest first."""
        async with self.app.database.transaction() as session:
            rows = await session.execute(
                select(outbox.c.payload)
                .where(outbox.c.event_type == event_type.DESCRIPTOR.full_name)
                .order_by(outbox.c.id)
            )
            return [event_type.FromString(row.payload) for row in rows]

    async def stop(self) -> None:
        await self.connection.close()
        await self.app.stop(0)


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo")


async def refused(call: Awaitable[Any], code: grpc.StatusCode, reason: str) -> error_details_pb2.ErrorInfo:
    """Awaits a call that must fail with `code` and ErrorInfo `reason`; returns the ErrorInfo."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value
    info = error_info(caught.value)
    assert info.reason == reason, info
    return info


async def signing_refused(call: Awaitable[Any], refusal: str) -> error_details_pb2.ErrorInfo:
    """A SignTransaction refused by the policy with `REFUSAL_REASON_<refusal>`."""
    info = await refused(call, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert info.metadata["refusal_reason"] == f"REFUSAL_REASON_{refusal}", info
    return info


async def start_custody(
    database_url: str,
    tmp_path: Path,
    token: SoftHsmToken | None,
    chains: dict[str, ChainAssets] | None = None,
    **overrides: Any,
) -> Custody:
    """Custody on `database_url`, with the SoftHSM2 token as its HSM (None: the embedded default),
    serving the test chain (or `chains`). Its background rounds (movements, hot-wallet policies) run
    once at start unless `overrides` say otherwise: without a chain gateway they have nothing to do."""
    services = catalog.default()
    jwt = TokenIssuer(tmp_path / "jwt")
    withdraw, deposit = Issuer(WITHDRAW_KEY_ID, "withdraw"), Issuer(DEPOSIT_KEY_ID, "deposit")
    hsm: dict[str, Any] = {}
    if token is not None:
        hsm = {
            "hsm_module": token.module,
            "hsm_token_label": token.label,
            "hsm_pin": token.user_pin,
            "hsm_master_key_label": f"master-{uuid.uuid4().hex[:8]}",
        }
    settings = CustodySettings(
        # A free port, not the catalog's: a second service on the same port would be an error.
        port=free_port(),
        tls=False,
        pki_dir=tmp_path / "pki",
        data_dir=tmp_path / "data",
        database_url=database_url,
        jwt_public_keys_file=jwt.public_key_file,
        approval_issuers={
            WITHDRAW_KEY_ID: IssuerSettings(
                issuer="withdraw", public_key=withdraw.public_key, purposes=[1, 3]
            ),
            DEPOSIT_KEY_ID: IssuerSettings(issuer="deposit", public_key=deposit.public_key, purposes=[2]),
        },
        chains=chains
        or {CHAIN: ChainAssets(chain_id=CHAIN_ID, native_asset=NATIVE, tokens={TOKEN_ADDRESS: TOKEN})},
        **{"movement_interval_s": ROUND_S, "rebalance_interval_s": ROUND_S, **hsm, **overrides},
    )
    app = ServiceApp(services.service("custody"), settings, catalog=services, bus=InProcessBus())
    custody_main.build(app)
    try:
        await app.start(migrations=MIGRATIONS, migrate_database=True)
    except BaseException:
        await app.stop(0)
        raise
    connection = channel(f"127.0.0.1:{app.port}")
    stub = service_grpc.CustodyServiceStub(connection)
    return Custody(app, stub, connection, jwt, withdraw, deposit, Issuer(ROGUE_KEY_ID, "withdraw"))


@pytest.fixture
async def custody(database_url: str, tmp_path: Path, softhsm: SoftHsmToken) -> AsyncIterator[Custody]:
    """Custody with the SoftHSM2 token as its HSM, on a fresh database of each backend."""
    running = await start_custody(database_url, tmp_path, softhsm)
    yield running
    await running.stop()
