"""Signatures per second through custody: SoftHSM2 keys against envelope-encrypted software keys.

One custody service in this process (kit server, no TLS, SQLite under a scratch directory) with a
fresh SoftHSM2 token (tests/harness) as its HSM. Two hot wallets: one key in the token, one
software key in an envelope whose master key is in the token. CONCURRENCY clients send
SignTransaction requests, each with its own withdraw approval (Ed25519, made before the clock
starts) for a distinct nonce, so every request runs the whole policy: approval verification,
transaction decoding, the key backend, recovery checks, the audit record, its event and the
idempotency key, in one database transaction. The backends alone (sign a digest, no policy, no
database) are measured too, to show where the time goes.

Figures (custody/...): hsm_signatures_per_s, envelope_signatures_per_s (through SignTransaction);
hsm_backend_signs_per_s, envelope_backend_signs_per_s (the key backend alone); p50_ms for one
client through SignTransaction with the HSM key.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from finmesh.custody.v1 import custody_resources_pb2 as resources
from finmesh.custody.v1 import custody_service_pb2 as service

from bench.results import Figure
from svc.custody.keys import Backend, EnvelopeKeys, KeyRecord, Keys, Pkcs11Keys, Pkcs11Token, Pkcs11Wrapper
from svc.kit.envelope import Envelope
from tests.custody.conftest import Custody, claims_for, native_transaction, start_custody
from tests.harness.softhsm import SoftHsmToken

SIGNATURES = int(os.environ.get("FINMESH_BENCH_CUSTODY_SIGNATURES", "400"))
BACKEND_SIGNS = 1_000
CONCURRENCY = 8
LATENCY_SAMPLES = 100
RECIPIENT = "0x6666666666666666666666666666666666666666"
DIGEST = bytes(range(32))


async def _through_custody(
    custody: Custody, wallet: resources.CustodyWallet, count: int, first_nonce: int
) -> float:
    """Signatures per second of `count` SignTransaction calls from CONCURRENCY clients."""
    requests = []
    for nonce in range(first_nonce, first_nonce + count):
        transaction = native_transaction(wallet.address, RECIPIENT, 1_000 + nonce, nonce)
        approval = custody.withdraw.sign(claims_for(transaction, RECIPIENT, 1_000 + nonce))
        requests.append((transaction, approval))
    queue = list(reversed(requests))

    async def client() -> None:
        while queue:
            transaction, approval = queue.pop()
            await custody.sign(wallet.wallet_id, transaction, approval=approval)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return count / (time.perf_counter() - started)


async def _backend_alone(keys: Keys, key: KeyRecord) -> float:
    started = time.perf_counter()
    for _ in range(BACKEND_SIGNS):
        await keys.sign(key, DIGEST)
    return BACKEND_SIGNS / (time.perf_counter() - started)


async def _latency_ms(custody: Custody, wallet: resources.CustodyWallet, first_nonce: int) -> list[float]:
    samples = []
    for nonce in range(first_nonce, first_nonce + LATENCY_SAMPLES):
        transaction = native_transaction(wallet.address, RECIPIENT, 5, nonce)
        approval = custody.withdraw.sign(claims_for(transaction, RECIPIENT, 5))
        started = time.perf_counter()
        await custody.sign(wallet.wallet_id, transaction, approval=approval)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _run(directory: Path, token: SoftHsmToken) -> list[Figure]:
    custody = await start_custody(f"sqlite+aiosqlite:///{directory / 'custody.db'}", directory, token)
    try:
        hsm = await custody.create_wallet("bench-hot-hsm")
        software = await custody.create_wallet(
            "bench-hot-envelope", backend=resources.KEY_BACKEND_SOFTWARE_ENVELOPE
        )
        hsm_rate = await _through_custody(custody, hsm, SIGNATURES, 0)
        envelope_rate = await _through_custody(custody, software, SIGNATURES, 0)
        latency = await _latency_ms(custody, hsm, SIGNATURES)
        listed = await custody.stub.ListSignatureRecords(
            service.ListSignatureRecordsRequest(page_size=1), metadata=custody.staff("auditor", "auditor")
        )
        assert listed.records[0].outcome == resources.SIGNATURE_OUTCOME_GRANTED
    finally:
        await custody.stop()
    backend_token = Pkcs11Token(token.module, token.label, token.user_pin)
    try:
        hsm_keys = Pkcs11Keys(backend_token)
        wrapper = Pkcs11Wrapper(backend_token, "bench-master")
        await wrapper.ensure_key()
        envelope_keys = EnvelopeKeys(Envelope(wrapper))
        hsm_key = await hsm_keys.generate("bench-backend-hsm")
        software_key = await envelope_keys.generate("bench-backend-envelope")
        assert hsm_key.backend is Backend.HSM_PKCS11
        hsm_backend = await _backend_alone(hsm_keys, hsm_key)
        envelope_backend = await _backend_alone(envelope_keys, software_key)
    finally:
        await backend_token.close()
    detail = {"signatures": SIGNATURES, "concurrency": CONCURRENCY, "database": "sqlite", "hsm": "SoftHSM2"}
    return [
        Figure("custody", "hsm_signatures_per_s", hsm_rate, "1/s", "", detail),
        Figure("custody", "envelope_signatures_per_s", envelope_rate, "1/s", "", detail),
        Figure("custody", "hsm_backend_signs_per_s", hsm_backend, "1/s", "", {"signs": BACKEND_SIGNS}),
        Figure(
            "custody", "envelope_backend_signs_per_s", envelope_backend, "1/s", "", {"signs": BACKEND_SIGNS}
        ),
        Figure(
            "custody",
            "p50_ms",
            statistics.median(latency),
            "ms",
            "",
            {"p99_ms": sorted(latency)[int(len(latency) * 0.99) - 1], "samples": LATENCY_SAMPLES},
        ),
    ]


def run() -> list[Figure]:
    token = SoftHsmToken().start()
    token.activate()
    try:
        with tempfile.TemporaryDirectory(prefix="finmesh-bench-custody-") as directory:
            return asyncio.run(_run(Path(directory), token))
    finally:
        token.close()
