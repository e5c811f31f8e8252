"""The whole custodial-wallet profile as separate processes with mTLS (`finmesh run`), on the real
servers the harness starts: PostgreSQL (every service's database, a schema each), Kafka (the
bus), Redis (gateway rate limits, auth nonces, the account balance cache), two Hardhat nodes (the
chains, with the harness's ERC-20 deployed on the first) and a SoftHSM2 token (custody's keys).

Settings reach the services through the launcher's environment, which every child inherits;
those that share a name across services (FINMESH_CHAINS, FINMESH_ASSETS) are scoped to one
service as FINMESH_<SERVICE>__<NAME>. The tests reach the platform only through the REST edge;
the chains are driven from outside accounts over their own JSON-RPC.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account
from web3 import HTTPProvider, Web3
from web3.types import RPCEndpoint

from tests.harness.hardhat import HARDHAT_ACCOUNT_KEYS, HardhatNode, compile_solidity
from tests.harness.servers import KafkaBroker, PostgresServer, RedisServer
from tests.harness.softhsm import CONF_ENV, SoftHsmToken
from tools.demo.platform import (
    Platform,
    approval_key_environment,
    bring_up,
    hot_wallet_environment,
    withdrawal_policy,
)

ROOT = Path(__file__).resolve().parents[2]
TOKEN_SOURCE = ROOT / "svc" / "chain_gateway" / "contracts" / "TestToken.sol"
CHAIN_A, CHAIN_A_ID = "hardhat-a", 31337
CHAIN_B, CHAIN_B_ID = "hardhat-b", 31338
DEPTH = 3
TOKEN_SYMBOL = "TTK"
TOKEN_DECIMALS = 6
TOKEN_SUPPLY = 10**15
ETHER = 10**18
APPROVAL_KEY_ID = "withdraw-e2e"
SWEEP_KEY_ID = "deposit-e2e"
# Withdrawal policy: a flat fee, L0 limits, approvers from AUTO_APPROVAL_BELOW, review far above.
ETH_FEE = 10**15
AUTO_APPROVAL_BELOW_ETH = ETHER // 2
TOKEN_FEE = 10**5
AUTO_APPROVAL_BELOW_TOKEN = 50 * 10**6


@dataclass
class Chain:
    key: str
    node: HardhatNode
    web3: Web3

    @property
    def native(self) -> str:
        return f"{self.key}:ETH"

    def mine(self, blocks: int) -> None:
        self.web3.provider.make_request(RPCEndpoint("hardhat_mine"), [hex(blocks)])


@dataclass
class Token:
    chain: Chain
    address: str
    abi: list[Any]

    @property
    def asset(self) -> str:
        return f"{self.chain.key}:{TOKEN_SYMBOL}"

    def balance_of(self, address: str) -> int:
        contract = self.chain.web3.eth.contract(address=Web3.to_checksum_address(self.address), abi=self.abi)
        return int(contract.functions.balanceOf(Web3.to_checksum_address(address)).call())


@dataclass
class E2E:
    """The running platform and the world around it."""

    platform: Platform
    chains: dict[str, Chain]
    token: Token
    var_dir: Path


def _hardhat(chain_id: int) -> Iterator[HardhatNode]:
    node = HardhatNode(chain_id=chain_id)
    try:
        node.start()
        yield node
    finally:
        node.close()


@pytest.fixture(scope="package")
def hardhat_a() -> Iterator[HardhatNode]:
    yield from _hardhat(CHAIN_A_ID)


@pytest.fixture(scope="package")
def hardhat_b() -> Iterator[HardhatNode]:
    yield from _hardhat(CHAIN_B_ID)


@pytest.fixture(scope="package")
def hsm_token() -> Iterator[SoftHsmToken]:
    token = SoftHsmToken().start()
    try:
        yield token
    finally:
        token.close()


def deploy_token(chain: Chain, artifact: dict[str, Any]) -> Token:
    """TestToken from Hardhat's first account, which then holds the supply."""
    deployer = Account.from_key(HARDHAT_ACCOUNT_KEYS[0])
    w3 = chain.web3
    contract = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    transaction = contract.constructor(
        "Test Token", TOKEN_SYMBOL, TOKEN_DECIMALS, TOKEN_SUPPLY
    ).build_transaction(
        {"from": deployer.address, "nonce": w3.eth.get_transaction_count(deployer.address, "pending")}
    )
    sent = w3.eth.send_raw_transaction(deployer.sign_transaction(transaction).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(sent)
    assert receipt["status"] == 1
    return Token(chain, str(receipt["contractAddress"]).lower(), artifact["abi"])


def chain_gateway_chain(name: str, chain_id: int, url: str, tokens: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "display_name": name,
        "chain_id": chain_id,
        "gas_model": "eip1559",
        "confirmation_depth": DEPTH,
        "block_time_ms": 1_000,
        "native_symbol": "ETH",
        "tokens": tokens,
        "fee_cap_per_gas": 500 * 10**9,
        "providers": [{"name": "hardhat", "endpoint": url, "timeout_ms": 10_000}],
        "health_interval_ms": 500,
        "follower_poll_interval_ms": 200,
        "tracker_interval_ms": 200,
    }


def platform_environment(
    database_url: str,
    kafka: KafkaBroker,
    redis: RedisServer,
    hsm: SoftHsmToken,
    chains: dict[str, Chain],
    token: Token,
    approval_key: Ed25519PrivateKey,
    sweep_key: Ed25519PrivateKey,
) -> dict[str, str]:
    """Every FINMESH_* setting of the profile on the real servers (scoped where names collide)."""
    chain_a, chain_b = chains[CHAIN_A], chains[CHAIN_B]
    eth_policy = withdrawal_policy(ETHER, ETH_FEE, AUTO_APPROVAL_BELOW_ETH)
    token_entry = {"symbol": TOKEN_SYMBOL, "decimals": TOKEN_DECIMALS, "contract": token.address}
    settings: dict[str, Any] = {
        "FINMESH_DATABASE_URL": database_url,
        "FINMESH_BUS": "kafka",
        "FINMESH_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "FINMESH_REDIS_URL": redis.url,
        "FINMESH_PRODUCT_PROFILE": "custodial-wallet",
        # Generous edge deadlines: the machine runs every service of the profile at once.
        "FINMESH_GATEWAY__DEFAULT_TIMEOUT_S": 30,
        # argon2id at a test cost: the machine runs every service of the profile at once.
        "FINMESH_AUTH__ARGON2_MEMORY_KIB": 8192,
        "FINMESH_AUTH__ARGON2_TIME_COST": 1,
        "FINMESH_CHAIN_GATEWAY__CHAINS": {
            CHAIN_A: chain_gateway_chain("Hardhat A", CHAIN_A_ID, chain_a.node.url, [token_entry]),
            CHAIN_B: chain_gateway_chain("Hardhat B", CHAIN_B_ID, chain_b.node.url, []),
        },
        CONF_ENV: str(hsm.conf_path),
        "FINMESH_CUSTODY__HSM_MODULE": hsm.module,
        "FINMESH_CUSTODY__HSM_TOKEN_LABEL": hsm.label,
        "FINMESH_CUSTODY__HSM_PIN": hsm.user_pin,
        "FINMESH_CUSTODY__CHAINS": {
            CHAIN_A: {
                "chain_id": CHAIN_A_ID,
                "native_asset": chain_a.native,
                "tokens": {token.address: token.asset},
            },
            CHAIN_B: {"chain_id": CHAIN_B_ID, "native_asset": chain_b.native},
        },
        "FINMESH_CUSTODY__MOVEMENT_INTERVAL_S": 1,
        "FINMESH_ACCOUNT__ASSETS": {chain_a.native: 18, token.asset: TOKEN_DECIMALS, chain_b.native: 18},
        "FINMESH_WITHDRAW__WITHDRAWAL_ASSETS": {
            chain_a.native: eth_policy,
            token.asset: withdrawal_policy(10**TOKEN_DECIMALS, TOKEN_FEE, AUTO_APPROVAL_BELOW_TOKEN),
            chain_b.native: eth_policy,
        },
        "FINMESH_WITHDRAW__CHAIN_IDS": {CHAIN_A: CHAIN_A_ID, CHAIN_B: CHAIN_B_ID},
        "FINMESH_WITHDRAW__ADDRESS_COOL_DOWN_S": 0,
        "FINMESH_WITHDRAW__EXECUTION_INTERVAL_S": 1,
    }
    environment = {
        name: value if isinstance(value, str) else json.dumps(value) for name, value in settings.items()
    }
    return {
        **environment,
        **approval_key_environment(
            {"withdraw": (APPROVAL_KEY_ID, approval_key), "deposit": (SWEEP_KEY_ID, sweep_key)}
        ),
    }


@pytest.fixture(scope="package")
def e2e(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,
    kafka_broker: KafkaBroker,
    redis_server: RedisServer,
    hardhat_a: HardhatNode,
    hardhat_b: HardhatNode,
    hsm_token: SoftHsmToken,
) -> Iterator[E2E]:
    root = tmp_path_factory.mktemp("e2e")
    chains = {
        key: Chain(key, node, Web3(HTTPProvider(node.url)))
        for key, node in ((CHAIN_A, hardhat_a), (CHAIN_B, hardhat_b))
    }
    artifact = compile_solidity(TOKEN_SOURCE, root / "solc")["TestToken"]
    token = deploy_token(chains[CHAIN_A], artifact)
    database = f"e2e_{uuid.uuid4().hex[:12]}"
    environment = platform_environment(
        postgres_server.create_database(database),
        kafka_broker,
        redis_server,
        hsm_token,
        chains,
        token,
        Ed25519PrivateKey.generate(),
        Ed25519PrivateKey.generate(),
    )
    var_dir = root / "var"
    platform = bring_up(
        var_dir, environment, [CHAIN_A, CHAIN_B], hot_wallet_environment([CHAIN_A, CHAIN_B]), say=print
    )
    try:
        yield E2E(platform, chains, token, var_dir)
    finally:
        platform.stop()
        postgres_server.drop_database(database)
