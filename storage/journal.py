"""Journal entries and the call object that 1C reads (DESIGN section 5).

A :class:`JournalEntry` is one row of the journal: the finished call from the assembler, the
recordings found for it, and the verdict of the rules. :func:`to_call_object` renders it as
the JSON object that ``GET /calls``, ``/changes`` and ``pbxjournal replay --json`` all share,
with times in the PBX's time zone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
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


def to_call_object(
    entry: JournalEntry, timezone: ZoneInfo, employees: EmployeeDirectory
) -> dict[str, Any]:
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
