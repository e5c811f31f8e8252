"""The REST edge at saturation: the Python gateway against direct gRPC and against grpc-gateway.

One ledger process (`finmesh serve ledger` on a throwaway PostgreSQL of tests/harness, no TLS,
verifying end-user JWTs with the published keys of the real auth service, which runs in this
process with the user service and issues the benchmark's token to its bootstrap admin) holds
ACCOUNTS funded accounts, each with its own balance. (On SQLite, a call cut by the load generator
at the end of a run could leave the ledger's database locked until its busy timeout, every read
then failing INTERNAL after ~50 s: the benchmark would measure that.)
Four ways to read those balances, in ROUNDS rounds of one ROUND_S-second run each, one after
the other at the same client concurrency, so that all see the same machine:

- grpc: ghz calls LedgerService.GetLedgerBalance on the ledger directly, round-robin over the
  accounts, with the bearer token in metadata;
- gateway: wrk sends GET /v1/admin/ledger/accounts/{id}/balance with the same token to the
  Python gateway (`python -m gateway` under uvicorn, its own process), which verifies the token,
  rate-limits, transcodes and calls the ledger;
- grpc_gateway: the same wrk load to grpc-gateway (Go), generated from the same descriptor set by
  bench/install-tools.sh, as a benchmark peer only; it forwards the token as metadata;
- gateway_public: a second Python gateway with the route configured public, loaded without a
  token: the edge's cost without verifying a JWT, for comparison.

Every REST response is checked by wrk's Lua script: a 200 whose JSON carries an account id of the
benchmark with exactly that account's balance and available amount; anything else is counted as
bad and makes the run fail. ghz counts only OK statuses (calls in flight when its time is up are
cut and not counted) and any other status fails the run; the balances over gRPC are checked
before and after the rounds. The per-user and per-IP rate limits of the gateways are raised for
the benchmark (one user, one IP), otherwise their 429s would be what is measured.

Figures (gateway/...): rest_vs_grpc = verified REST requests per second through the Python
gateway / OK gRPC calls per second, median over rounds (goal >= 0.6); tax_vs_grpc_gateway = CPU
seconds of the Python gateway process per request / those of the grpc-gateway process per
request, both read from /proc over their runs at the same wrk load, median over rounds (goal
<= 3); tax_vs_grpc_gateway_public_route the same with the public-route gateway (recorded). The
detail holds the rates, the CPU per request of each proxy, of the ledger behind it and of the
load generator, and the load average of the machine before and after.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from finmesh.ledger.v1 import ledger_resources_pb2 as resources
from finmesh.ledger.v1 import ledger_service_pb2 as service
from finmesh.ledger.v1 import ledger_service_pb2_grpc as service_grpc

from bench.results import Figure
from svc.kit.client import channel
from tests.harness.identity import Identity, start_identity
from tests.harness.process import free_port, log_tail
from tests.harness.servers import PostgresServer
from tests.ledger.process import REPO, LedgerProcess

ASSET = "ethereum:ETH"
ACCOUNTS = 16
ROUNDS = 3
ROUND_S = 5
CONNECTIONS = 16
WRK_THREADS = 2
# Per wrk thread: a run stops at ROUND_S seconds or after this many responses, whichever is first.
WRK_MAX_RESPONSES = 200_000
TOOL_TIMEOUT_S = ROUND_S + 30
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
RATE_LIMIT = 1_000_000  # per second and burst, per user and per IP, for the benchmark only
BIN = REPO / ".build" / "go" / "bin"
INSTALL_SCRIPT = REPO / "bench" / "install-tools.sh"
DESCRIPTOR_SET = REPO / "gen" / "descriptors" / "finmesh.binpb"
ROUTE = "/v1/admin/ledger/accounts/{}/balance"
GRPC_METHOD = "finmesh.ledger.v1.LedgerService.GetLedgerBalance"

WRK_SCRIPT = """\
local paths = {%(paths)s}
local expected = {%(expected)s}
local limit = %(limit)d
local threads = {}
local counter = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  bad = 0
%(headers)s
end

function request()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1])
end

function response(status, headers, body)
  local account = string.match(body, '"accountId":%%s*"([^"]+)"')
  local balance = string.match(body, '"balance":%%s*"([^"]+)"')
  local available = string.match(body, '"available":%%s*"([^"]+)"')
  if status == 200 and account and expected[account] == balance and balance == available then
    ok = ok + 1
  else
    bad = bad + 1
    if bad == 1 then io.stderr:write("unexpected response ", status, ": ", body, "\\n") end
  end
  if ok + bad >= limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local good, wrong = 0, 0
  for _, thread in ipairs(threads) do
    good = good + thread:get("ok")
    wrong = wrong + thread:get("bad")
  end
  io.write(string.format("VERIFIED ok=%%d bad=%%d seconds=%%f\\n", good, wrong, summary.duration / 1e6))
end
"""


@dataclass(frozen=True)
class Run:
    """One load run: verified answers, seconds, CPU seconds of the proxy and of the ledger."""

    answers: int
    seconds: float
    proxy_cpu_s: float
    ledger_cpu_s: float
    # CPU seconds of the load generator itself (it shares the machine's cores with the servers).
    client_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.answers / self.seconds

    @property
    def proxy_cpu_us(self) -> float:
        return self.proxy_cpu_s / self.answers * 1e6

    @property
    def ledger_cpu_us(self) -> float:
        return self.ledger_cpu_s / self.answers * 1e6

    @property
    def client_cpu_us(self) -> float:
        return self.client_cpu_s / self.answers * 1e6


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def install_tools() -> None:
    """wrk, ghz and the grpc-gateway peer, built pinned into .build/go/bin (idempotent)."""
    subprocess.run(["bash", str(INSTALL_SCRIPT)], cwd=REPO, check=True, timeout=1800)


class Proxy:
    """A REST proxy in its own process (the Python gateway or grpc-gateway) on a free port."""

    def __init__(
        self, name: str, command: list[str], port: int, log: Path, env: dict[str, str], token: str
    ) -> None:
        self.name = name
        self.token = token  # the bearer token its load sends, "" for none
        self.command = command
        self.port = port
        self.log = log
        self.env = env
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, probe_path: str) -> None:
        """Starts the process and waits until it answers a balance read with a 200."""
        with self.log.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                *self.command, cwd=REPO, env=self.env, stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            while True:
                if self.process.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not start:\n{log_tail(self.log)}")
                try:
                    headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
                    answer = await http.get(probe_path, headers=headers)
                    if answer.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return _cpu_seconds(self.process.pid)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after STOP_TIMEOUT_S."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class Bench:
    """The issuer, the ledger with its accounts, the two proxies, and the load runs."""

    def __init__(self, scratch: Path, database_url: str) -> None:
        self.scratch = scratch
        self.keys_file = scratch / "jwt-keys.pem"
        self.token = ""
        self.ledger = LedgerProcess(database_url, scratch)
        self.ledger.environment["FINMESH_JWT_PUBLIC_KEYS_FILE"] = str(self.keys_file)
        self.identity: Identity | None = None
        self.balances: dict[str, str] = {}
        self.proxies: dict[str, Proxy] = {}

    async def start(self) -> None:
        # Auth and user on SQLite: the benchmark's PostgreSQL serves the ledger alone.
        (self.scratch / "identity").mkdir(exist_ok=True)
        self.identity = await start_identity("sqlite", self.scratch / "identity")
        self.token = await self.identity.admin_token()
        self.identity.export_public_keys(self.keys_file)
        await self.ledger.start()
        await self._fund()
        ledger = f"127.0.0.1:{self.ledger.port}"
        endpoints = {"ledger": ledger, "auth": f"127.0.0.1:{self.identity.auth_app.port}"}
        gateway_env = {
            **os.environ,
            "FINMESH_PORT": str(free_port()),
            "FINMESH_TLS": "false",
            "FINMESH_ENDPOINTS": json.dumps(endpoints),
            "FINMESH_PKI_DIR": str(self.scratch / "pki"),
            "FINMESH_DATA_DIR": str(self.scratch / "gateway-data"),
            "FINMESH_USER_RATE_PER_S": str(RATE_LIMIT),
            "FINMESH_USER_BURST": str(RATE_LIMIT),
            "FINMESH_IP_RATE_PER_S": str(RATE_LIMIT),
            "FINMESH_IP_BURST": str(RATE_LIMIT),
        }
        public_env = {
            **gateway_env,
            "FINMESH_PORT": str(free_port()),
            "FINMESH_ROUTES": json.dumps({GRPC_METHOD: {"public": True}}),
        }
        go_port = free_port()
        self.proxies = {
            "gateway": Proxy(
                "the Python gateway",
                [sys.executable, "-m", "gateway"],
                int(gateway_env["FINMESH_PORT"]),
                self.scratch / "gateway.log",
                gateway_env,
                self.token,
            ),
            "gateway_public": Proxy(
                "the Python gateway with the route public",
                [sys.executable, "-m", "gateway"],
                int(public_env["FINMESH_PORT"]),
                self.scratch / "gateway-public.log",
                public_env,
                "",
            ),
            "grpc_gateway": Proxy(
                "grpc-gateway",
                [str(BIN / "finmesh-grpcgateway"), "-listen", f"127.0.0.1:{go_port}", "-ledger", ledger],
                go_port,
                self.scratch / "grpcgateway.log",
                dict(os.environ),
                self.token,
            ),
        }
        probe = ROUTE.format(next(iter(self.balances)))
        for proxy in self.proxies.values():
            await proxy.start(probe)

    async def stop(self) -> None:
        for proxy in self.proxies.values():
            await proxy.stop()
        await self.ledger.stop()
        if self.identity is not None:
            await self.identity.stop()

    async def _fund(self) -> None:
        """ACCOUNTS user accounts, each credited its own amount from one custody account."""
        async with channel(f"127.0.0.1:{self.ledger.port}", identity=None, ca=None) as connection:
            stub = service_grpc.LedgerServiceStub(connection)
            custody = await stub.CreateLedgerAccount(
                service.CreateLedgerAccountRequest(
                    request_id="bench-gateway-custody",
                    account=resources.LedgerAccount(
                        code=f"assets:custody:hot:bench-gateway:{ASSET}",
                        type=resources.ACCOUNT_TYPE_ASSET,
                        asset=ASSET,
                        constraint=resources.BALANCE_CONSTRAINT_NONE,
                    ),
                )
            )
            entries = []
            amounts = {}
            for number in range(ACCOUNTS):
                created = await stub.CreateLedgerAccount(
                    service.CreateLedgerAccountRequest(
                        request_id=f"bench-gateway-user-{number}",
                        account=resources.LedgerAccount(
                            code=f"liabilities:users:g{number}:{ASSET}",
                            type=resources.ACCOUNT_TYPE_LIABILITY,
                            asset=ASSET,
                            constraint=resources.BALANCE_CONSTRAINT_DEBITS_MUST_NOT_EXCEED_CREDITS,
                            owner_user_id=f"g{number}",
                        ),
                    )
                )
                account_id = created.account.account_id
                amounts[account_id] = 10**18 + 7_919 * (number + 1)
                entries.append(
                    resources.JournalEntry(
                        entry_id=f"fund.gateway.{number:03d}",
                        kind=resources.ENTRY_KIND_STANDARD,
                        category="deposit.credit",
                        postings=[
                            resources.Posting(
                                account_id=custody.account.account_id,
                                side=resources.POSTING_SIDE_DEBIT,
                                asset=ASSET,
                                amount=str(amounts[account_id]),
                            ),
                            resources.Posting(
                                account_id=account_id,
                                side=resources.POSTING_SIDE_CREDIT,
                                asset=ASSET,
                                amount=str(amounts[account_id]),
                            ),
                        ],
                    )
                )
            funded = await stub.CreateJournalEntries(
                service.CreateJournalEntriesRequest(request_id="bench-gateway-funding", entries=entries)
            )
            if funded.applied_count != ACCOUNTS:
                raise RuntimeError(f"funding applied {funded.applied_count} of {ACCOUNTS} entries")
        self.balances = {account: str(amount) for account, amount in amounts.items()}
        await self.check_balances()

    async def check_balances(self) -> None:
        """Fails loudly unless every account's balance over gRPC is the amount it was funded with."""
        async with channel(f"127.0.0.1:{self.ledger.port}", identity=None, ca=None) as connection:
            stub = service_grpc.LedgerServiceStub(connection)
            for account, amount in self.balances.items():
                answer = await stub.GetLedgerBalance(
                    service.GetLedgerBalanceRequest(account_id=account),
                    metadata=(("authorization", f"Bearer {self.token}"),),
                )
                if (answer.balance.account_id, answer.balance.balance, answer.balance.available) != (
                    account,
                    amount,
                    amount,
                ):
                    raise RuntimeError(f"the ledger answers {answer.balance} for {account}, funded {amount}")

    async def grpc(self) -> Run:
        """ghz straight to the ledger for ROUND_S seconds; only OK calls count."""
        data = json.dumps([{"account_id": account} for account in self.balances])
        ledger_before = _cpu_seconds(self._ledger_pid())
        done, client_cpu = await _tool(
            str(BIN / "ghz"), "--insecure", "--protoset", str(DESCRIPTOR_SET), "--call", GRPC_METHOD,
            "--data", data, "--metadata", json.dumps({"authorization": f"Bearer {self.token}"}),
            "--concurrency", str(CONNECTIONS), "--connections", str(WRK_THREADS),
            "--duration", f"{ROUND_S}s", "--duration-stop", "ignore", "--timeout", "10s", "--format", "json",
            f"127.0.0.1:{self.ledger.port}",
        )  # fmt: skip
        ledger_cpu = _cpu_seconds(self._ledger_pid()) - ledger_before
        report = json.loads(done)
        statuses = report.get("statusCodeDistribution", {})
        failed = {code: count for code, count in statuses.items() if code != "OK"}
        if failed or report.get("errorDistribution"):
            raise RuntimeError(f"ghz got failures: {failed} {report.get('errorDistribution')}")
        ok = int(statuses.get("OK", 0))
        if ok == 0:
            raise RuntimeError(f"ghz completed no call: {done[:2000]}")
        return Run(ok, report["total"] / 1e9, 0.0, ledger_cpu, client_cpu)

    async def rest(self, name: str) -> Run:
        """wrk through one proxy for ROUND_S seconds; only responses with the expected balance count."""
        proxy = self.proxies[name]
        script = self.scratch / "balances.lua"
        script.write_text(
            WRK_SCRIPT
            % {
                "paths": ", ".join(f'"{ROUTE.format(account)}"' for account in self.balances),
                "expected": ", ".join(
                    f'["{account}"] = "{amount}"' for account, amount in self.balances.items()
                ),
                "limit": WRK_MAX_RESPONSES,
                "headers": f'  wrk.headers["Authorization"] = "Bearer {proxy.token}"' if proxy.token else "",
            }
        )
        proxy_before = proxy.cpu_seconds()
        ledger_before = _cpu_seconds(self._ledger_pid())
        done, client_cpu = await _tool(
            "wrk", "-t", str(WRK_THREADS), "-c", str(CONNECTIONS), "-d", f"{ROUND_S}s",
            "--timeout", "10s", "-s", str(script), proxy.url,
        )  # fmt: skip
        proxy_cpu = proxy.cpu_seconds() - proxy_before
        ledger_cpu = _cpu_seconds(self._ledger_pid()) - ledger_before
        found = re.search(r"VERIFIED ok=(\d+) bad=(\d+) seconds=([0-9.]+)", done)
        if found is None:
            raise RuntimeError(f"wrk printed no verification line:\n{done}")
        ok, bad, seconds = int(found.group(1)), int(found.group(2)), float(found.group(3))
        errors = re.search(r"Socket errors: .*|Non-2xx or 3xx responses: \d+", done)
        if bad or errors or ok == 0:
            raise RuntimeError(
                f"{proxy.name}: {ok} verified answers, {bad} wrong ones:\n{done}\n"
                f"{proxy.name}'s log:\n{log_tail(proxy.log, 10)}\n"
                f"the ledger's log:\n{log_tail(self.ledger.log, 10)}"
            )
        return Run(ok, seconds, proxy_cpu, ledger_cpu, client_cpu)

    def _ledger_pid(self) -> int:
        assert self.ledger.process is not None
        return self.ledger.process.pid


async def _tool(*command: str) -> tuple[str, float]:
    """Runs a load generator, bounded by TOOL_TIMEOUT_S: its output and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), TOOL_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{command[0]} did not finish in {TOOL_TIMEOUT_S} s") from None
    if process.returncode != 0:
        raise RuntimeError(
            f"{command[0]} failed ({process.returncode}):\n{stdout.decode()}\n{stderr.decode()}"
        )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the tool is the only child reaped since
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return stdout.decode() + stderr.decode(), cpu


async def _measure(scratch: Path, database_url: str) -> list[Figure]:
    bench = Bench(scratch, database_url)
    load_before = _load_average()
    try:
        await bench.start()
        runs: dict[str, list[Run]] = {"grpc": [], "gateway": [], "grpc_gateway": [], "gateway_public": []}
        for _ in range(ROUNDS):
            runs["grpc"].append(await bench.grpc())
            for name in ("gateway", "grpc_gateway", "gateway_public"):
                runs[name].append(await bench.rest(name))
        await bench.check_balances()
    finally:
        await bench.stop()
    load_after = _load_average()
    rest_vs_grpc = statistics.median(
        rest.rate / direct.rate for rest, direct in zip(runs["gateway"], runs["grpc"], strict=True)
    )
    tax, tax_public = (
        statistics.median(
            python.proxy_cpu_us / go.proxy_cpu_us
            for python, go in zip(runs[name], runs["grpc_gateway"], strict=True)
        )
        for name in ("gateway", "gateway_public")
    )
    detail = {
        "rounds": ROUNDS,
        "round_s": ROUND_S,
        "connections": CONNECTIONS,
        "accounts": ACCOUNTS,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cores": os.cpu_count(),
        **{f"{name}_rps": [round(run.rate, 1) for run in measured] for name, measured in runs.items()},
        **{
            f"{name}_cpu_us_per_request": [round(run.proxy_cpu_us, 1) for run in runs[name]]
            for name in ("gateway", "grpc_gateway", "gateway_public")
        },
        **{
            f"ledger_cpu_us_per_request_{name}": [round(run.ledger_cpu_us, 1) for run in measured]
            for name, measured in runs.items()
        },
        **{
            f"load_generator_cpu_us_per_request_{name}": [round(run.client_cpu_us, 1) for run in measured]
            for name, measured in runs.items()
        },
    }
    return [
        Figure("gateway", "rest_vs_grpc", rest_vs_grpc, "ratio", ">= 0.6", detail),
        Figure("gateway", "tax_vs_grpc_gateway", tax, "ratio", "<= 3", detail),
        Figure("gateway", "tax_vs_grpc_gateway_public_route", tax_public, "ratio", "", detail),
    ]


def run() -> list[Figure]:
    install_tools()
    server = PostgresServer()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as scratch:
        try:
            server.start()
            database_url = server.create_database(f"gateway_{uuid.uuid4().hex[:8]}")
            return asyncio.run(_measure(Path(scratch), database_url))
        finally:
            server.close()
