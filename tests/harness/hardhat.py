"""HardhatNode: a real Hardhat 2 JSON-RPC node (npm) on 127.0.0.1, and solc (npm) for contracts.

Both come from `make test`, which installs the pinned hardhat and solc packages into
.build/npm/hardhat (see the Makefile). Hardhat only runs from a directory whose node_modules holds
it, so the node runs with that directory as its working directory and a configuration file
written to its own scratch directory.

Environment: FINMESH_HARDHAT_PREFIX (the npm prefix; default .build/npm/hardhat),
FINMESH_NODE (the node executable; default: node on PATH).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eth_account._utils.legacy_transactions import (
    encode_transaction,
    serializable_unsigned_transaction_from_dict,
)
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils.crypto import keccak

from .process import HOST, ServerProcess, ServerStartError, free_port, log_tail, scratch_dir, wait_until

__all__ = [
    "HARDHAT_ACCOUNT_KEYS",
    "ChainDiverged",
    "HardhatNode",
    "PeerSync",
    "compile_solidity",
    "raw_transaction",
]

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PREFIX = ROOT / ".build" / "npm" / "hardhat"
# The first accounts of Hardhat's default mnemonic ("test test ... junk"), each funded with
# 10,000 ETH: publicly known development keys.
HARDHAT_ACCOUNT_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1d1706367c2e68ca870fc3fb9a804cdab365a",
)


def _prefix() -> Path:
    return Path(os.environ.get("FINMESH_HARDHAT_PREFIX") or DEFAULT_PREFIX)


def _node() -> str:
    exe = os.environ.get("FINMESH_NODE") or shutil.which("node")
    if not exe:
        raise ServerStartError("node not found: install Node.js 20 (tools/ci/install-system-packages.sh)")
    return exe


def _package_file(package: str, relative: str) -> Path:
    path = _prefix() / "node_modules" / package / relative
    if not path.exists():
        raise ServerStartError(
            f"{path} is missing: run `make test` (it installs hardhat and solc into {_prefix()})"
        )
    return path


class HardhatNode:
    """A Hardhat network node on 127.0.0.1:<port>, automining, in memory.

    With `initial_date` the node is deterministic: its genesis is the same on every start, and a
    block mined with the same transactions (FIFO mempool) at the same timestamp on top of the same
    parent has the same hash on every node. Two such nodes are two peers of one chain once a
    PeerSync keeps them in step; `stop()` then `start()` restarts a node empty on the same port."""

    def __init__(
        self, *, chain_id: int = 31337, start_timeout: float = 90.0, initial_date: str | None = None
    ) -> None:
        self.chain_id = chain_id
        self.initial_date = initial_date
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.dir: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: ServerProcess | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("HardhatNode is not started")
        return f"http://{HOST}:{self.port}"

    def start(self) -> HardhatNode:
        if self._proc is not None and self._proc.alive():
            return self
        began = time.monotonic()
        cli = _package_file("hardhat", "internal/cli/cli.js")
        self.dir = self.dir or scratch_dir("hardhat")
        config = self.dir / "hardhat.config.js"
        network: dict[str, Any] = {"chainId": self.chain_id, "mining": {"auto": True, "interval": 0}}
        if self.initial_date is not None:
            # Deterministic: a fixed genesis, and pending transactions mined in arrival order (so
            # that a peer replaying a block's transactions in order mines the same block).
            network["initialDate"] = self.initial_date
            network["mining"]["mempool"] = {"order": "fifo"}
        settings = {"networks": {"hardhat": network}}
        config.write_text(f"module.exports = {json.dumps(settings)};\n")
        self.port = self.port or free_port()
        env = {**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "DO_NOT_TRACK": "1"}
        self._proc = ServerProcess(
            "hardhat",
            [
                _node(),
                str(cli),
                "--config",
                str(config),
                "node",
                "--hostname",
                HOST,
                "--port",
                str(self.port),
            ],
            self.dir / "hardhat.log",
            cwd=_prefix(),
            env=env,
            stop_signal=signal.SIGTERM,
            death_signal=signal.SIGKILL,
            error_pattern=r"^Error|HardhatError|EADDRINUSE",
        )
        self._proc.start()
        try:
            wait_until(
                f"Hardhat on {HOST}:{self.port}",
                self._answers,
                timeout=self.start_timeout,
                proc=self._proc,
                interval=0.2,
            )
        except ServerStartError as exc:
            self._proc.kill()
            raise ServerStartError(f"Hardhat did not start: {exc}") from exc
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 10 s. Idempotent."""
        if self._proc is not None:
            self._proc.stop(timeout=10.0)

    def close(self) -> None:
        self.stop()
        if self.dir is not None and not os.environ.get("FINMESH_KEEP_SERVER_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.dir / "hardhat.log", lines) if self.dir else "<not started>"

    def alive(self) -> bool:
        return self._proc is not None and self._proc.alive()

    def rpc(self, method: str, params: list[Any] | None = None, *, timeout: float = 30.0) -> Any:
        """One JSON-RPC call (blocking); raises RuntimeError with the node's error."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
        request = urllib.request.Request(self.url, body, {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def _answers(self) -> bool:
        try:
            return int(self.rpc("eth_chainId"), 16) == self.chain_id
        except (OSError, urllib.error.URLError, ValueError, RuntimeError):
            return False


def compile_solidity(source: Path, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Compiles a Solidity file with solc from npm (solcjs, optimizer on); returns each
    contract's {"abi": [...], "bytecode": "0x..."} by contract name."""
    solcjs = _package_file("solc", "solc.js")
    out_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            _node(),
            str(solcjs),
            "--bin",
            "--abi",
            "--optimize",
            "--base-path",
            str(source.parent),
            "-o",
            str(out_dir),
            source.name,
        ],
        cwd=source.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise ServerStartError(f"solcjs failed on {source}:\n{done.stdout.decode()}\n{done.stderr.decode()}")
    contracts: dict[str, dict[str, Any]] = {}
    for binary in out_dir.glob("*.bin"):
        name = binary.stem.rsplit("_", 1)[-1]
        abi = json.loads(binary.with_suffix(".abi").read_text())
        contracts[name] = {"abi": abi, "bytecode": "0x" + binary.read_text().strip()}
    if not contracts:
        raise ServerStartError(f"solcjs produced no contract from {source}")
    return contracts


def raw_transaction(transaction: dict[str, Any]) -> str:
    """The signed encoding of a transaction as eth_getTransactionByHash returns it (Hardhat has no
    eth_getRawTransactionByHash), checked against the transaction's hash."""
    kind = int(transaction.get("type") or "0x0", 16)
    fields: dict[str, Any] = {
        "nonce": int(transaction["nonce"], 16),
        "gas": int(transaction["gas"], 16),
        "to": bytes.fromhex((transaction.get("to") or "0x")[2:]),
        "value": int(transaction["value"], 16),
        "data": bytes.fromhex(transaction["input"][2:]),
    }
    signature = (int(transaction["v"], 16), int(transaction["r"], 16), int(transaction["s"], 16))
    if kind == 0:
        fields["gasPrice"] = int(transaction["gasPrice"], 16)
        raw = encode_transaction(serializable_unsigned_transaction_from_dict(fields), signature)
    elif kind in (1, 2):
        fields.update(
            type=kind,
            chainId=int(transaction["chainId"], 16),
            accessList=transaction.get("accessList") or [],
            v=signature[0],
            r=signature[1],
            s=signature[2],
        )
        if kind == 1:
            fields["gasPrice"] = int(transaction["gasPrice"], 16)
        else:
            fields["maxFeePerGas"] = int(transaction["maxFeePerGas"], 16)
            fields["maxPriorityFeePerGas"] = int(transaction["maxPriorityFeePerGas"], 16)
        raw = TypedTransaction.from_dict(fields).encode()
    else:
        raise ValueError(f"transaction type {kind} is not replayed")
    encoded = "0x" + bytes(raw).hex()
    if "0x" + keccak(raw).hex() != transaction["hash"].lower():
        raise ValueError(f"re-encoded transaction {transaction['hash']} has another hash")
    return encoded


class ChainDiverged(AssertionError):
    """Two peers disagree on a block: a transaction reached one of them first and was mined there
    while the other mined its own (what a real network settles with a reorganisation)."""


class PeerSync:
    """Keeps deterministic Hardhat nodes of one chain in step, as peers of a real network are: a
    block that one node has and another lacks is replayed there, its transactions sent in order and
    mined at its timestamp, and must come out with the same hash. A node that is down is skipped
    and catches up, from genesis, once it answers again. Runs on a thread of its own."""

    def __init__(self, nodes: Sequence[HardhatNode], *, interval_s: float = 0.05) -> None:
        self.nodes = list(nodes)
        self.interval_s = interval_s
        self.error: Exception | None = None
        # (node URL, block number) of every block replayed, in order.
        self.replayed: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PeerSync:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="hardhat-peer-sync", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=30)

    def check(self) -> None:
        """Raises what stopped the sync (a divergence, a block it cannot replay), if anything."""
        if self.error is not None:
            raise self.error

    def in_step(self) -> bool:
        """True when every running node has the same head block (blocking: a thread's call)."""
        self.check()
        heads = {self._head(node) for node in self.nodes if node.alive()}
        return None not in heads and len(heads) == 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except (OSError, urllib.error.URLError, RuntimeError):
                pass  # a node going away or coming back mid-copy: the next round starts over
            except Exception as error:  # a divergence, or a block the sync cannot replay
                self.error = error
                return
            self._stop.wait(self.interval_s)

    @staticmethod
    def _head(node: HardhatNode) -> int | None:
        try:
            return int(node.rpc("eth_blockNumber", timeout=2.0), 16)
        except (OSError, urllib.error.URLError, RuntimeError, ValueError):
            return None

    def sync_once(self) -> int:
        """One round: copies to every running node the blocks the highest one has; returns how
        many blocks were copied."""
        heads = {index: self._head(node) for index, node in enumerate(self.nodes) if node.alive()}
        known = {index: head for index, head in heads.items() if head is not None}
        if len(known) < 2:
            return 0
        source_index = max(known, key=lambda index: known[index])
        source = self.nodes[source_index]
        copied = 0
        for index, head in known.items():
            if index == source_index or head >= known[source_index]:
                continue
            target = self.nodes[index]
            ours = _block(source, head, full=False)
            theirs = _block(target, head, full=False)
            if ours["hash"] != theirs["hash"]:
                raise ChainDiverged(
                    f"block {head}: {source.url} has {ours['hash']}, {target.url} has {theirs['hash']}"
                )
            for number in range(head + 1, known[source_index] + 1):
                _replay(_block(source, number, full=True), target, self.replayed)
                copied += 1
        return copied


def _block(node: HardhatNode, number: int, *, full: bool) -> dict[str, Any]:
    block = node.rpc("eth_getBlockByNumber", [hex(number), full])
    if block is None:
        raise RuntimeError(f"{node.url} has no block {number}")
    return dict(block)


def _replay(block: dict[str, Any], target: HardhatNode, replayed: list[tuple[str, int]]) -> None:
    transactions = block["transactions"]
    timestamp = int(block["timestamp"], 16)
    if not transactions:
        target.rpc("evm_mine", [timestamp])
    elif len(transactions) == 1:
        target.rpc("evm_setNextBlockTimestamp", [timestamp])
        target.rpc("eth_sendRawTransaction", [raw_transaction(transactions[0])])
    else:
        target.rpc("evm_setAutomine", [False])
        try:
            for transaction in transactions:
                target.rpc("eth_sendRawTransaction", [raw_transaction(transaction)])
            target.rpc("evm_mine", [timestamp])
        finally:
            target.rpc("evm_setAutomine", [True])
    replayed.append((target.url, int(block["number"], 16)))
    copy = _block(target, int(block["number"], 16), full=False)
    if copy["hash"] != block["hash"]:
        raise ChainDiverged(
            f"block {int(block['number'], 16)} replayed on {target.url} as {copy['hash']}, "
            f"not {block['hash']}"
        )
