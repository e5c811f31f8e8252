"""Sanctions list versions through the contract: a file imported as a STAGED version (every invalid
record named, nothing stored from a refused file), its entries paged and searched, activation by
an approver other than the importer switching screening to the new list at once, discards."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import uuid
from pathlib import Path

import grpc
from finmesh.common.v1 import money_pb2
from finmesh.events.v1 import kyc_events_pb2
from finmesh.kyc.v1 import kyc_resources_pb2 as resources
from finmesh.kyc.v1 import kyc_service_pb2 as service
from google.rpc import error_details_pb2
from sqlalchemy import insert

from svc.kit import migrate, remote
from svc.kit.db import Database
from svc.kyc import store
from svc.kyc.registry import FILE_IMPORTER
from tests.harness.calls import eventually, refused
from tests.kyc.conftest import (
    KYC_MIGRATIONS,
    SANCTIONED_ADDRESS,
    SANCTIONS_HEADER,
    SANCTIONS_ROWS,
    Kyc,
    personal_data,
    request_id,
    start_kyc,
)

INTERNAL, OFAC = 5, 1
CSV, JSON = 1, 2
STAGED, ACTIVE, SUPERSEDED, DISCARDED = 1, 2, 3, 4
ALLOW, DENY = 1, 3
CLEAR_STATUS, POTENTIAL_MATCH = 2, 3
LIST_UPDATE, OPEN = 3, 2
NEW_ADDRESS = "0x1da5821544e25c636c1417Ba96Ade4Cf6D2f9B5A"
NEW_ROWS = (
    "SDN-2002,entity,Tornado Cash,,,,0x722122dF12D4e14e13Ac3b6895a86e84145b6967,CYBER2\n"
    "SDN-3003,person,Kim Yong Chol,Kim Yong-chol,1946,KP,,DPRK3\n"
    f"SDN-4004,person,Ivan Drago,Ivan Drago Jr,1961,RU,{NEW_ADDRESS},RUSSIA-EO14024\n"
)


def new_id() -> str:
    return str(uuid.uuid4())


def importing(
    content: str | bytes, *, source: int = INTERNAL, file_format: int = CSV, **fields: object
) -> service.ImportSanctionsListRequest:
    data = content.encode() if isinstance(content, str) else content
    values: dict[str, object] = {
        "request_id": request_id("import"),
        "source": source,
        "format": file_format,
        "published_date": "2026-11-30",
        "data": data,
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "note": "weekly update",
    }
    values.update(fields)
    return service.ImportSanctionsListRequest(**values)  # type: ignore[arg-type]


async def violations(call: object) -> list[tuple[str, str]]:
    """The (field, description) pairs of an INVALID_ARGUMENT refusal."""
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
        found = error_details_pb2.BadRequest()
        for detail in remote.status_of(error).details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                detail.Unpack(found)
        return [(v.field, v.description) for v in found.field_violations]
    raise AssertionError("the call was not refused")


def screen_address(address: str, user_id: str = "") -> service.ScreenAddressRequest:
    return service.ScreenAddressRequest(
        request_id=request_id("screen"),
        address=money_pb2.ChainAddress(chain="ethereum", address=address),
        user_id=user_id,
        context=7,  # MANUAL
    )


def screen_name(name: str) -> service.ScreenNameRequest:
    return service.ScreenNameRequest(
        request_id=request_id("screen"),
        subject=resources.NameSubject(full_name=name, is_person=True),
        context=7,
    )


async def test_imports_are_validated_paged_searched_and_discarded(kyc: Kyc) -> None:
    operator = kyc.user(new_id(), "operator")
    await refused(
        kyc.stub.ImportSanctionsList(
            importing(SANCTIONS_HEADER + NEW_ROWS), metadata=kyc.user(new_id(), "auditor")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    # Two bad records of three: refused whole, each named by its line.
    broken = (
        SANCTIONS_HEADER
        + "E-1,person,Ann Smith,,,,,P\nE-2,alien,X,,,,,P\nE-3,entity,Bad Address Co,,,,0x12,P\n"
    )
    assert await violations(kyc.stub.ImportSanctionsList(importing(broken), metadata=operator)) == [
        ("data", "line 3: kind 'alien' is not person or entity"),
        ("data", "line 4: address '0x12' is not a 0x EVM address"),
    ]
    bad_json = json.dumps(
        [{"entryId": "J-1", "kind": "SANCTIONS_ENTRY_KIND_PERSON", "name": "Jo"}, {"nope": 1}]
    )
    [(field, description)] = await violations(
        kyc.stub.ImportSanctionsList(importing(bad_json, file_format=JSON), metadata=operator)
    )
    assert field == "data" and description.startswith("item 1: ")
    assert sorted(
        await violations(
            kyc.stub.ImportSanctionsList(
                importing(SANCTIONS_HEADER + NEW_ROWS, published_date="2026-02-30", file_sha256="0" * 64),
                metadata=operator,
            )
        )
    ) == [
        (
            "file_sha256",
            f"the file's SHA-256 is {hashlib.sha256((SANCTIONS_HEADER + NEW_ROWS).encode()).hexdigest()}",
        ),
        ("published_date", "not a calendar date"),
    ]

    # 120 entries and one bad record (under 1 %): STAGED, the bad record a warning.
    rows = "".join(f"E-{n:03},person,Listed Person {n},,,,,P\n" for n in range(120))
    big = importing(SANCTIONS_HEADER + rows + "E-999,person,,,,,,P\n" + NEW_ROWS.splitlines()[2] + "\n")
    imported = await kyc.stub.ImportSanctionsList(big, metadata=operator)
    version = imported.version
    assert list(imported.warnings) == ["line 122: no name"]
    assert (version.state, version.source, version.entry_count, version.address_count) == (
        STAGED,
        INTERNAL,
        121,
        1,
    )
    # Compared with the ACTIVE version from the list file (its three entries, none kept).
    assert (version.added_count, version.removed_count) == (121, 3)
    assert (
        version.published_date == "2026-11-30"
        and version.note == "weekly update"
        and not version.activated_by
    )
    # The same request again is the same version; its key with another file is refused.
    assert await kyc.stub.ImportSanctionsList(big, metadata=operator) == imported
    reused = importing(SANCTIONS_HEADER + NEW_ROWS, request_id=big.request_id)
    await refused(
        kyc.stub.ImportSanctionsList(reused, metadata=operator),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    json_entries = [
        {
            "entryId": "J-1",
            "kind": "SANCTIONS_ENTRY_KIND_ENTITY",
            "name": "Lazarus Group",
            "addresses": [NEW_ADDRESS],
        }
    ]
    from_json = await kyc.stub.ImportSanctionsList(
        importing(json.dumps(json_entries), source=OFAC, file_format=JSON), metadata=operator
    )
    assert (from_json.version.source, from_json.version.entry_count, from_json.version.added_count) == (
        OFAC,
        1,
        1,
    )

    auditor = kyc.user(new_id(), "auditor")
    versions = (
        await kyc.stub.ListSanctionsListVersions(service.ListSanctionsListVersionsRequest(), metadata=auditor)
    ).versions
    assert [(v.version_id, v.state) for v in versions][:2] == [
        (from_json.version.version_id, STAGED),
        (version.version_id, STAGED),
    ]
    assert [v.state for v in versions[2:]] == [ACTIVE]  # the list file's version, recorded at start
    staged = await kyc.stub.ListSanctionsListVersions(
        service.ListSanctionsListVersionsRequest(source=INTERNAL, states=[STAGED]), metadata=auditor
    )
    assert [v.version_id for v in staged.versions] == [version.version_id]
    fetched = await kyc.stub.GetSanctionsListVersion(
        service.GetSanctionsListVersionRequest(version_id=version.version_id), metadata=auditor
    )
    assert fetched.version == version

    # Entries by entry id, page after page.
    seen: list[str] = []
    token = ""
    while True:
        page = await kyc.stub.ListSanctionsEntries(
            service.ListSanctionsEntriesRequest(
                version_id=version.version_id, page_size=50, page_token=token
            ),
            metadata=auditor,
        )
        seen += [entry.entry_id for entry in page.entries]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 121 and seen == sorted(seen) and seen[-1] == "SDN-4004"
    found = await kyc.stub.ListSanctionsEntries(
        service.ListSanctionsEntriesRequest(version_id=version.version_id, query="DRAGO JR"), metadata=auditor
    )
    [drago] = found.entries
    assert (drago.name, list(drago.addresses), list(drago.dates_of_birth)) == (
        "Ivan Drago",
        [NEW_ADDRESS],
        ["1961"],
    )
    by_address = await kyc.stub.ListSanctionsEntries(
        service.ListSanctionsEntriesRequest(version_id=version.version_id, query=NEW_ADDRESS.lower()),
        metadata=auditor,
    )
    assert [entry.entry_id for entry in by_address.entries] == ["SDN-4004"]
    # The percent sign is a character, not a pattern.
    assert not (
        await kyc.stub.ListSanctionsEntries(
            service.ListSanctionsEntriesRequest(version_id=version.version_id, query="%"), metadata=auditor
        )
    ).entries
    await refused(
        kyc.stub.ListSanctionsEntries(
            service.ListSanctionsEntriesRequest(version_id=new_id()), metadata=auditor
        ),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )

    discard = service.DiscardSanctionsListVersionRequest(
        request_id=request_id("discard"), version_id=version.version_id, note="superseded by the OFAC import"
    )
    await refused(
        kyc.stub.DiscardSanctionsListVersion(discard, metadata=auditor),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    discarded = (await kyc.stub.DiscardSanctionsListVersion(discard, metadata=operator)).version
    assert discarded.state == DISCARDED
    again = service.DiscardSanctionsListVersionRequest(
        request_id=request_id("discard"), version_id=version.version_id, note="again"
    )
    info = await refused(
        kyc.stub.DiscardSanctionsListVersion(again, metadata=operator),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
    assert info.metadata["state"] == "DISCARDED"
    # Nothing of the refused files was stored; every import and the discard are events.
    imports = await kyc.events(kyc_events_pb2.SanctionsListVersionImported)
    assert [e.version_id for e in imports][1:] == [version.version_id, from_json.version.version_id]
    assert imports[1].imported_by == imported.version.imported_by and imports[1].added_count == 121
    [event] = await kyc.events(kyc_events_pb2.SanctionsListVersionDiscarded)
    assert (event.version_id, event.source) == (version.version_id, INTERNAL) and event.discarded_by
    # A staged or discarded version changes no screening.
    assert (await kyc.stub.ScreenAddress(screen_address(NEW_ADDRESS))).screening.decision == ALLOW


async def test_activation_by_a_second_person_switches_screening_at_once(kyc_with_auth: Kyc) -> None:
    kyc = kyc_with_auth
    operator_id = new_id()
    operator = kyc.user(operator_id, "operator")
    before_name = await kyc.stub.ScreenName(screen_name("Ivan Drago"))
    assert before_name.screening.state == 1 and not before_name.screening.matches
    file_version = before_name.screening.version_ids[0]
    # A user named like a party only the new list has, and a user who used its address.
    applicant, holder = new_id(), new_id()
    await kyc.apply(applicant, level=3, data=personal_data("Ivan", "Drago"))
    assert (await kyc.stub.ScreenAddress(screen_address(NEW_ADDRESS, holder))).screening.decision == ALLOW
    profile = await kyc.stub.GetKycProfile(service.GetKycProfileRequest(user_id=applicant))
    assert profile.profile.sanctions_status == CLEAR_STATUS
    staged = (
        await kyc.stub.ImportSanctionsList(importing(SANCTIONS_HEADER + NEW_ROWS), metadata=operator)
    ).version
    assert (staged.added_count, staged.removed_count) == (1, 1)  # Ivan Drago in, Vladimir Petrov out
    # Staged: screening still runs against the file's version only.
    assert (await kyc.stub.ScreenAddress(screen_address(NEW_ADDRESS))).screening.decision == ALLOW

    checker = await kyc.checker()
    # The checker's own import is not theirs to activate (refused before a step-up is spent).
    own = (
        await kyc.stub.ImportSanctionsList(importing(SANCTIONS_HEADER + NEW_ROWS), metadata=checker)
    ).version
    info = await refused(
        kyc.stub.ActivateSanctionsListVersion(
            service.ActivateSanctionsListVersionRequest(
                request_id=request_id("activate"), version_id=own.version_id, step_up_token="not spent"
            ),
            metadata=checker,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    assert info.metadata["rule"] == "MAKER_CHECKER"
    await refused(
        kyc.stub.ActivateSanctionsListVersion(
            service.ActivateSanctionsListVersionRequest(
                request_id=request_id("activate"), version_id=staged.version_id, step_up_token="t"
            ),
            metadata=operator,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )

    # Screenings while the version is activated: each matches exactly what its version lists.
    activation = service.ActivateSanctionsListVersionRequest(
        request_id=request_id("activate"), version_id=staged.version_id, step_up_token=await kyc.step_up()
    )
    activating = asyncio.ensure_future(kyc.stub.ActivateSanctionsListVersion(activation, metadata=checker))
    screenings = []
    while not activating.done() or len(screenings) < 8:
        screenings += await asyncio.gather(
            kyc.stub.ScreenAddress(screen_address(SANCTIONED_ADDRESS)),
            kyc.stub.ScreenAddress(screen_address(NEW_ADDRESS)),
        )
    activated = await activating
    lists = {file_version: {SANCTIONED_ADDRESS.lower()}, staged.version_id: {NEW_ADDRESS.lower()}}
    for screened in screenings:
        [used] = screened.screening.version_ids
        assert (screened.screening.decision == DENY) == (screened.screening.address.address in lists[used])
    # Once the activation answered, every screening runs against the new version.
    after = await kyc.stub.ScreenAddress(screen_address(NEW_ADDRESS))
    assert after.screening.decision == DENY and after.screening.version_ids == [staged.version_id]

    assert activated.version.state == ACTIVE and activated.version.activated_by == kyc.checker_id
    assert (
        activated.superseded_version.version_id == file_version
        and activated.superseded_version.state == SUPERSEDED
    )
    # A replay answers the same without spending another step-up.
    assert await kyc.stub.ActivateSanctionsListVersion(activation, metadata=checker) == activated
    after_name = await kyc.stub.ScreenName(screen_name("Ivan Drago"))
    assert after_name.screening.matches[0].entry.entry_id == "SDN-4004"
    assert after_name.screening.matches[0].version_id == staged.version_id
    assert not (await kyc.stub.ScreenName(screen_name("Vladimir Petrov"))).screening.matches

    # The activation re-screens every user's name and every address screened (LIST_UPDATE).
    async def rescreened() -> bool:
        statuses = [
            (
                await kyc.stub.GetKycProfile(service.GetKycProfileRequest(user_id=user))
            ).profile.sanctions_status
            for user in (applicant, holder)
        ]
        return statuses == [POTENTIAL_MATCH, POTENTIAL_MATCH]

    await eventually(rescreened)
    for user, matched in ((applicant, "Ivan Drago"), (holder, NEW_ADDRESS.lower())):
        [case] = (
            await kyc.stub.ListScreenings(
                service.ListScreeningsRequest(user_id=user, context=LIST_UPDATE), metadata=operator
            )
        ).screenings
        assert (case.state, case.reference_id, case.version_ids) == (
            OPEN,
            staged.version_id,
            [staged.version_id],
        )
        assert (case.matches[0].entry.entry_id, case.matches[0].matched_value) == ("SDN-4004", matched)
    # The list file saved again unchanged does not bring its version back.
    kyc.write_sanctions(SANCTIONS_ROWS)
    await asyncio.sleep(0.01)
    assert (await kyc.stub.ScreenAddress(screen_address(NEW_ADDRESS))).screening.version_ids == [
        staged.version_id
    ]

    # Only a STAGED version is activated or discarded.
    await refused(
        kyc.stub.ActivateSanctionsListVersion(
            service.ActivateSanctionsListVersionRequest(
                request_id=request_id("activate"),
                version_id=staged.version_id,
                step_up_token=await kyc.step_up(),
            ),
            metadata=checker,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
    info = await refused(
        kyc.stub.DiscardSanctionsListVersion(
            service.DiscardSanctionsListVersionRequest(
                request_id=request_id("discard"), version_id=staged.version_id, note="wrong file"
            ),
            metadata=operator,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
    assert info.metadata["state"] == "ACTIVE"
    await kyc.stub.DiscardSanctionsListVersion(
        service.DiscardSanctionsListVersionRequest(
            request_id=request_id("discard"), version_id=own.version_id, note="duplicate"
        ),
        metadata=operator,
    )
    states = {
        v.version_id: v.state
        for v in (
            await kyc.stub.ListSanctionsListVersions(
                service.ListSanctionsListVersionsRequest(), metadata=operator
            )
        ).versions
    }
    assert states == {file_version: SUPERSEDED, staged.version_id: ACTIVE, own.version_id: DISCARDED}
    added = await kyc.stub.ListSanctionsEntries(
        service.ListSanctionsEntriesRequest(version_id=staged.version_id, only_added=True), metadata=operator
    )
    assert [entry.entry_id for entry in added.entries] == ["SDN-4004"]
    activations = await kyc.events(kyc_events_pb2.SanctionsListVersionActivated)
    assert [(e.version_id, e.superseded_version_id, e.activated_by) for e in activations][1:] == [
        (staged.version_id, file_version, kyc.checker_id)
    ]


async def test_a_version_recorded_before_entries_were_stored_gets_them_from_the_list_file(
    database_url: str, tmp_path: Path
) -> None:
    """The upgrade to kyc_0002: the list file's ACTIVE version stays in force, its entries stored."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'kyc.db'}" if database_url.startswith("sqlite") else database_url
    first_revision = tmp_path / "kyc_0001"
    first_revision.mkdir()
    shutil.copy(KYC_MIGRATIONS / "kyc_0001_initial.py", first_revision)
    database = Database(url, schema="kyc")
    await migrate.upgrade(database, first_revision)
    version_id = new_id()
    async with database.transaction() as session:
        await session.execute(
            insert(store.sanctions_versions).values(
                version_id=version_id,
                source=INTERNAL,
                state=ACTIVE,
                file_sha256=hashlib.sha256((SANCTIONS_HEADER + SANCTIONS_ROWS).encode()).hexdigest(),
                entry_count=3,
                address_count=2,
                added_count=3,
                removed_count=0,
                entry_ids=["SDN-1001", "SDN-2002", "SDN-3003"],
                imported_by=FILE_IMPORTER,
                note="",
                import_time_us=1,
                activate_time_us=1,
            )
        )
    await database.dispose()
    kyc = await start_kyc(database_url, tmp_path)
    try:
        screened = await kyc.stub.ScreenName(screen_name("Vladimir Petrov"))
        assert screened.screening.version_ids == [version_id] and screened.screening.matches
        staff = kyc.user(new_id(), "auditor")
        entries = await kyc.stub.ListSanctionsEntries(
            service.ListSanctionsEntriesRequest(version_id=version_id), metadata=staff
        )
        assert [entry.entry_id for entry in entries.entries] == ["SDN-1001", "SDN-2002", "SDN-3003"]
        versions = await kyc.stub.ListSanctionsListVersions(
            service.ListSanctionsListVersionsRequest(), metadata=staff
        )
        assert [(v.version_id, v.activated_by) for v in versions.versions] == [(version_id, FILE_IMPORTER)]
    finally:
        await kyc.connection.close()
        await kyc.app.stop(0)
