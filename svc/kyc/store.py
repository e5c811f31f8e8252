"""The KYC service's tables and queries (SQLAlchemy Core).

Schema (migrations/versions/kyc_0001_initial.py, kyc_0002_sanctions_list_versions.py):
- kyc_profiles: one row per user who has KYC data: level, sanctions status, latest AML rating.
- kyc_submissions: applications; personal data only as a sealed blob (AES-256-GCM). `open_user_id`
  is the user id while the submission is not terminal and NULL after, under a UNIQUE constraint:
  the database itself keeps a user to one open application.
- kyc_documents: document metadata; the sealed content is in the object store under `object_key`.
- kyc_screenings: every name and address screening and its case; a screened name is sealed.
- kyc_sanctions_versions: every imported sanctions list version (from the list file or through
  ImportSanctionsList) and its state; at most one ACTIVE per source (kyc_0002).
- kyc_sanctions_entries: the entries of each version (proto3 JSON), with the lower-case text of
  their names, aliases and addresses that ListSanctionsEntries searches.
- kyc_risk_assessments: every AML assessment.
Times are microseconds since the epoch (BIGINT).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    exists,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

metadata = MetaData()

profiles = Table(
    "kyc_profiles",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("level", SmallInteger, nullable=False),
    Column("level_grant_time_us", BigInteger, nullable=True),
    Column("sanctions_status", SmallInteger, nullable=False),
    Column("sanctions_screening_id", String(36), nullable=False),
    Column("risk_assessment_id", String(36), nullable=False),
    Column("country_of_residence", String(2), nullable=False),
    Column("politically_exposed", Boolean, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
)

submissions = Table(
    "kyc_submissions",
    metadata,
    Column("submission_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False, index=True),
    Column("open_user_id", String(64), nullable=True, unique=True),
    Column("target_level", SmallInteger, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("personal_data", LargeBinary, nullable=False),
    Column("reviewer_id", String(128), nullable=False),
    Column("review_decision", SmallInteger, nullable=False),
    Column("approved_level", SmallInteger, nullable=False),
    Column("review_reasons", JSON, nullable=False),
    Column("message_to_user", String(2000), nullable=False),
    Column("internal_note", String(4000), nullable=False),
    Column("review_time_us", BigInteger, nullable=True),
    Column("checker_id", String(128), nullable=False),
    Column("check_verdict", SmallInteger, nullable=False),
    Column("check_note", String(4000), nullable=False),
    Column("check_time_us", BigInteger, nullable=True),
    Column("resubmissions", Integer, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("submit_time_us", BigInteger, nullable=True),
    Column("decide_time_us", BigInteger, nullable=True),
    Column("update_time_us", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
)

documents = Table(
    "kyc_documents",
    metadata,
    Column("document_id", String(36), primary_key=True),
    Column("submission_id", String(36), nullable=False, index=True),
    Column("user_id", String(64), nullable=False),
    Column("type", SmallInteger, nullable=False),
    Column("side", SmallInteger, nullable=False),
    Column("content_type", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("issuing_country", String(2), nullable=False),
    Column("expiry_date", String(10), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("rejection_reason", SmallInteger, nullable=False),
    Column("object_key", String(512), nullable=False),
    Column("upload_time_us", BigInteger, nullable=False),
)

screenings = Table(
    "kyc_screenings",
    metadata,
    Column("screening_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("subject_kind", String(8), nullable=False),
    Column("sealed_name", LargeBinary, nullable=True),
    Column("chain", String(32), nullable=False),
    Column("address", String(42), nullable=False),
    Column("context", SmallInteger, nullable=False),
    Column("reference_id", String(128), nullable=False),
    Column("decision", SmallInteger, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("matches", JSON, nullable=False),
    Column("threshold", String(8), nullable=False),
    Column("version_ids", JSON, nullable=False),
    Column("proposed_resolution", SmallInteger, nullable=False),
    Column("proposed_by", String(128), nullable=False),
    Column("proposal_note", String(4000), nullable=False),
    Column("checker_id", String(128), nullable=False),
    Column("check_verdict", SmallInteger, nullable=False),
    Column("check_note", String(4000), nullable=False),
    Column("check_time_us", BigInteger, nullable=True),
    Column("screen_time_us", BigInteger, nullable=False),
    Column("resolve_time_us", BigInteger, nullable=True),
    Column("version", BigInteger, nullable=False),
)

sanctions_versions = Table(
    "kyc_sanctions_versions",
    metadata,
    Column("version_id", String(36), primary_key=True),
    Column("source", SmallInteger, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("file_sha256", String(64), nullable=False),
    Column("entry_count", Integer, nullable=False),
    Column("address_count", Integer, nullable=False),
    Column("added_count", Integer, nullable=False),
    Column("removed_count", Integer, nullable=False),
    Column("entry_ids", JSON, nullable=False),
    Column("imported_by", String(128), nullable=False),
    Column("note", String(2000), nullable=False),
    Column("import_time_us", BigInteger, nullable=False),
    Column("activate_time_us", BigInteger, nullable=True),
    Column("published_date", String(10), nullable=False),
    Column("activated_by", String(128), nullable=False),
    # The ACTIVE version of the source when this one was imported, then when it was activated:
    # what `added_count`, `removed_count` and `only_added` compare with.
    Column("previous_version_id", String(36), nullable=False),
    Column("discarded_by", String(128), nullable=False),
    Column("discard_note", String(2000), nullable=False),
    Column("discard_time_us", BigInteger, nullable=True),
)

sanctions_entries = Table(
    "kyc_sanctions_entries",
    metadata,
    Column("version_id", String(36), primary_key=True),
    Column("entry_id", String(128), primary_key=True),
    Column("entry", JSON, nullable=False),
    Column("search_text", Text, nullable=False),
)

risk_assessments = Table(
    "kyc_risk_assessments",
    metadata,
    Column("assessment_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("rating", SmallInteger, nullable=False),
    Column("score", Integer, nullable=False),
    Column("factors", JSON, nullable=False),
    Column("method", SmallInteger, nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("assess_time_us", BigInteger, nullable=False),
    Column("next_review_time_us", BigInteger, nullable=False),
)


@dataclass
class Profile:
    user_id: str
    level: int = 1
    level_grant_time_us: int | None = None
    sanctions_status: int = 1
    sanctions_screening_id: str = ""
    risk_assessment_id: str = ""
    country_of_residence: str = ""
    politically_exposed: bool = False
    version: int = 0
    update_time_us: int = 0


@dataclass
class Submission:
    submission_id: str
    user_id: str
    target_level: int
    state: int
    personal_data: bytes
    create_time_us: int
    update_time_us: int
    open_user_id: str | None = None
    reviewer_id: str = ""
    review_decision: int = 0
    approved_level: int = 0
    review_reasons: list[int] = field(default_factory=list)
    message_to_user: str = ""
    internal_note: str = ""
    review_time_us: int | None = None
    checker_id: str = ""
    check_verdict: int = 0
    check_note: str = ""
    check_time_us: int | None = None
    resubmissions: int = 0
    submit_time_us: int | None = None
    decide_time_us: int | None = None
    version: int = 1


@dataclass
class Document:
    document_id: str
    submission_id: str
    user_id: str
    type: int
    side: int
    content_type: str
    size_bytes: int
    sha256: str
    file_name: str
    issuing_country: str
    expiry_date: str
    state: int
    rejection_reason: int
    object_key: str
    upload_time_us: int


@dataclass
class Screening:
    screening_id: str
    user_id: str
    subject_kind: str  # "name" or "address"
    sealed_name: bytes | None
    chain: str
    address: str
    context: int
    reference_id: str
    decision: int
    state: int
    matches: list[dict[str, Any]]
    threshold: str
    version_ids: list[str]
    screen_time_us: int
    proposed_resolution: int = 0
    proposed_by: str = ""
    proposal_note: str = ""
    checker_id: str = ""
    check_verdict: int = 0
    check_note: str = ""
    check_time_us: int | None = None
    resolve_time_us: int | None = None
    version: int = 1


@dataclass
class SanctionsVersion:
    version_id: str
    source: int
    state: int
    file_sha256: str
    entry_count: int
    address_count: int
    added_count: int
    removed_count: int
    entry_ids: list[str]
    imported_by: str
    note: str
    import_time_us: int
    activate_time_us: int | None = None
    published_date: str = ""
    activated_by: str = ""
    previous_version_id: str = ""
    discarded_by: str = ""
    discard_note: str = ""
    discard_time_us: int | None = None


@dataclass
class StoredEntry:
    entry_id: str
    entry: dict[str, Any]  # proto3 JSON of a finmesh.kyc.v1.SanctionsEntry


@dataclass
class Assessment:
    assessment_id: str
    user_id: str
    rating: int
    score: int
    factors: list[dict[str, Any]]
    method: int
    model_version: str
    assess_time_us: int
    next_review_time_us: int


def _after(time_column: Any, id_column: Any, after: tuple[int, str] | None, *, descending: bool) -> Any:
    """The keyset condition "after this (time, id) position" of a listing in that order."""
    if after is None:
        return true()
    time_us, record_id = after
    if descending:
        return or_(time_column < time_us, and_(time_column == time_us, id_column < record_id))
    return or_(time_column > time_us, and_(time_column == time_us, id_column > record_id))


def _values(record: Any) -> dict[str, Any]:
    return asdict(record)


def _of(kind: type[Any], row: Any) -> Any:
    names = {item.name for item in fields(kind)}
    return kind(**{key: value for key, value in row._mapping.items() if key in names})


# -- profiles ----------------------------------------------------------------------------------


async def profile(session: AsyncSession, user_id: str, *, lock: bool = False) -> Profile | None:
    query = select(profiles).where(profiles.c.user_id == user_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _of(Profile, row) if row is not None else None


async def profiles_by_id(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, Profile]:
    rows = await session.execute(select(profiles).where(profiles.c.user_id.in_(list(user_ids))))
    return {row.user_id: _of(Profile, row) for row in rows}


async def save_profile(session: AsyncSession, record: Profile) -> None:
    """Inserts a new profile (version 0 -> 1) or writes a changed one (version + 1)."""
    record.version += 1
    if record.version == 1:
        await session.execute(insert(profiles).values(**_values(record)))
        return
    result = await session.execute(
        update(profiles)
        .where(profiles.c.user_id == record.user_id, profiles.c.version == record.version - 1)
        .values(**_values(record))
    )
    assert getattr(result, "rowcount", 1) == 1, "profile changed under its row lock"


async def profile_user_ids(session: AsyncSession) -> list[str]:
    rows = await session.execute(select(profiles.c.user_id).order_by(profiles.c.user_id))
    return [row.user_id for row in rows]


# -- submissions -------------------------------------------------------------------------------


async def insert_submission(session: AsyncSession, record: Submission) -> None:
    """Adds a submission; a second open one of the same user raises IntegrityError."""
    await session.execute(insert(submissions).values(**_values(record)))


async def update_submission(session: AsyncSession, record: Submission) -> None:
    """Writes a changed submission: version + 1, guarded by the version read."""
    record.version += 1
    result = await session.execute(
        update(submissions)
        .where(
            submissions.c.submission_id == record.submission_id, submissions.c.version == record.version - 1
        )
        .values(**_values(record))
    )
    assert getattr(result, "rowcount", 1) == 1, "submission changed under its row lock"


async def submission(session: AsyncSession, submission_id: str, *, lock: bool = False) -> Submission | None:
    query = select(submissions).where(submissions.c.submission_id == submission_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _of(Submission, row) if row is not None else None


async def list_submissions(
    session: AsyncSession,
    *,
    limit: int,
    user_id: str = "",
    states: Sequence[int] = (),
    target_level: int = 0,
    reviewer_id: str = "",
    exclude_reviewer: str = "",
    newest_first: bool = True,
    after: tuple[int, str] | None = None,
) -> list[Submission]:
    """Submissions by (create time, id), newest or oldest first, after a page position."""
    query = select(submissions)
    if user_id:
        query = query.where(submissions.c.user_id == user_id)
    if states:
        query = query.where(submissions.c.state.in_(list(states)))
    if target_level:
        query = query.where(submissions.c.target_level == target_level)
    if reviewer_id:
        query = query.where(submissions.c.reviewer_id == reviewer_id)
    if exclude_reviewer:
        query = query.where(submissions.c.reviewer_id != exclude_reviewer)
    key = (submissions.c.create_time_us, submissions.c.submission_id)
    query = query.where(_after(*key, after, descending=newest_first))
    order = (key[0].desc(), key[1].desc()) if newest_first else (key[0].asc(), key[1].asc())
    rows = await session.execute(query.order_by(*order).limit(limit))
    return [_of(Submission, row) for row in rows]


# -- documents ---------------------------------------------------------------------------------


async def insert_document(session: AsyncSession, record: Document) -> None:
    await session.execute(insert(documents).values(**_values(record)))


async def update_document(session: AsyncSession, record: Document) -> None:
    await session.execute(
        update(documents).where(documents.c.document_id == record.document_id).values(**_values(record))
    )


async def document(session: AsyncSession, document_id: str) -> Document | None:
    row = (await session.execute(select(documents).where(documents.c.document_id == document_id))).first()
    return _of(Document, row) if row is not None else None


async def documents_of(session: AsyncSession, submission_ids: Sequence[str]) -> dict[str, list[Document]]:
    """The documents (not DELETED) of each submission, oldest first."""
    rows = await session.execute(
        select(documents)
        .where(documents.c.submission_id.in_(list(submission_ids)), documents.c.state != 4)
        .order_by(documents.c.upload_time_us, documents.c.document_id)
    )
    found: dict[str, list[Document]] = {submission_id: [] for submission_id in submission_ids}
    for row in rows:
        found[row.submission_id].append(_of(Document, row))
    return found


# -- screenings --------------------------------------------------------------------------------


async def insert_screening(session: AsyncSession, record: Screening) -> None:
    await session.execute(insert(screenings).values(**_values(record)))


async def update_screening(session: AsyncSession, record: Screening) -> None:
    record.version += 1
    result = await session.execute(
        update(screenings)
        .where(screenings.c.screening_id == record.screening_id, screenings.c.version == record.version - 1)
        .values(**_values(record))
    )
    assert getattr(result, "rowcount", 1) == 1, "screening changed under its row lock"


async def screening(session: AsyncSession, screening_id: str, *, lock: bool = False) -> Screening | None:
    query = select(screenings).where(screenings.c.screening_id == screening_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _of(Screening, row) if row is not None else None


async def list_screenings(
    session: AsyncSession,
    *,
    limit: int,
    user_id: str = "",
    states: Sequence[int] = (),
    context: int = 0,
    address: str = "",
    reference_id: str = "",
    exclude_proposer: str = "",
    from_us: int | None = None,
    to_us: int | None = None,
    after: tuple[int, str] | None = None,
) -> list[Screening]:
    """Screenings newest first, after a page position."""
    query = select(screenings)
    if user_id:
        query = query.where(screenings.c.user_id == user_id)
    if states:
        query = query.where(screenings.c.state.in_(list(states)))
    if context:
        query = query.where(screenings.c.context == context)
    if address:
        query = query.where(screenings.c.address == address.lower())
    if reference_id:
        query = query.where(screenings.c.reference_id == reference_id)
    if exclude_proposer:
        query = query.where(screenings.c.proposed_by != exclude_proposer)
    if from_us is not None:
        query = query.where(screenings.c.screen_time_us >= from_us)
    if to_us is not None:
        query = query.where(screenings.c.screen_time_us < to_us)
    query = query.where(
        _after(screenings.c.screen_time_us, screenings.c.screening_id, after, descending=True)
    )
    rows = await session.execute(
        query.order_by(screenings.c.screen_time_us.desc(), screenings.c.screening_id.desc()).limit(limit)
    )
    return [_of(Screening, row) for row in rows]


async def screened_addresses(session: AsyncSession, since_us: int) -> list[tuple[str, str, str]]:
    """(chain, address, user id) of every address screening since a time, each once."""
    rows = await session.execute(
        select(screenings.c.chain, screenings.c.address, screenings.c.user_id)
        .where(screenings.c.subject_kind == "address", screenings.c.screen_time_us >= since_us)
        .distinct()
        .order_by(screenings.c.chain, screenings.c.address, screenings.c.user_id)
    )
    return [(row.chain, row.address, row.user_id) for row in rows]


async def open_screening_count(session: AsyncSession, user_id: str) -> int:
    """Screenings of a user whose case is OPEN or RESOLUTION_PROPOSED."""
    count = await session.scalar(
        select(func.count())
        .select_from(screenings)
        .where(screenings.c.user_id == user_id, screenings.c.state.in_([2, 3]))
    )
    return int(count or 0)


# -- sanctions list versions -------------------------------------------------------------------


async def active_version(
    session: AsyncSession, source: int, *, lock: bool = False
) -> SanctionsVersion | None:
    query = select(sanctions_versions).where(
        sanctions_versions.c.source == source, sanctions_versions.c.state == 2
    )
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _of(SanctionsVersion, row) if row is not None else None


async def active_version_ids(session: AsyncSession) -> dict[str, int]:
    """The ACTIVE version of every source: version id -> source."""
    rows = await session.execute(
        select(sanctions_versions.c.version_id, sanctions_versions.c.source).where(
            sanctions_versions.c.state == 2
        )
    )
    return {row.version_id: row.source for row in rows}


async def latest_version_by(session: AsyncSession, source: int, imported_by: str) -> SanctionsVersion | None:
    """The newest version of a source that `imported_by` imported."""
    row = (
        await session.execute(
            select(sanctions_versions)
            .where(sanctions_versions.c.source == source, sanctions_versions.c.imported_by == imported_by)
            .order_by(sanctions_versions.c.import_time_us.desc(), sanctions_versions.c.version_id.desc())
            .limit(1)
        )
    ).first()
    return _of(SanctionsVersion, row) if row is not None else None


async def insert_version(session: AsyncSession, record: SanctionsVersion) -> None:
    await session.execute(insert(sanctions_versions).values(**_values(record)))


async def update_version(session: AsyncSession, record: SanctionsVersion) -> None:
    await session.execute(
        update(sanctions_versions)
        .where(sanctions_versions.c.version_id == record.version_id)
        .values(**_values(record))
    )


async def version(session: AsyncSession, version_id: str, *, lock: bool = False) -> SanctionsVersion | None:
    query = select(sanctions_versions).where(sanctions_versions.c.version_id == version_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _of(SanctionsVersion, row) if row is not None else None


async def insert_entries(session: AsyncSession, version_id: str, entries: Sequence[dict[str, Any]]) -> None:
    """Adds the entries of a version: each {"entry_id", "entry" (proto3 JSON), "search_text"}."""
    if entries:
        await session.execute(
            insert(sanctions_entries), [{"version_id": version_id, **values} for values in entries]
        )


async def entries_of(session: AsyncSession, version_id: str) -> list[dict[str, Any]]:
    """Every entry of a version (proto3 JSON), by entry id."""
    rows = await session.execute(
        select(sanctions_entries.c.entry)
        .where(sanctions_entries.c.version_id == version_id)
        .order_by(sanctions_entries.c.entry_id)
    )
    return [row.entry for row in rows]


async def list_entries(
    session: AsyncSession,
    version_id: str,
    *,
    limit: int,
    query: str = "",
    not_in_version: str = "",
    after: str | None = None,
) -> list[StoredEntry]:
    """Entries of a version by entry id after a page position: those whose text contains
    `query` (lower case), and with `not_in_version` only those that version does not list."""
    statement = select(sanctions_entries.c.entry_id, sanctions_entries.c.entry).where(
        sanctions_entries.c.version_id == version_id
    )
    if query:
        statement = statement.where(sanctions_entries.c.search_text.contains(query, autoescape=True))
    if not_in_version:
        previous = sanctions_entries.alias("previous")
        statement = statement.where(
            ~exists().where(
                previous.c.version_id == not_in_version, previous.c.entry_id == sanctions_entries.c.entry_id
            )
        )
    if after is not None:
        statement = statement.where(sanctions_entries.c.entry_id > after)
    rows = await session.execute(statement.order_by(sanctions_entries.c.entry_id).limit(limit))
    return [StoredEntry(row.entry_id, row.entry) for row in rows]


async def list_versions(
    session: AsyncSession,
    *,
    limit: int,
    source: int = 0,
    states: Sequence[int] = (),
    after: tuple[int, str] | None,
) -> list[SanctionsVersion]:
    query = select(sanctions_versions)
    if source:
        query = query.where(sanctions_versions.c.source == source)
    if states:
        query = query.where(sanctions_versions.c.state.in_(list(states)))
    query = query.where(
        _after(sanctions_versions.c.import_time_us, sanctions_versions.c.version_id, after, descending=True)
    )
    rows = await session.execute(
        query.order_by(
            sanctions_versions.c.import_time_us.desc(), sanctions_versions.c.version_id.desc()
        ).limit(limit)
    )
    return [_of(SanctionsVersion, row) for row in rows]


# -- risk assessments --------------------------------------------------------------------------


async def insert_assessment(session: AsyncSession, record: Assessment) -> None:
    await session.execute(insert(risk_assessments).values(**_values(record)))


async def assessment(session: AsyncSession, assessment_id: str) -> Assessment | None:
    row = (
        await session.execute(
            select(risk_assessments).where(risk_assessments.c.assessment_id == assessment_id)
        )
    ).first()
    return _of(Assessment, row) if row is not None else None


async def list_assessments(
    session: AsyncSession, user_id: str, *, limit: int, after: tuple[int, str] | None
) -> list[Assessment]:
    query = select(risk_assessments).where(risk_assessments.c.user_id == user_id)
    query = query.where(
        _after(risk_assessments.c.assess_time_us, risk_assessments.c.assessment_id, after, descending=True)
    )
    rows = await session.execute(
        query.order_by(
            risk_assessments.c.assess_time_us.desc(), risk_assessments.c.assessment_id.desc()
        ).limit(limit)
    )
    return [_of(Assessment, row) for row in rows]
