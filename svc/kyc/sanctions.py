"""Sanctions lists: parsing a list file, fuzzy name matching, exact address matching, and the list
file the operator updates in place, reloaded when it changes.

Name matching normalises both names (Unicode decomposition with the accents dropped, case
folded, punctuation to spaces), splits them into tokens and pairs each token of one name with its
most similar unused token of the other by Jaro-Winkler similarity. The score is the average over
the shorter token list times (shorter / longer length) ** 0.25: word order does not matter
("SMITH John" = "John Smith"), a missing middle name costs little (2 of 3 tokens: 0.90) and a lone
given name that happens to match stays below the default threshold (1 of 2 tokens: 0.84).
Addresses match exactly, case-insensitively, on every EVM chain.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from finmesh.kyc.v1 import kyc_resources_pb2 as resources
from google.protobuf import json_format

log = logging.getLogger(__name__)

CSV_COLUMNS = (
    "entry_id",
    "kind",
    "name",
    "aliases",
    "date_of_birth",
    "nationalities",
    "addresses",
    "program",
)
ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
COUNTRY = re.compile(r"^[A-Z]{2}$")
DATE = re.compile(r"^[0-9]{4}(-[0-9]{2}-[0-9]{2})?$")
# An import with more invalid records than this share is refused as a whole (the contract's 1 %).
INVALID_SHARE_MAX = 0.01
WARNINGS_MAX = 100
ENTRY_ID_MAX = 128
LIST_BYTES_MAX = 64 * 1024 * 1024
ENTRY_KINDS = {"person": 1, "entity": 2}
JARO_WINKLER_PREFIX_MAX = 4
JARO_WINKLER_SCALE = 0.1
LENGTH_PENALTY_EXPONENT = 0.25
SCORE_PLACES = 4


class SanctionsListError(ValueError):
    """A list file cannot be used: unreadable, or too many invalid records (`problems`: each
    invalid record as "line N: why" or "item N: why", the first WARNINGS_MAX)."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems[:WARNINGS_MAX])


@dataclass(frozen=True)
class Entry:
    """One listed party, with its names normalised once at load."""

    entry: resources.SanctionsEntry
    names: tuple[tuple[str, tuple[str, ...]], ...]  # (original name, normalised tokens)


@dataclass(frozen=True)
class SanctionsList:
    """One loaded version of a list: its entries indexed for screening."""

    source: int
    sha256: str
    entries: tuple[Entry, ...]
    by_address: dict[str, tuple[Entry, ...]]
    warnings: tuple[str, ...] = ()

    @property
    def address_count(self) -> int:
        return len(self.by_address)

    @property
    def entry_ids(self) -> frozenset[str]:
        return frozenset(entry.entry.entry_id for entry in self.entries)


@dataclass(frozen=True)
class Match:
    entry: resources.SanctionsEntry
    matched_value: str
    score: float
    corroborating_fields: tuple[str, ...] = field(default_factory=tuple)


# -- normalisation and similarity --------------------------------------------------------------


def normalise(name: str) -> tuple[str, ...]:
    """Tokens of a name: accents dropped, case folded, anything but letters and digits a separator."""
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    return tuple(token for token in re.split(r"[^0-9a-zß]+|ß", stripped.replace("ß", "ss")) if token)


def jaro_winkler(left: str, right: str) -> float:
    """Jaro-Winkler similarity of two strings, 0 (nothing alike) to 1 (equal)."""
    if left == right:
        return 1.0
    if not left or not right:
        return 0.0
    window = max(0, max(len(left), len(right)) // 2 - 1)
    left_matched = [False] * len(left)
    right_matched = [False] * len(right)
    matches = 0
    for i, ch in enumerate(left):
        for j in range(max(0, i - window), min(len(right), i + window + 1)):
            if not right_matched[j] and right[j] == ch:
                left_matched[i] = right_matched[j] = True
                matches += 1
                break
    if matches == 0:
        return 0.0
    left_chars = [ch for ch, hit in zip(left, left_matched, strict=True) if hit]
    right_chars = [ch for ch, hit in zip(right, right_matched, strict=True) if hit]
    transpositions = sum(a != b for a, b in zip(left_chars, right_chars, strict=True)) / 2
    jaro = (matches / len(left) + matches / len(right) + (matches - transpositions) / matches) / 3
    prefix = 0
    for a, b in zip(left[:JARO_WINKLER_PREFIX_MAX], right[:JARO_WINKLER_PREFIX_MAX], strict=False):
        if a != b:
            break
        prefix += 1
    return jaro + prefix * JARO_WINKLER_SCALE * (1 - jaro)


def name_similarity(left: Sequence[str], right: Sequence[str]) -> float:
    """Similarity of two token lists (see the module doc), 0 to 1."""
    if not left or not right:
        return 0.0
    shorter, longer = (left, right) if len(left) <= len(right) else (right, left)
    pairs = sorted(
        ((jaro_winkler(a, b), i, j) for i, a in enumerate(shorter) for j, b in enumerate(longer)),
        reverse=True,
    )
    used_short: set[int] = set()
    used_long: set[int] = set()
    total = 0.0
    for score, i, j in pairs:
        if i in used_short or j in used_long:
            continue
        used_short.add(i)
        used_long.add(j)
        total += score
        if len(used_short) == len(shorter):
            break
    return float(total / len(shorter) * (len(shorter) / len(longer)) ** LENGTH_PENALTY_EXPONENT)


def score_text(score: float) -> str:
    """A score as the contract's decimal string with up to 4 places (`1` for 1.0)."""
    text = f"{score:.{SCORE_PLACES}f}".rstrip("0").rstrip(".")
    return text or "0"


# -- screening ---------------------------------------------------------------------------------


def screen_name(
    lists: Sequence[SanctionsList],
    full_name: str,
    threshold: float,
    *,
    date_of_birth: str = "",
    nationalities: Sequence[str] = (),
) -> list[Match]:
    """Entries of every list whose name or an alias scores at least `threshold`, best first."""
    tokens = normalise(full_name)
    found: list[Match] = []
    for listed in lists:
        for entry in listed.entries:
            best_score, best_name = 0.0, ""
            for original, entry_tokens in entry.names:
                score = name_similarity(tokens, entry_tokens)
                if score > best_score:
                    best_score, best_name = score, original
            if best_score + 1e-9 < threshold:
                continue
            corroborating = []
            if date_of_birth and any(
                date_of_birth.startswith(listed_date) for listed_date in entry.entry.dates_of_birth
            ):
                corroborating.append("date_of_birth")
            if set(nationalities) & set(entry.entry.nationalities):
                corroborating.append("nationality")
            found.append(Match(entry.entry, best_name, round(best_score, SCORE_PLACES), tuple(corroborating)))
    found.sort(key=lambda match: (-match.score, match.entry.entry_id))
    return found


def screen_address(lists: Sequence[SanctionsList], address: str) -> list[Match]:
    """Entries of every list naming `address` (any chain, any case)."""
    key = address.lower()
    return [Match(entry.entry, address, 1.0) for listed in lists for entry in listed.by_address.get(key, ())]


# -- parsing -----------------------------------------------------------------------------------


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(";") if part.strip()]


def _entry_from_row(row: Sequence[str]) -> resources.SanctionsEntry:
    if len(row) != len(CSV_COLUMNS):
        raise ValueError(f"{len(row)} columns, expected {len(CSV_COLUMNS)}")
    entry_id, kind, name, aliases, dates, nationalities, addresses, program = (cell.strip() for cell in row)
    if kind.lower() not in ENTRY_KINDS:
        raise ValueError(f"kind {kind!r} is not person or entity")
    return resources.SanctionsEntry(
        entry_id=entry_id,
        kind=ENTRY_KINDS[kind.lower()],  # type: ignore[arg-type]
        name=name,
        aliases=_split(aliases),
        dates_of_birth=_split(dates),
        nationalities=_split(nationalities),
        addresses=_split(addresses),
        program=program,
    )


def _check(entry: resources.SanctionsEntry) -> None:
    if not entry.entry_id:
        raise ValueError("no entry_id")
    if len(entry.entry_id) > ENTRY_ID_MAX:
        raise ValueError(f"entry_id longer than {ENTRY_ID_MAX} characters")
    if not normalise(entry.name):
        raise ValueError("no name")
    for address in entry.addresses:
        if not ADDRESS.match(address):
            raise ValueError(f"address {address!r} is not a 0x EVM address")
    for country in entry.nationalities:
        if not COUNTRY.match(country):
            raise ValueError(f"nationality {country!r} is not ISO 3166-1 alpha-2")
    for date in entry.dates_of_birth:
        if not DATE.match(date):
            raise ValueError(f"date of birth {date!r} is not YYYY or YYYY-MM-DD")


def _raw_entries(data: bytes, json_layout: bool) -> list[tuple[str, resources.SanctionsEntry | str]]:
    """(where, entry or the error) for every record of the file."""
    records: list[tuple[str, resources.SanctionsEntry | str]] = []
    if json_layout:
        try:
            items = json.loads(data)
        except ValueError as error:
            raise SanctionsListError(f"not JSON: {error}") from None
        if not isinstance(items, list):
            raise SanctionsListError("a JSON list file is an array of entries")
        for index, item in enumerate(items):
            try:
                records.append((f"item {index}", json_format.ParseDict(item, resources.SanctionsEntry())))
            except (json_format.ParseError, TypeError, AttributeError) as error:
                records.append((f"item {index}", str(error)))
        return records
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SanctionsListError("a CSV list file is UTF-8") from None
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or (number == 1 and row[0].strip() == CSV_COLUMNS[0]):
            continue
        try:
            records.append((f"line {number}", _entry_from_row(row)))
        except ValueError as error:
            records.append((f"line {number}", str(error)))
    return records


def parse(data: bytes, *, source: int, json_layout: bool = False) -> SanctionsList:
    """A list from file content (the contract's CSV or JSON layout); SanctionsListError if more
    than 1 % of its records are invalid. Invalid records are left out and named in `warnings`."""
    entries: list[resources.SanctionsEntry] = []
    warnings: list[str] = []
    seen: set[str] = set()
    records = _raw_entries(data, json_layout)
    for where, record in records:
        if isinstance(record, str):
            warnings.append(f"{where}: {record}")
            continue
        try:
            _check(record)
            if record.entry_id in seen:
                raise ValueError(f"entry_id {record.entry_id!r} repeated")
        except ValueError as error:
            warnings.append(f"{where}: {error}")
            continue
        seen.add(record.entry_id)
        entries.append(record)
    if records and len(warnings) > INVALID_SHARE_MAX * len(records):
        raise SanctionsListError(
            f"{len(warnings)} of {len(records)} records are invalid (at most 1 %): "
            + "; ".join(warnings[:5]),
            warnings,
        )
    if not entries:
        raise SanctionsListError("the file has no entries")
    return index(entries, source=source, sha256=hashlib.sha256(data).hexdigest(), warnings=warnings)


def index(
    entries: Sequence[resources.SanctionsEntry], *, source: int, sha256: str, warnings: Sequence[str] = ()
) -> SanctionsList:
    """A list of checked entries (from a file, or as stored), indexed for screening."""
    indexed = [
        Entry(
            record,
            tuple((name, normalise(name)) for name in (record.name, *record.aliases) if normalise(name)),
        )
        for record in entries
    ]
    by_address: dict[str, list[Entry]] = {}
    for entry in indexed:
        for address in entry.entry.addresses:
            by_address.setdefault(address.lower(), []).append(entry)
    return SanctionsList(
        source=source,
        sha256=sha256,
        entries=tuple(indexed),
        by_address={address: tuple(listed) for address, listed in by_address.items()},
        warnings=tuple(warnings[:WARNINGS_MAX]),
    )


class SanctionsListFile:
    """The list file the operator maintains; `current()` reloads it when it changed on disk.

    The change check is one stat() (modification time, size, inode), cheap enough for every
    screening. A file that does not parse keeps the previous list in force, logged as an error:
    screening never silently runs against less than the last good list.
    """

    def __init__(self, path: Path | None, *, source: int) -> None:
        self.path = path
        self.source = source
        self._stamp: tuple[int, int, int] | None = None
        self._list: SanctionsList | None = None
        self.last_error = ""

    def current(self) -> SanctionsList | None:
        """The list in force (reloaded if the file changed); None if no good file was ever read."""
        if self.path is None:
            return None
        try:
            status = os.stat(self.path)
        except OSError as error:
            self.last_error = f"cannot read {self.path}: {error.strerror}"
            return self._list
        stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
        if stamp == self._stamp:
            return self._list
        self._stamp = stamp
        try:
            if status.st_size > LIST_BYTES_MAX:
                raise SanctionsListError(f"{status.st_size} bytes, at most {LIST_BYTES_MAX}")
            data = self.path.read_bytes()
            loaded = parse(data, source=self.source, json_layout=self.path.suffix.lower() == ".json")
        except (OSError, SanctionsListError) as error:
            self.last_error = f"{self.path}: {error}"
            log.error("sanctions list not reloaded, the previous one stays in force: %s", self.last_error)
            return self._list
        if self._list is None or loaded.sha256 != self._list.sha256:
            log.info(
                "sanctions list loaded",
                extra={
                    "fields": {
                        "path": str(self.path),
                        "entries": len(loaded.entries),
                        "sha256": loaded.sha256,
                    }
                },
            )
        self._list = loaded
        self.last_error = ""
        return loaded
