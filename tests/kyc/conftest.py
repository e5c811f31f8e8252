"""The KYC service served by the kit (no TLS) in this process on each backend, with its sanctions
list file, its document store and its data key under the test's directory, and real ES256 tokens
for applicants and staff."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.auth.v1 import auth_service_pb2 as auth_service
from finmesh.kyc.v1 import kyc_resources_pb2 as resources
from finmesh.kyc.v1 import kyc_service_pb2 as service
from finmesh.kyc.v1 import kyc_service_pb2_grpc as service_grpc
from google.protobuf.message import Message
from sqlalchemy import select

from svc.kit import catalog
from svc.kit.bus import InProcessBus
from svc.kit.client import channel
from svc.kit.server import ServiceApp
from svc.kit.tables import outbox
from svc.kyc import main as kyc_main
from svc.kyc.config import KycSettings
from tests.harness.identity import ADMIN_ID, Identity, bearer, start_identity
from tests.harness.tokens import TokenIssuer

ROOT = Path(__file__).resolve().parents[2]
KYC_MIGRATIONS = ROOT / "svc" / "kyc" / "migrations" / "versions"
SANCTIONS_HEADER = "entry_id,kind,name,aliases,date_of_birth,nationalities,addresses,program\n"
SANCTIONED_ADDRESS = "0x8589427373D6D84E98730D7795D8f6f8731FDA16"
SECOND_ADDRESS = "0x722122dF12D4e14e13Ac3b6895a86e84145b6967"
SANCTIONS_ROWS = (
    "SDN-1001,person,Vladimir Petrov,Volodymyr Petrov;V. Petrov,1970-03-14,RU,,UKRAINE-EO13661\n"
    f"SDN-2002,entity,Tornado Cash,,,,{SANCTIONED_ADDRESS};{SECOND_ADDRESS},CYBER2\n"
    "SDN-3003,person,Kim Yong Chol,Kim Yong-chol,1946,KP,,DPRK3\n"
)
JPEG = b"\xff\xd8\xff\xe0" + b"passport scan of Erika Mustermann " * 20
SELFIE = b"\xff\xd8\xff\xe1" + b"selfie of Erika Mustermann " * 20
PNG = b"\x89PNG\r\n\x1a\n" + b"not really a jpeg"


def request_id(stem: str = "req") -> str:
    return f"{stem}-{uuid.uuid4().hex}"


def personal_data(given: str = "Erika", family: str = "Mustermann", **fields: Any) -> resources.PersonalData:
    values: dict[str, Any] = {
        "given_names": given,
        "family_name": family,
        "date_of_birth": "1984-08-12",
        "nationalities": ["DE"],
        "residential_address": resources.PostalAddress(
            lines=["Heidestrasse 17"], city="Koeln", postal_code="51147", country="DE"
        ),
        "occupation": "Engineer",
    }
    values.update(fields)
    return resources.PersonalData(**values)


def inline(data: bytes, content_type: str = "image/jpeg") -> service.InlineContent:
    return service.InlineContent(
        content_type=content_type, data=data, sha256=hashlib.sha256(data).hexdigest()
    )


@dataclass
class Kyc:
    """A running KYC service, a stub to it and a token issuer."""

    app: ServiceApp
    stub: service_grpc.KycServiceStub
    issuer: TokenIssuer
    sanctions_file: Path
    documents_dir: Path
    connection: grpc.aio.Channel
    # The real auth service, and its bootstrap admin as the checker: a real session, TOTP enabled
    # and one recovery code spent per step-up (a TOTP code is good for one step-up only).
    identity: Identity | None = None
    checker_token: str = ""
    recovery_codes: list[str] = field(default_factory=list)
    checker_id: str = ADMIN_ID

    def user(self, subject: str, *roles: str) -> tuple[tuple[str, str], ...]:
        """Metadata for an end user (or a staff member with `roles`)."""
        return self.issuer.metadata(subject, *roles)

    def write_sanctions(self, rows: str) -> None:
        """Rewrites the operator's list file (a new inode, as an editor's save does)."""
        temporary = self.sanctions_file.with_suffix(".tmp")
        temporary.write_text(SANCTIONS_HEADER + rows)
        temporary.replace(self.sanctions_file)

    async def apply(
        self,
        user: str,
        *,
        level: int = 3,
        data: resources.PersonalData | None = None,
        documents: Sequence[tuple[int, bytes]] = ((1, JPEG), (5, SELFIE)),
    ) -> resources.Submission:
        """Creates a submission for `level` with `data` and `documents` and submits it."""
        who = self.user(user)
        created = await self.stub.CreateSubmission(
            service.CreateSubmissionRequest(
                request_id=request_id("create"),
                target_level=level,
                personal_data=data or personal_data(),  # type: ignore[arg-type]
            ),
            metadata=who,
        )
        submission_id = created.submission.submission_id
        for kind, content in documents:
            await self.stub.UploadDocument(
                service.UploadDocumentRequest(
                    request_id=request_id("upload"),
                    submission_id=submission_id,
                    type=kind,  # type: ignore[arg-type]
                    file_name="scan.jpg",
                    issuing_country="DE",
                    expiry_date="2031-01-31",
                    inline=inline(content),
                ),
                metadata=who,
            )
        submitted = await self.stub.SubmitSubmission(
            service.SubmitSubmissionRequest(
                request_id=request_id("submit"), submission_id=submission_id, attest_truthful=True
            ),
            metadata=who,
        )
        return submitted.submission

    async def review(
        self,
        submission_id: str,
        maker: str,
        decision: int = 1,
        level: int = 3,
        metadata: tuple[tuple[str, str], ...] = (),
        **fields: Any,
    ) -> resources.Submission:
        """The maker's review, as `maker` with the operator role (or with `metadata`)."""
        response = await self.stub.ReviewSubmission(
            service.ReviewSubmissionRequest(
                request_id=request_id("review"),
                submission_id=submission_id,
                decision=decision,  # type: ignore[arg-type]
                approved_level=level if decision == 1 else 0,  # type: ignore[arg-type]
                internal_note="documents and data agree",
                **fields,
            ),
            metadata=metadata or self.user(maker, "operator"),
        )
        return response.submission

    async def checker(self) -> tuple[tuple[str, str], ...]:
        """Metadata of the checker (the auth service's bootstrap admin, a real session)."""
        assert self.identity is not None, "checks need the kyc_with_auth fixture"
        if not self.checker_token:
            self.checker_token = await self.identity.admin_token()
            _, self.recovery_codes = await self.identity.enable_totp(self.checker_token)
        return bearer(self.checker_token)

    async def step_up(self) -> str:
        """A fresh step-up token of the checker for STAFF_APPROVAL."""
        assert self.identity is not None
        who = await self.checker()
        verified = await self.identity.auth.VerifyStepUp(
            auth_service.VerifyStepUpRequest(
                request_id=request_id("step-up"),
                purpose=auth_resources.STEP_UP_PURPOSE_STAFF_APPROVAL,
                recovery_code=self.recovery_codes.pop(),
            ),
            metadata=who,
        )
        return verified.step_up_token

    async def check(
        self, submission: resources.Submission, verdict: int = 1, **fields: Any
    ) -> resources.Submission:
        """The checker's verdict on a reviewed submission, with a fresh step-up token."""
        values: dict[str, Any] = {
            "request_id": request_id("check"),
            "submission_id": submission.submission_id,
            "verdict": verdict,
            "expected_version": submission.version,
        }
        values.update(fields)
        if "step_up_token" not in values:
            values["step_up_token"] = await self.step_up()
        response = await self.stub.CheckReview(
            service.CheckReviewRequest(**values), metadata=await self.checker()
        )
        return response.submission

    async def events(self, event_type: type[Message]) -> list[Any]:
        """Every event of a type in the service's outbox, oldest first."""
        async with self.app.database.transaction() as session:
            rows = await session.execute(
                select(outbox.c.payload)
                .where(outbox.c.event_type == event_type.DESCRIPTOR.full_name)
                .order_by(outbox.c.id)
            )
            return [event_type.FromString(row.payload) for row in rows]


async def start_kyc(
    database_url: str,
    tmp_path: Path,
    *,
    sanctions: bool = True,
    identity: Identity | None = None,
    **extra_settings: Any,
) -> Kyc:
    """The KYC service; with `identity`, it redeems step-up tokens at that auth service and
    accepts its tokens as well as the test issuer's. `extra_settings` are further KycSettings."""
    issuer = TokenIssuer(tmp_path / "jwt")
    endpoints = {}
    if identity is not None:
        auth_keys = tmp_path / "auth-keys.pem"
        identity.export_public_keys(auth_keys)
        issuer.public_key_file.write_bytes(issuer.public_key_file.read_bytes() + auth_keys.read_bytes())
        endpoints["auth"] = f"127.0.0.1:{identity.auth_app.port}"
        endpoints["user"] = f"127.0.0.1:{identity.user_app.port}"
    sanctions_file = tmp_path / "sanctions" / "list.csv"
    sanctions_file.parent.mkdir(parents=True)
    if sanctions:
        sanctions_file.write_text(SANCTIONS_HEADER + SANCTIONS_ROWS)
    settings = KycSettings(
        port=0,
        tls=False,
        pki_dir=tmp_path / "pki",
        data_dir=tmp_path / "data",
        database_url=_database(database_url, tmp_path),
        endpoints=endpoints,
        jwt_public_keys_file=issuer.public_key_file,
        sanctions_list_file=sanctions_file,
        sanctions_reload_interval_s=0.05,
        **extra_settings,
    )
    services = catalog.default()
    app = ServiceApp(services.service("kyc"), settings, catalog=services, bus=InProcessBus())
    kyc_main.build(app)
    try:
        await app.start(migrations=KYC_MIGRATIONS, migrate_database=True)
    except BaseException:
        await app.stop(0)
        raise
    connection = channel(f"127.0.0.1:{app.port}")
    return Kyc(
        app,
        service_grpc.KycServiceStub(connection),
        issuer,
        sanctions_file,
        settings.documents_path,
        connection,
        identity,
    )


def _database(database_url: str, tmp_path: Path) -> str:
    if database_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp_path / 'kyc.db'}"
    return database_url


async def _stop(kyc: Kyc) -> None:
    await kyc.connection.close()
    await kyc.app.stop(0)
    if kyc.identity is not None:
        await kyc.identity.stop()


@pytest.fixture
async def kyc(database_url: str, tmp_path: Path) -> AsyncIterator[Kyc]:
    """The KYC service on a fresh database of each backend, with the test sanctions list."""
    running = await start_kyc(database_url, tmp_path)
    yield running
    await _stop(running)


@pytest.fixture
async def kyc_with_auth(database_url: str, tmp_path: Path) -> AsyncIterator[Kyc]:
    """The KYC service with the real user and auth services, for checks that need a step-up."""
    identity = await start_identity(database_url, tmp_path)
    try:
        running = await start_kyc(database_url, tmp_path, identity=identity)
    except BaseException:
        await identity.stop()
        raise
    yield running
    await _stop(running)
