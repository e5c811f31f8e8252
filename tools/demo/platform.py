"""Bringing up the custodial-wallet platform from nothing, through its REST edge only.

A fresh deployment has three chicken-and-egg steps, and this module walks through them with the
platform's own mechanisms, each a launch of the mesh under the same var directory (so the same
local CA) and the same databases:

1. identity: the auth service makes its signing key on first start; the other services verify
   end-user tokens against a PEM file of its public keys (FINMESH_JWT_PUBLIC_KEYS_FILE), read at
   start. With auth, user and the gateway up, the JWKS is fetched and written as that file, and
   the staff are set up: two bootstrap admins (FINMESH_BOOTSTRAP_ADMIN_USER_IDS, user ids known
   upfront because the user service derives them from the registration's request id) enable
   TOTP, and grant the approver role to two more users through maker-checker (one admin
   proposes, the other approves with a step-up).
2. custody: with the verification keys configured, an admin creates the deposit root (the
   extended key deposit addresses derive from) and the hot wallet paying withdrawals.
3. the whole profile, with the hot wallet's id in the withdraw service's settings
   (FINMESH_WITHDRAW__HOT_WALLETS: scoped to that service by the launcher).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from svc.auth import keys
from tools.demo.edge import Edge, EdgeError, Person, rid
from tools.demo.mesh import MeshProcess

IDENTITY_SERVICES = ("auth", "user", "notification", "gateway")
CUSTODY_SERVICES = ("auth", "user", "notification", "chain-gateway", "custody", "gateway")
STAFF_DOMAIN = "staff.finmesh.example"
Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class Staff:
    """The platform's staff: two bootstrap admins (maker and checker), two approvers and an
    operator (who runs sweeps)."""

    admin: Person
    checker: Person
    approvers: list[Person]
    operator: Person

    @property
    def everyone(self) -> list[Person]:
        return [self.admin, self.checker, *self.approvers, self.operator]

    def use(self, edge: Edge) -> None:
        for person in self.everyone:
            person.edge = edge


def new_staff(edge: Edge) -> Staff:
    def person(name: str) -> Person:
        return Person(edge, f"{name}@{STAFF_DOMAIN}", registration_id=rid(f"register-{name}"))

    return Staff(
        person("admin"), person("checker"), [person("approver-1"), person("approver-2")], person("operator")
    )


def identity_environment(staff: Staff) -> dict[str, str]:
    """The auth service's bootstrap admins: the ids the admins' registrations will create."""
    return {
        "FINMESH_AUTH__BOOTSTRAP_ADMIN_USER_IDS": json.dumps([staff.admin.user_id, staff.checker.user_id])
    }


def export_public_keys(edge: Edge, path: Path) -> int:
    """Writes the auth service's published keys (GET /v1/auth/jwks) as the PEM file services
    verify end-user tokens with; the number of keys."""
    published = edge.get("/v1/auth/jwks")["keys"]
    path.write_bytes(b"".join(keys.public_pem({k: str(v) for k, v in jwk.items()}) for jwk in published))
    return len(published)


def grant_role(staff: Staff, grantee: Person, role: str, justification: str) -> dict[str, Any]:
    """Maker-checker: the admin proposes `role` for `grantee`, the checker approves with a step-up."""
    proposed = staff.admin.post(
        "/v1/admin/auth/role_assignments",
        {"requestId": rid("role"), "userId": grantee.user_id, "role": role, "justification": justification},
    )["roleAssignment"]
    approved: dict[str, Any] = staff.checker.post(
        f"/v1/admin/auth/role_assignments/{proposed['roleAssignmentId']}:approve",
        {
            "requestId": rid("role-approve"),
            "note": "checked",
            "stepUpToken": staff.checker.step_up("STEP_UP_PURPOSE_STAFF_APPROVAL"),
        },
    )["roleAssignment"]
    return approved


def set_up_staff(staff: Staff, say: Say = _quiet) -> None:
    """Registers the staff, enables their TOTP and grants the approvers their role."""
    for person in staff.everyone:
        person.register(person.email.split("@")[0])
        person.login()
        person.enable_totp()
        say(f"staff member {person.email} registered with TOTP (user {person.user_id})")
    staff.admin.login()
    staff.checker.login()
    for approver in staff.approvers:
        grant_role(staff, approver, "ROLE_APPROVER", "withdrawal approvals")
        say(f"{approver.email} holds ROLE_APPROVER (proposed by the admin, approved by the checker)")
    grant_role(staff, staff.operator, "ROLE_OPERATOR", "deposit sweeps")
    say(f"{staff.operator.email} holds ROLE_OPERATOR (proposed by the admin, approved by the checker)")


@dataclass
class CustodyWallets:
    deposit_root_id: str
    hot_wallet_id: str
    hot_wallet_address: str


def create_custody_wallets(admin: Person, chains: Sequence[str]) -> CustodyWallets:
    """The deposit root and one hot wallet for `chains`, created by an admin with a step-up."""

    def create(name: str, kind: str) -> dict[str, Any]:
        wallet: dict[str, Any] = admin.post(
            "/v1/admin/custody/wallets",
            {
                "requestId": rid("custody-wallet"),
                "name": name,
                "kind": kind,
                "chainFamily": "CHAIN_FAMILY_EVM",
                "chains": list(chains),
                "stepUpToken": admin.step_up("STEP_UP_PURPOSE_STAFF_APPROVAL"),
            },
        )["wallet"]
        return wallet

    root = create("deposit-root", "WALLET_KIND_DEPOSIT_ROOT")
    hot = create("hot", "WALLET_KIND_HOT")
    return CustodyWallets(root["walletId"], hot["walletId"], hot["address"])


@dataclass
class Platform:
    """The running custodial-wallet profile, its edge and its staff."""

    mesh: MeshProcess
    edge: Edge
    staff: Staff
    custody: CustodyWallets
    environment: dict[str, str] = field(default_factory=dict)

    def stop(self) -> int | None:
        self.edge.close()
        return self.mesh.stop()


def bring_up(
    var_dir: Path,
    environment: Mapping[str, str],
    chains: Sequence[str],
    withdraw_environment: Callable[[CustodyWallets], Mapping[str, str]],
    *,
    say: Say = _quiet,
) -> Platform:
    """Runs the three launches of the module docstring; returns the whole profile running."""
    env = dict(environment)
    placeholder = Edge("http://127.0.0.1:1")
    staff = new_staff(placeholder)
    placeholder.close()
    env.update(identity_environment(staff))

    def launch(only: Sequence[str], what: str) -> tuple[MeshProcess, Edge]:
        say(f"starting {what} ({', '.join(only) if only else 'every service of the profile'})")
        mesh = MeshProcess(var_dir, only=only, environment=env).start()
        edge = Edge(mesh.gateway_url)
        staff.use(edge)
        say(f"{what}: {len(mesh.endpoints)} processes SERVING, the REST edge on {mesh.gateway_url}")
        return mesh, edge

    mesh, edge = launch(IDENTITY_SERVICES, "identity")
    try:
        pem = var_dir / "jwt-public-keys.pem"
        count = export_public_keys(edge, pem)
        say(f"auth's {count} published signing key(s) exported for the other services ({pem.name})")
        set_up_staff(staff, say)
    finally:
        edge.close()
        mesh.stop()
    env["FINMESH_JWT_PUBLIC_KEYS_FILE"] = str(pem.resolve())

    mesh, edge = launch(CUSTODY_SERVICES, "custody")
    try:
        staff.admin.login()
        custody = create_custody_wallets(staff.admin, chains)
        say(f"custody: deposit root {custody.deposit_root_id}, hot wallet {custody.hot_wallet_address}")
    finally:
        edge.close()
        mesh.stop()
    env.update(withdraw_environment(custody))

    mesh, edge = launch((), "the custodial-wallet profile")
    for person in staff.everyone:
        person.access_token = ""
    return Platform(mesh, edge, staff, custody, env)


# Custody's approval purposes (finmesh.custody.v1.ApprovalPurpose): WITHDRAWAL for the withdraw
# service; DEPOSIT_SWEEP and GAS_TOP_UP for the deposit service's sweeps.
ISSUER_PURPOSES = {"withdraw": [1], "deposit": [2, 3]}


def approval_key_environment(keys_by_issuer: Mapping[str, tuple[str, Ed25519PrivateKey]]) -> dict[str, str]:
    """Each issuing service's approval-signing key (issuer -> (key id, key)), and custody
    trusting each for its purposes only."""
    issuers: dict[str, Any] = {}
    environment: dict[str, str] = {}
    for issuer, (key_id, key) in keys_by_issuer.items():
        public_key = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        private_key = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        issuers[key_id] = {
            "issuer": issuer,
            "public_key": base64.b64encode(public_key).decode(),
            "purposes": ISSUER_PURPOSES[issuer],
        }
        prefix = f"FINMESH_{issuer.upper()}__"
        environment[prefix + "APPROVAL_KEY_ID"] = key_id
        environment[prefix + "APPROVAL_PRIVATE_KEY"] = base64.b64encode(private_key).decode()
    return {"FINMESH_CUSTODY__APPROVAL_ISSUERS": json.dumps(issuers), **environment}


def withdrawal_policy(unit: int, fee: int, auto_approval_below: int) -> dict[str, Any]:
    """An asset's withdrawal policy: a flat fee, L0 limits of 10,000 units a withdrawal, approvers
    from `auto_approval_below`, and the built-in review rules far above what the flow moves."""
    return {
        "fee": fee,
        "limits": {"1": {"max_amount": 10_000 * unit, "daily_limit": 20_000 * unit}},
        "auto_approval_threshold": auto_approval_below,
        "review_amount": 100_000 * unit,
        "daily_review_amount": 200_000 * unit,
        "new_address_review_amount": 100_000 * unit,
    }


def hot_wallet_environment(chains: Sequence[str]) -> Callable[[CustodyWallets], dict[str, str]]:
    """The hot wallet once custody has made it, one for every chain: what withdrawals pay from
    (FINMESH_WITHDRAW__HOT_WALLETS) and what sweeps pay to (FINMESH_DEPOSIT__HOT_WALLETS)."""

    def environment(custody: CustodyWallets) -> dict[str, str]:
        hot_wallets = json.dumps(dict.fromkeys(chains, custody.hot_wallet_id))
        return {"FINMESH_WITHDRAW__HOT_WALLETS": hot_wallets, "FINMESH_DEPOSIT__HOT_WALLETS": hot_wallets}

    return environment


def ledger_holdings(staff_member: Person, code: str) -> int:
    """Debits less credits posted on the ledger account `code` (what an asset account holds, the
    negative of what a liability or revenue account is owed); 0 when it was never opened."""
    try:
        account = staff_member.get("/v1/admin/ledger/accounts:lookup", params={"code": code})["account"]
    except EdgeError as missing:
        if missing.status == 404:
            return 0
        raise
    balance = staff_member.get(f"/v1/admin/ledger/accounts/{account['accountId']}/balance")["balance"]
    return int(balance.get("debitsPosted", "0")) - int(balance.get("creditsPosted", "0"))
