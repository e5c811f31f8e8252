"""The wallet inventory through the contract: creation (admin only, idempotent, unique names,
checked kinds and backends), listing with filters and pages, and its events."""

from __future__ import annotations

import uuid

import grpc
import pytest
from finmesh.custody.v1 import custody_resources_pb2 as resources
from finmesh.custody.v1 import custody_service_pb2 as service
from finmesh.events.v1 import custody_events_pb2

from tests.custody.conftest import CHAIN, STEP_UP, Custody, refused


def create_request(name: str, request_id: str, **fields: object) -> service.CreateCustodyWalletRequest:
    values: dict[str, object] = {
        "request_id": request_id,
        "name": name,
        "kind": resources.WALLET_KIND_HOT,
        "chain_family": resources.CHAIN_FAMILY_EVM,
        "chains": [CHAIN],
        "step_up_token": STEP_UP,
    }
    values.update(fields)
    return service.CreateCustodyWalletRequest(**values)  # type: ignore[arg-type]


@pytest.mark.embedded
async def test_wallets_are_created_once_by_admins_and_listed(custody: Custody) -> None:
    admin = custody.staff("admin-1", "admin")
    await refused(
        custody.stub.GetExtendedPublicKey(
            service.GetExtendedPublicKeyRequest(chain_family=resources.CHAIN_FAMILY_EVM)
        ),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    request = create_request("hot-a", "wallet-create-1")
    created = (await custody.stub.CreateCustodyWallet(request, metadata=admin)).wallet
    assert (await custody.stub.CreateCustodyWallet(request, metadata=admin)).wallet == created
    for bad, code, reason in (
        (create_request("hot-a", "wallet-create-2"), grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS"),
        (
            create_request("hot-b", "wallet-create-3", chains=["mars"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        ),
        (
            create_request("root-a", "wallet-create-4", kind=resources.WALLET_KIND_DEPOSIT_ROOT, backend=1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        ),
        (
            create_request(
                "cold-a", "wallet-create-5", kind=resources.WALLET_KIND_COLD, required_approvals=17
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        ),
        (
            create_request("hot-c", "wallet-create-6", required_approvals=2),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        ),
    ):
        await refused(custody.stub.CreateCustodyWallet(bad, metadata=admin), code, reason)
    await refused(
        custody.stub.CreateCustodyWallet(
            create_request("hot-d", "wallet-create-7"), metadata=custody.staff("o", "operator")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    await refused(
        custody.stub.CreateCustodyWallet(create_request("hot-e", "wallet-create-8")),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    cold = (
        await custody.stub.CreateCustodyWallet(
            create_request(
                "cold-b", "wallet-create-9", kind=resources.WALLET_KIND_COLD, required_approvals=3
            ),
            metadata=admin,
        )
    ).wallet
    assert cold.required_approvals == 3 and cold.key.backend == resources.KEY_BACKEND_HSM_PKCS11
    await custody.stub.DisableCustodyWallet(
        service.DisableCustodyWalletRequest(
            request_id="wallet-disable-1", wallet_id=cold.wallet_id, reason="audit"
        ),
        metadata=custody.staff("operator-1", "operator"),
    )
    auditor = custody.staff("auditor-1", "auditor")
    first = await custody.stub.ListCustodyWallets(
        service.ListCustodyWalletsRequest(page_size=1), metadata=auditor
    )
    assert [w.name for w in first.wallets] == ["cold-b"] and first.next_page_token
    rest = await custody.stub.ListCustodyWallets(
        service.ListCustodyWalletsRequest(page_size=1, page_token=first.next_page_token), metadata=auditor
    )
    assert [w.name for w in rest.wallets] == ["hot-a"] and not rest.next_page_token
    disabled = await custody.stub.ListCustodyWallets(
        service.ListCustodyWalletsRequest(state=resources.CUSTODY_WALLET_STATE_DISABLED), metadata=auditor
    )
    assert [w.wallet_id for w in disabled.wallets] == [cold.wallet_id]
    hot = await custody.stub.ListCustodyWallets(
        service.ListCustodyWalletsRequest(kind=resources.WALLET_KIND_HOT, chain=CHAIN), metadata=auditor
    )
    assert [w.wallet_id for w in hot.wallets] == [created.wallet_id]
    elsewhere = await custody.stub.ListCustodyWallets(service.ListCustodyWalletsRequest(chain="ethereum"))
    assert not elsewhere.wallets  # internal callers read the inventory too
    fetched = await custody.stub.GetCustodyWallet(
        service.GetCustodyWalletRequest(wallet_id=created.wallet_id), metadata=auditor
    )
    assert fetched.wallet == created
    await refused(
        custody.stub.GetCustodyWallet(
            service.GetCustodyWalletRequest(wallet_id=str(uuid.uuid4())), metadata=auditor
        ),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    await refused(
        custody.stub.ListCustodyWallets(
            service.ListCustodyWalletsRequest(), metadata=custody.staff("u-1", "user")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    created_events = await custody.events(custody_events_pb2.CustodyWalletCreated)
    assert [(e.wallet.name, e.actor_id) for e in created_events] == [
        ("hot-a", "admin-1"),
        ("cold-b", "admin-1"),
    ]
    changed = await custody.events(custody_events_pb2.CustodyWalletStateChanged)
    assert [(e.previous_state, e.wallet.state, e.actor_id, e.reason) for e in changed] == [
        (
            resources.CUSTODY_WALLET_STATE_ACTIVE,
            resources.CUSTODY_WALLET_STATE_DISABLED,
            "operator-1",
            "audit",
        )
    ]
