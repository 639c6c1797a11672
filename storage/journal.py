"""Journal entries and the call object that 1C reads (DESIGN section 5).

A :class:`JournalEntry` is one row of the journal: the finished call from the assembler, the
recordings found for it, and the verdict of the rules. :func:`to_call_object` renders it as
the JSON object that ``GET /calls``, ``/changes`` and ``pbxjournal replay --json`` all share,
with times in the PBX's time zone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from connector.assembly import Direction, FinishedCall
from connector.recordings import FoundRecording
from storage.rules import Status

__all__ = [
    "CustomerRef",
    "EmployeeDirectory",
    "EmployeeInfo",
    "JournalEntry",
    "LocalTimes",
    "StoredRecording",
    "format_time",
    "to_call_detail",
    "to_call_object",
]


@dataclass(frozen=True, slots=True)
class EmployeeInfo:
    id: str
    extension: str
    name: str
    #: External numbers (mobiles) as configured.
    mobile: tuple[str, ...] = ()


class EmployeeDirectory:
    """Extension → employee; an extension nobody configured is still shown, by number."""

    def __init__(self, employees: Iterable[EmployeeInfo] = ()) -> None:
        self._by_extension: dict[str, EmployeeInfo] = {e.extension: e for e in employees}

    def __len__(self) -> int:
        return len(self._by_extension)

    def get(self, extension: str) -> EmployeeInfo:
        found = self._by_extension.get(extension)
        return found if found is not None else EmployeeInfo(extension, extension, "")

    def extensions(self) -> list[str]:
        return list(self._by_extension)


@dataclass(frozen=True, slots=True)
class CustomerRef:
    id: str
    name: str
    contact_id: str | None = None
    contact_name: str | None = None


@dataclass(frozen=True, slots=True)
class StoredRecording:
    id: int
    found: FoundRecording


@dataclass(slots=True)
class JournalEntry:
    id: int
    version: int
    pbx: str
    call: FinishedCall
    number: str | None
    number_raw: str | None
    status: Status
    attention: bool
    first_contact: bool
    #: The number was bound to a customer when the call ended (drives the status).
    registered_at_end: bool
    window_closes_at: float | None
    settled: bool
    recordings: tuple[StoredRecording, ...] = ()
    customer: CustomerRef | None = None
    comment: str | None = None


def format_time(epoch: float | None, timezone: ZoneInfo) -> str | None:
    """ISO 8601 with milliseconds and the PBX's UTC offset, e.g. ``...T06:23:11.192+03:00``."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone).isoformat(timespec="milliseconds")


# Minutes, seconds and milliseconds as text: formatting an int with a width in an f-string
# costs ten times a lookup.
_MINUTES = tuple(f"{n:02d}:" for n in range(60))
_SECONDS = tuple(f"{n:02d}." for n in range(60))
_MILLISECONDS = tuple(f"{n:03d}" for n in range(1000))
_LOCAL_EPOCH = datetime(1970, 1, 1)


class LocalTimes:
    """:func:`format_time` for the many times of one answer (a page of ``/changes`` has
    1,500), the same strings at a third of the cost.

    ``datetime.fromtimestamp(...).isoformat()`` spends most of its time on the time zone:
    finding the offset and formatting it. The times of a page fall in few hours, so the
    offset is kept per UTC hour (with its text) and the local ``YYYY-MM-DDTHH:`` per local
    hour; the rest is arithmetic. The seconds are taken from the epoch exactly as
    ``fromtimestamp`` does (``modf``, the microseconds rounded half to even, carrying into
    the second) and the milliseconds truncated as ``isoformat`` does. An hour whose offset
    changes within it (a DST transition not on the hour) or is not whole minutes (local
    mean time before 1920 in some zones) is not kept: those times go through
    :func:`format_time` itself (``tests/test_storage_journal.py`` compares the two on
    every zone's transitions)."""

    __slots__ = ("_local_hours", "_offsets", "_timezone")

    #: Hours kept, at most (one instance serves one answer; this only bounds a misuse).
    MAX_HOURS = 10_000

    def __init__(self, timezone: ZoneInfo) -> None:
        self._timezone = timezone
        #: UTC hour → the offset in seconds and as ``isoformat`` writes it (None: not kept).
        self._offsets: dict[int, tuple[int, str] | None] = {}
        #: Local hour (hours since 1970-01-01 00:00 local) → ``YYYY-MM-DDTHH:``.
        self._local_hours: dict[int, str] = {}

    def __call__(self, epoch: float | None) -> str | None:
        if epoch is None:
            return None
        fraction, whole = math.modf(epoch)
        micro = round(fraction * 1e6)
        if micro >= 1_000_000:
            micro -= 1_000_000
            whole += 1.0
        elif micro < 0:
            micro += 1_000_000
            whole -= 1.0
        second = int(whole)
        hour = second // 3600
        try:
            known = self._offsets[hour]
        except KeyError:
            known = self._offset(hour)
        if known is None:
            return format_time(epoch, self._timezone)
        offset, offset_text = known
        local_hour, rest = divmod(second + offset, 3600)
        try:
            prefix = self._local_hours[local_hour]
        except KeyError:
            prefix = (_LOCAL_EPOCH + timedelta(hours=local_hour)).isoformat()[:14]
            self._local_hours[local_hour] = prefix
        minutes, seconds = divmod(rest, 60)
        return (
            f"{prefix}{_MINUTES[minutes]}{_SECONDS[seconds]}"
            f"{_MILLISECONDS[micro // 1000]}{offset_text}"
        )

    def _offset(self, hour: int) -> tuple[int, str] | None:
        start = datetime.fromtimestamp(hour * 3600, self._timezone)
        offset = start.utcoffset()
        end = datetime.fromtimestamp(hour * 3600 + 3599, self._timezone).utcoffset()
        known: tuple[int, str] | None = None
        if offset is not None and offset == end and offset.total_seconds() % 60 == 0:
            text = start.isoformat(timespec="milliseconds")  # ...T10:00:00.000+03:00
            known = (int(offset.total_seconds()), text[23:])
        if len(self._offsets) >= self.MAX_HOURS:
            self._offsets.clear()
            self._local_hours.clear()
        self._offsets[hour] = known
        return known


def to_call_object(
    entry: JournalEntry, timezone: ZoneInfo, employees: EmployeeDirectory
) -> dict[str, Any]:
    """The call object of DESIGN section 5. The pages of ``GET /calls`` and ``/changes`` are
    rendered from their rows by ``storage.queries._call_object`` instead: a change here is
    a change there (``tests/test_call_objects.py`` holds the two to the same bytes)."""
    call = entry.call
    customer: Mapping[str, Any] | None = None
    if entry.customer is not None:
        contact = None
        if entry.customer.contact_id is not None:
            contact = {"id": entry.customer.contact_id, "name": entry.customer.contact_name}
        customer = {"id": entry.customer.id, "name": entry.customer.name, "contact": contact}
    people = []
    for participant in call.participants:
        info = employees.get(participant.extension)
        people.append(
            {
                "id": info.id,
                "extension": participant.extension,
                "name": info.name,
                "role": participant.role.value,
                "on_mobile": participant.mobile,
            }
        )
    return {
        "id": entry.id,
        "pbx": entry.pbx,
        "linkedid": call.conversation_id,
        "started_at": format_time(call.started_at, timezone),
        "answered_at": format_time(call.answered_at, timezone),
        "ended_at": format_time(call.ended_at, timezone),
        "approximate_end": call.approximate_end,
        "direction": call.direction.value,
        "status": entry.status.value,
        "status_label": entry.status.label,
        "number": entry.number if call.direction is not Direction.INTERNAL else None,
        "number_raw": entry.number_raw,
        "number_withheld": call.number_withheld,
        "did": call.did,
        "callback_of": call.callback_of,
        "customer": customer,
        "unregistered": call.direction is not Direction.INTERNAL and entry.customer is None,
        "employees": people,
        "ring_seconds": round(call.ring_seconds, 1),
        "talk_seconds": round(call.talk_seconds, 1),
        "first_contact": entry.first_contact,
        "attention": entry.attention,
        "comment": entry.comment,
        "recordings": [
            {
                "id": stored.id,
                "part": stored.found.part,
                "offset_seconds": stored.found.offset_seconds,
                "duration_seconds": stored.found.duration_seconds,
                "url": f"/api/v1/recordings/{stored.id}",
            }
            for stored in entry.recordings
        ],
        "version": entry.version,
    }


def to_call_detail(
    entry: JournalEntry, timezone: ZoneInfo, employees: EmployeeDirectory
) -> dict[str, Any]:
    """``GET /calls/{id}``: the call object plus its timeline — when each employee was rung,
    answered and for how long they talked, each stretch of talk (legs), the transfers and
    pickups, and when each recording part started."""
    call = entry.call
    detail = to_call_object(entry, timezone, employees)
    detail["timeline"] = {
        "participants": [
            {
                "extension": p.extension,
                "role": p.role.value,
                "rang_at": format_time(p.rang_at, timezone),
                "answered_at": format_time(p.answered_at, timezone),
                "talk_seconds": round(p.talk_seconds, 1),
                "on_mobile": p.mobile,
            }
            for p in call.participants
        ],
        "legs": [
            {
                "extension": leg.extension,
                "connected_at": format_time(leg.connected_at, timezone),
                "disconnected_at": format_time(leg.disconnected_at, timezone),
                "on_mobile": leg.mobile,
            }
            for leg in call.legs
        ],
        "transfers": [
            {
                "kind": note.kind,
                "at": format_time(note.at, timezone),
                "by": note.by,
                "target": note.target,
            }
            for note in call.transfers
        ],
        "recordings": [
            {"id": stored.id, "started_at": format_time(stored.found.started_at, timezone)}
            for stored in entry.recordings
        ],
    }
    return detail
