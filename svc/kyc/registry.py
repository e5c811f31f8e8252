"""The sanctions lists in force: the ACTIVE version of each source in the database, held in
memory for screening.

Versions come from two places. Operators import a file through ImportSanctionsList as a STAGED
version and a second staff member activates it (ActivateSanctionsListVersion). The list file of
the deployment (FINMESH_SANCTIONS_LIST_FILE) is the other: a watcher looks at it every few
seconds, and every screening looks again first; a content (by SHA-256) the file did not have last
time becomes a new ACTIVE version of its source, the previous one SUPERSEDED (whoever may write
the file is trusted as both maker and checker). A file unchanged since its last version is left
alone, so a restart does not undo an activation made through the contract.

Before every screening the registry reads which versions are ACTIVE (one small query): a version
activated by another replica is loaded on the next screening. A new set of lists is built
completely and then replaces the previous one in a single assignment, so a screening runs either
against the old lists or against the new ones, never against a list half loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from finmesh.kyc.v1 import kyc_resources_pb2 as resources
from google.protobuf import json_format
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit import errors
from svc.kit.db import Database
from svc.kyc import events, store
from svc.kyc.sanctions import SanctionsList, SanctionsListFile, index

log = logging.getLogger(__name__)

STATE_STAGED = 1
STATE_ACTIVE = 2
STATE_SUPERSEDED = 3
STATE_DISCARDED = 4
FILE_IMPORTER = "sanctions-list-file"


class SanctionsListUnavailable(errors.DomainError):
    """No sanctions list is ACTIVE: screening against nothing would report CLEAR falsely."""

    code = errors.DependencyUnavailable.code
    reason = "SANCTIONS_LIST_UNAVAILABLE"


@dataclass(frozen=True)
class ActiveList:
    listed: SanctionsList
    version_id: str


def entry_rows(listed: SanctionsList) -> list[dict[str, object]]:
    """The stored form of a list's entries (store.insert_entries)."""
    return [
        {
            "entry_id": entry.entry.entry_id,
            "entry": json_format.MessageToDict(entry.entry),
            "search_text": "\n".join(
                [entry.entry.name, *entry.entry.aliases, *entry.entry.addresses]
            ).casefold(),
        }
        for entry in listed.entries
    ]


def compared(listed: SanctionsList, previous: store.SanctionsVersion | None) -> tuple[int, int]:
    """(added, removed) entries of a list compared with a version."""
    before = frozenset(previous.entry_ids) if previous is not None else frozenset()
    return len(listed.entry_ids - before), len(before - listed.entry_ids)


async def supersede_active(
    session: AsyncSession, source: int, replacement: store.SanctionsVersion
) -> store.SanctionsVersion | None:
    """Makes the ACTIVE version of a source SUPERSEDED ahead of `replacement` (saved by the
    caller after this); returns it, None for a source's first version."""
    current = await store.active_version(session, source, lock=True)
    if current is not None:
        current.state = STATE_SUPERSEDED
        await store.update_version(session, current)
    replacement.previous_version_id = current.version_id if current is not None else ""
    return current


class SanctionsRegistry:
    """The ACTIVE versions, loaded; `active()` before every screening."""

    def __init__(
        self, database: Database, listed_file: SanctionsListFile, *, reload_interval_s: float
    ) -> None:
        self.database = database
        self.file = listed_file
        self.reload_interval_s = reload_interval_s
        self._lists: tuple[ActiveList, ...] = ()
        self._file_list: SanctionsList | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def active(self) -> tuple[ActiveList, ...]:
        """The list of every source in force, by source; SANCTIONS_LIST_UNAVAILABLE without any."""
        await self._follow_file()
        async with self.database.transaction() as session:
            wanted = await store.active_version_ids(session)
        lists = self._lists
        if {item.version_id for item in lists} != set(wanted):
            lists = await self._load(wanted)
        if not lists:
            raise SanctionsListUnavailable(
                "no sanctions list version is ACTIVE"
                + (f": {self.file.last_error}" if self.file.last_error else ""),
                metadata={"path": str(self.file.path or "")},
            )
        return lists

    async def reload(self) -> None:
        """Loads the ACTIVE versions now (after an activation) rather than on the next screening;
        a failure is left to that screening to report."""
        try:
            async with self.database.transaction() as session:
                wanted = await store.active_version_ids(session)
            await self._load(wanted)
        except Exception as error:
            log.warning("sanctions lists not reloaded after an activation: %r", error)

    async def _load(self, wanted: dict[str, int]) -> tuple[ActiveList, ...]:
        async with self._lock:
            known = {item.version_id: item for item in self._lists}
            if set(known) == set(wanted):
                return self._lists
            loaded = []
            for version_id, source in sorted(wanted.items(), key=lambda item: item[1]):
                loaded.append(known.get(version_id) or await self._read(version_id, source))
            self._lists = tuple(loaded)
            log.info(
                "sanctions lists in force",
                extra={"fields": {"versions": [item.version_id for item in loaded]}},
            )
            return self._lists

    async def active_in(self, session: AsyncSession) -> tuple[ActiveList, ...]:
        """The ACTIVE lists as `session` sees them, read through it (for work in a transaction
        that already holds the database, such as an event handler's)."""
        known = {item.version_id: item for item in self._lists}
        wanted = await store.active_version_ids(session)
        return tuple(
            [
                known.get(version_id) or await self._read_in(session, version_id, source)
                for version_id, source in sorted(wanted.items(), key=lambda item: item[1])
            ]
        )

    async def _read(self, version_id: str, source: int) -> ActiveList:
        async with self.database.transaction() as session:
            return await self._read_in(session, version_id, source)

    async def _read_in(self, session: AsyncSession, version_id: str, source: int) -> ActiveList:
        record = await store.version(session, version_id)
        stored = await store.entries_of(session, version_id)
        assert record is not None, version_id
        if len(stored) != record.entry_count:
            raise SanctionsListUnavailable(
                f"sanctions list version {version_id} has {len(stored)} of its {record.entry_count} "
                "entries stored",
                metadata={"version_id": version_id},
            )
        entries = [json_format.ParseDict(values, resources.SanctionsEntry()) for values in stored]
        return ActiveList(index(entries, source=source, sha256=record.file_sha256), version_id)

    async def _follow_file(self) -> None:
        listed = self.file.current()
        if listed is None or listed is self._file_list:
            return
        async with self._lock:
            if listed is not self._file_list:
                await self._record_file(listed)
                self._file_list = listed

    async def _record_file(self, listed: SanctionsList) -> None:
        """A file content new since the file's last version becomes an ACTIVE version."""
        async with self.database.transaction() as session:
            latest = await store.latest_version_by(session, listed.source, FILE_IMPORTER)
            if latest is not None and latest.file_sha256 == listed.sha256:
                await self._backfill(session, latest, listed)
                return
            now_us = time.time_ns() // 1000
            version = store.SanctionsVersion(
                version_id=str(uuid.uuid4()),
                source=listed.source,
                state=STATE_ACTIVE,
                file_sha256=listed.sha256,
                entry_count=len(listed.entries),
                address_count=listed.address_count,
                added_count=0,
                removed_count=0,
                entry_ids=sorted(listed.entry_ids),
                imported_by=FILE_IMPORTER,
                activated_by=FILE_IMPORTER,
                note=f"{len(listed.warnings)} invalid records left out" if listed.warnings else "",
                import_time_us=now_us,
                activate_time_us=now_us,
            )
            superseded = await supersede_active(session, listed.source, version)
            version.added_count, version.removed_count = compared(listed, superseded)
            await store.insert_version(session, version)
            await store.insert_entries(session, version.version_id, entry_rows(listed))
            await events.list_imported(session, version)
            await events.list_activated(session, version, superseded)
        log.info(
            "sanctions list file recorded as the ACTIVE version",
            extra={"fields": {"version_id": version.version_id, "entries": version.entry_count}},
        )

    async def _backfill(
        self, session: AsyncSession, version: store.SanctionsVersion, listed: SanctionsList
    ) -> None:
        # Versions recorded before entries were stored (kyc_0002) get theirs from the file.
        if version.entry_count and not await store.entries_of(session, version.version_id):
            await store.insert_entries(session, version.version_id, entry_rows(listed))

    async def start(self) -> None:
        """Watches the file and the ACTIVE versions in the background, so a new version is loaded
        without waiting for a screening; the file's content is recorded before the service serves."""
        await self._refresh()
        self._task = asyncio.create_task(self._watch(), name="kyc-sanctions-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _refresh(self) -> None:
        try:
            await self.active()
        except SanctionsListUnavailable:
            pass
        except Exception as error:  # the next round retries; screening reports its own errors
            log.warning("sanctions list watch failed: %r", error)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.reload_interval_s)
            await self._refresh()


def version_ids(lists: Sequence[ActiveList]) -> list[str]:
    return [item.version_id for item in lists]
