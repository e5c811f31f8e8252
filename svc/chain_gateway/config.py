"""The chain gateway's settings: the kit's, plus one entry per EVM chain.

A chain is data, not code: its id, gas model, confirmation depth, fee cap, tokens and RPC
providers. A deployment sets FINMESH_CHAINS to a JSON object `{"<chain key>": {...}}` that
replaces the defaults below; adding an EVM chain is adding an entry. The defaults carry the four
public chains (DISABLED: their providers' endpoints carry credentials, so a deployment supplies
them) and `local`, the embedded in-process EVM (eth-tester on py-evm) that `make run` uses, with
its development ERC-20 (svc/chain_gateway/dev_token.py).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from svc.kit.config import KitSettings

CHAIN_KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
SYMBOL_PATTERN = re.compile(r"^[A-Za-z0-9.]{1,16}$")
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
# The scheme of the embedded in-process EVM; every other endpoint is JSON-RPC over HTTP(S).
EMBEDDED_SCHEME = "embedded:"
EMBEDDED_CHAIN_ID = 131277322940537  # eth-tester's chain id
# eth-tester's first pre-funded account (private key 0x...01), a well-known development key.
EMBEDDED_FUNDING_KEY = "0x" + "00" * 31 + "01"
GWEI = 10**9


class GasModel(StrEnum):
    EIP1559 = "eip1559"
    LEGACY = "legacy"


class ChainStatus(StrEnum):
    ENABLED = "enabled"
    READ_ONLY = "read_only"
    DISABLED = "disabled"


class ProviderRole(StrEnum):
    PRIMARY = "primary"
    FALLBACK = "fallback"
    SELF_HOSTED = "self_hosted"


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenConfig(_Entry):
    """An ERC-20 token the platform supports on a chain; its asset id is `<chain>:<symbol>`."""

    symbol: str = Field(pattern=SYMBOL_PATTERN.pattern)
    decimals: int = Field(ge=0, le=36)
    contract: str = Field(pattern=ADDRESS_PATTERN)


# The development ERC-20 every embedded chain carries (svc/chain_gateway/dev_token.py). The
# funding account deploys it at its first nonce, so its address is the one that sender and nonce
# 0 give (keccak(rlp([sender, 0]))[12:]) on every embedded chain.
EMBEDDED_TOKEN = TokenConfig(symbol="USDT", decimals=6, contract="0xf2e246bb76df876cef8b38ae84130f4f55de395b")


class ProviderConfig(_Entry):
    """One RPC provider; `priority` orders failover (lower first)."""

    name: str = Field(min_length=1, max_length=64)
    role: ProviderRole = ProviderRole.PRIMARY
    priority: int = Field(default=0, ge=0, le=1000)
    # http(s)://host:port/path, or "embedded:<name>" for the in-process EVM.
    endpoint: str = Field(min_length=1, max_length=1024)
    timeout_ms: int = Field(default=5_000, gt=0, le=60_000)


class CircuitConfig(_Entry):
    """The breaker in front of each provider (SPEC 3: open at 50% errors or calls slower than
    5 s, for 30 s), judged over the last `window_calls` calls once `window_calls_min` were made."""

    window_calls: int = Field(default=10, ge=1, le=1000)
    window_calls_min: int = Field(default=4, ge=1, le=1000)
    failure_rate_bps: int = Field(default=5_000, gt=0, le=10_000)
    slow_call_ms: int = Field(default=5_000, gt=0, le=60_000)
    open_ms: int = Field(default=30_000, gt=0, le=3_600_000)


class ChainConfig(_Entry):
    """One EVM chain."""

    display_name: str = Field(min_length=1, max_length=100)
    chain_id: int = Field(gt=0, lt=2**63)
    gas_model: GasModel
    # Blocks from the block of a transfer (counted as 1) to finality as the platform treats it.
    confirmation_depth: int = Field(ge=1, le=10_000)
    block_time_ms: int = Field(gt=0, le=600_000)
    native_symbol: str = Field(pattern=SYMBOL_PATTERN.pattern)
    native_decimals: int = Field(default=18, ge=0, le=36)
    tokens: tuple[TokenConfig, ...] = ()
    status: ChainStatus = ChainStatus.ENABLED
    development: bool = False
    # The most the gateway ever puts in max_fee_per_gas (or gas_price), in wei.
    fee_cap_per_gas: int = Field(gt=0, lt=2**256)
    # Tip used when the provider has no eth_maxPriorityFeePerGas (EIP-1559 only), in wei.
    priority_fee_per_gas_default: int = Field(default=GWEI, ge=0, lt=2**256)
    gas_limit_margin_bps: int = Field(default=2_000, ge=0, le=50_000)
    explorer_tx_url_template: str = Field(default="", max_length=200)
    providers: tuple[ProviderConfig, ...] = ()
    circuit: CircuitConfig = CircuitConfig()
    health_interval_ms: int = Field(default=5_000, gt=0, le=600_000)
    # A provider more than this many blocks behind the best head is LAGGING.
    lag_blocks_max: int = Field(default=5, ge=0, le=10_000)
    # A head older than this is stale (LAGGING); 0 turns the check off (chains that only make a
    # block when there is a transaction, like the development chains).
    head_age_max_ms: int = Field(default=0, ge=0, le=3_600_000)
    follower_poll_interval_ms: int = Field(default=1_000, gt=0, le=600_000)
    follower_blocks_per_tick_max: int = Field(default=50, ge=1, le=1_000)
    # Replicas share a chain's follower through a lease renewed at every tick: a replica that
    # stops renewing (crashed, cut off) is taken over this long after its last renewal. Well above
    # the poll interval and the clock skew between replicas.
    follower_lease_ms: int = Field(default=30_000, gt=0, le=3_600_000)
    # Deeper reorganisations stop the follower (STALLED) for an operator.
    reorg_depth_max: int = Field(default=64, ge=1, le=10_000)
    reservation_timeout_ms: int = Field(default=600_000, gt=0, le=86_400_000)
    stuck_timeout_ms: int = Field(default=300_000, gt=0, le=86_400_000)
    drop_timeout_ms: int = Field(default=600_000, gt=0, le=86_400_000)
    tracker_interval_ms: int = Field(default=2_000, gt=0, le=600_000)
    # Development chains only: the pre-funded key CreateDevTransfer sends from.
    dev_funding_key: str = Field(default="", pattern=r"^(|0x[0-9a-fA-F]{64})$")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.status is not ChainStatus.DISABLED and not self.providers:
            raise ValueError("an enabled or read-only chain needs at least one provider")
        names = [provider.name for provider in self.providers]
        if len(set(names)) != len(names):
            raise ValueError(f"provider names must be unique: {names}")
        symbols = [token.symbol for token in self.tokens] + [self.native_symbol]
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"token symbols must be unique and differ from the native one: {symbols}")
        if self.dev_funding_key and not self.development:
            raise ValueError("dev_funding_key is only for development chains")
        if self.follower_lease_ms < 2 * self.follower_poll_interval_ms:
            raise ValueError("follower_lease_ms must be at least twice follower_poll_interval_ms")
        if self.circuit.window_calls_min > self.circuit.window_calls:
            raise ValueError("circuit.window_calls_min must not exceed circuit.window_calls")
        return self

    def ordered_providers(self) -> list[ProviderConfig]:
        """Providers in failover order: priority, then the order of the configuration."""
        return sorted(self.providers, key=lambda provider: provider.priority)


def _public(
    name: str,
    chain_id: int,
    gas_model: GasModel,
    depth: int,
    block_ms: int,
    symbol: str,
    cap_gwei: int,
    explorer: str,
) -> ChainConfig:
    return ChainConfig(
        display_name=name,
        chain_id=chain_id,
        gas_model=gas_model,
        confirmation_depth=depth,
        block_time_ms=block_ms,
        native_symbol=symbol,
        status=ChainStatus.DISABLED,
        fee_cap_per_gas=cap_gwei * GWEI,
        explorer_tx_url_template=explorer,
        head_age_max_ms=max(60_000, block_ms * 10),
        follower_poll_interval_ms=max(250, block_ms // 2),
    )


def default_chains() -> dict[str, ChainConfig]:
    """The chains of a deployment that sets no FINMESH_CHAINS."""
    return {
        "ethereum": _public(
            "Ethereum Mainnet",
            1,
            GasModel.EIP1559,
            12,
            12_000,
            "ETH",
            500,
            "https://etherscan.io/tx/{tx_hash}",
        ),
        "bsc": _public(
            "BNB Smart Chain", 56, GasModel.LEGACY, 15, 3_000, "BNB", 100, "https://bscscan.com/tx/{tx_hash}"
        ),
        "polygon": _public(
            "Polygon PoS",
            137,
            GasModel.EIP1559,
            64,
            2_000,
            "POL",
            5_000,
            "https://polygonscan.com/tx/{tx_hash}",
        ),
        "arbitrum": _public(
            "Arbitrum One", 42161, GasModel.EIP1559, 20, 250, "ETH", 100, "https://arbiscan.io/tx/{tx_hash}"
        ),
        "local": ChainConfig(
            display_name="Embedded development EVM",
            chain_id=EMBEDDED_CHAIN_ID,
            gas_model=GasModel.EIP1559,
            confirmation_depth=2,
            block_time_ms=1_000,
            native_symbol="ETH",
            tokens=(EMBEDDED_TOKEN,),
            development=True,
            fee_cap_per_gas=100 * GWEI,
            providers=(ProviderConfig(name="embedded", endpoint=EMBEDDED_SCHEME + "local"),),
            follower_poll_interval_ms=500,
            tracker_interval_ms=500,
            dev_funding_key=EMBEDDED_FUNDING_KEY,
        ),
    }


class ChainGatewaySettings(KitSettings):
    """Settings of the chain gateway (FINMESH_* variables)."""

    chains: dict[str, ChainConfig] = Field(default_factory=default_chains)

    @model_validator(mode="after")
    def _keys(self) -> Self:
        for key in self.chains:
            if not CHAIN_KEY_PATTERN.match(key):
                raise ValueError(f"chain key {key!r} must match {CHAIN_KEY_PATTERN.pattern}")
        return self
