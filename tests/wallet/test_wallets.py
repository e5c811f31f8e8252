"""Wallets and their deposit addresses through the gRPC contract, against real peers: derivation
from custody's extended public key, idempotency, the watch registration, WalletCreated, address
resolution, listing, refusals and concurrent allocation."""

from __future__ import annotations

import asyncio

import grpc
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as chain_service
from finmesh.custody.v1 import custody_resources_pb2 as custody_resources
from finmesh.custody.v1 import custody_service_pb2 as custody_service
from finmesh.events.v1 import wallet_events_pb2
from finmesh.user.v1 import user_service_pb2 as user_service
from finmesh.wallet.v1 import wallet_resources_pb2 as resources
from finmesh.wallet.v1 import wallet_service_pb2 as service

from svc.kit.hd import ExtendedPublic, evm_address, parse_path
from tests.harness.calls import refused
from tests.wallet.conftest import CHAIN, DISABLED_CHAIN, Mesh, rid

NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


async def watched(mesh: Mesh) -> dict[str, tuple[str, str]]:
    """The chain gateway's watch list of CHAIN: address -> (owner, reference)."""
    response = await mesh.gateway.ListWatchedAddresses(
        chain_service.ListWatchedAddressesRequest(chain=CHAIN, page_size=1000)
    )
    return {item.address.lower(): (item.owner, item.reference) for item in response.watched_addresses}


async def test_a_wallet_gets_a_derived_watched_address_once(mesh: Mesh) -> None:
    user = await mesh.register()
    request_id = rid("wallet")
    created = await mesh.create_wallet(user.user_id, request_id=request_id)
    wallet = created.wallet
    assert created.created and wallet.user_id == user.user_id and wallet.chain == CHAIN
    assert wallet.state == resources.WALLET_STATE_ACTIVE

    # The address is the non-hardened child of custody's xpub at the recorded path.
    key = (
        await mesh.custody.GetExtendedPublicKey(
            custody_service.GetExtendedPublicKeyRequest(chain_family=custody_resources.CHAIN_FAMILY_EVM)
        )
    ).extended_public_key
    deposit = wallet.deposit_address
    assert deposit.custody_wallet_id == key.wallet_id and deposit.xpub_fingerprint == key.fingerprint
    assert deposit.derivation_path == f"{key.account_path}/0/{deposit.address_index}"
    account = ExtendedPublic.parse(key.xpub)
    tail = parse_path(deposit.derivation_path)[len(parse_path(key.account_path)) :]
    assert deposit.address == evm_address(account.derive(tail).public_key)

    # Registered with the chain gateway before the call returned, and announced.
    assert (await watched(mesh))[deposit.address.lower()] == ("deposit", wallet.wallet_id)
    announced = await mesh.events(wallet_events_pb2.WalletCreated)
    assert [event.wallet for event in announced] == [wallet]
    assert announced[0].meta.aggregate_id == wallet.wallet_id

    # Idempotent: the same request replays; another request returns the wallet, not created.
    assert await mesh.create_wallet(user.user_id, request_id=request_id) == created
    again = await mesh.create_wallet(user.user_id)
    assert again.wallet == wallet and not again.created
    assert len(await mesh.events(wallet_events_pb2.WalletCreated)) == 1

    # Read back by owner and by address (any letter case).
    metadata = mesh.user(user.user_id)
    got = await mesh.wallets.GetWallet(service.GetWalletRequest(user_id="me", chain=CHAIN), metadata=metadata)
    assert got.wallet == wallet
    for address in (deposit.address, deposit.address.lower(), "0x" + deposit.address[2:].upper()):
        resolved = await mesh.wallets.ResolveDepositAddress(
            service.ResolveDepositAddressRequest(chain=CHAIN, address=address)
        )
        assert resolved.wallet == wallet
    listed = await mesh.wallets.ListWallets(service.ListWalletsRequest(user_id=user.user_id))
    assert list(listed.wallets) == [wallet] and not listed.next_page_token


async def test_addresses_are_never_shared_and_concurrent_creation_is_safe(mesh: Mesh) -> None:
    users = [await mesh.register() for _ in range(6)]
    # Every user at once, and the first user five more times under other request ids.
    calls = [mesh.create_wallet(user.user_id) for user in users]
    calls += [mesh.create_wallet(users[0].user_id) for _ in range(5)]
    results = await asyncio.gather(*calls)
    first = {result.wallet.wallet_id for result in results if result.wallet.user_id == users[0].user_id}
    assert len(first) == 1
    assert sum(result.created for result in results) == len(users)
    wallets = {result.wallet.wallet_id: result.wallet for result in results}
    assert len(wallets) == len(users)
    indexes = [wallet.deposit_address.address_index for wallet in wallets.values()]
    addresses = [wallet.deposit_address.address.lower() for wallet in wallets.values()]
    assert len(set(indexes)) == len(users) and len(set(addresses)) == len(users)
    watch_list = await watched(mesh)
    for wallet in wallets.values():
        assert watch_list[wallet.deposit_address.address.lower()] == ("deposit", wallet.wallet_id)
    created = await mesh.events(wallet_events_pb2.WalletCreated)
    assert sorted(event.wallet.wallet_id for event in created) == sorted(wallets)


async def test_refusals(mesh: Mesh) -> None:
    user, other = await mesh.register(), await mesh.register()
    request_id = rid("wallet")
    await mesh.create_wallet(user.user_id, request_id=request_id)
    # The same request id with other content.
    await refused(
        mesh.create_wallet(user.user_id, chain=DISABLED_CHAIN, request_id=request_id),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    # Another user's use of the same request id is their own request.
    mine = (await mesh.create_wallet(user.user_id)).wallet
    theirs = await mesh.create_wallet(other.user_id, request_id=request_id)
    assert theirs.created and theirs.wallet.user_id == other.user_id and theirs.wallet != mine
    info = await refused(
        mesh.create_wallet(other.user_id, chain=DISABLED_CHAIN), PRECONDITION, "INVALID_STATE"
    )
    assert info.metadata["chain"] == DISABLED_CHAIN
    await refused(mesh.create_wallet(other.user_id, chain="no-such-chain"), NOT_FOUND, "NOT_FOUND")
    # An end user acts only for themselves; reads of another user need a staff role.
    await refused(
        mesh.wallets.CreateWallet(
            service.CreateWalletRequest(request_id=rid(), user_id=other.user_id, chain=CHAIN),
            metadata=mesh.user(user.user_id),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    await refused(
        mesh.wallets.GetWallet(
            service.GetWalletRequest(user_id=user.user_id, chain=CHAIN), metadata=mesh.user(other.user_id)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    staff_read = await mesh.wallets.GetWallet(
        service.GetWalletRequest(user_id=user.user_id, chain=CHAIN),
        metadata=mesh.user("support-1", "support"),
    )
    assert staff_read.wallet.user_id == user.user_id
    await refused(
        mesh.wallets.GetWallet(
            service.GetWalletRequest(user_id="me", chain="devnet"), metadata=mesh.user(user.user_id)
        ),
        NOT_FOUND,
        "NOT_FOUND",
    )
    await refused(
        mesh.wallets.ResolveDepositAddress(
            service.ResolveDepositAddressRequest(
                chain=CHAIN, address=staff_read.wallet.deposit_address.address
            ),
            metadata=mesh.user(user.user_id),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    await refused(
        mesh.wallets.ResolveDepositAddress(
            service.ResolveDepositAddressRequest(chain=CHAIN, address="0x" + "ab" * 20)
        ),
        NOT_FOUND,
        "NOT_FOUND",
    )
    # A frozen user gets no wallet.
    frozen = await mesh.register()
    await mesh.identity.users.FreezeUser(
        user_service.FreezeUserRequest(
            request_id=rid("freeze"),
            user_id=frozen.user_id,
            reason=user_service.STATUS_REASON_SECURITY,
            note="test",
        )
    )
    info = await refused(mesh.create_wallet(frozen.user_id), PRECONDITION, "INVALID_STATE")
    assert info.metadata["user_status"] == "USER_STATUS_FROZEN"
    # Bad input is refused by the contract's rules.
    await refused(
        mesh.wallets.CreateWallet(
            service.CreateWalletRequest(request_id="short", user_id="me", chain=CHAIN),
            metadata=mesh.user(user.user_id),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
