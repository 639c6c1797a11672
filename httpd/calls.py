"""The journal: ``GET /calls``, ``GET /calls/{id}``, ``GET /changes``, comments.

Call objects are :func:`storage.journal.to_call_object`'s (DESIGN section 5), the same in
every endpoint; ``GET /calls/{id}`` adds the call's ``timeline``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from connector.recordings import inside_directories
from httpd.errors import ApiError, error_body, json_response
from httpd.keys import FEED, JOURNAL, SETTINGS
from httpd.params import (
    INT64_MAX,
    Query,
    bad,
    check_text,
    expect_object,
    path_int,
    read_json,
)
from storage.journal import EmployeeDirectory, JournalEntry, format_time, to_call_object
from storage.queries import (
    KINDS,
    MAX_CURSOR,
    CursorError,
    InternalCalls,
    JournalFilter,
    SinceAheadError,
    change_objects,
    decode_cursor,
    list_call_objects,
    load_entries,
    parse_time_bound,
)
from storage.store import UnknownCall

__all__ = ["routes"]

routes = web.RouteTableDef()

MAX_LIMIT = 500
MAX_CHANGES = 1000
MAX_WAIT = 60.0
MAX_COMMENT = 4000
MAX_QUERY = 200
_BODY_LIMIT = 64 * 1024
_TIME_RANGE = (0.0, 253402300799.0)  # 1970 … 9999-12-31


def _time_bound(query: Query, name: str, tz: ZoneInfo, *, end: bool) -> float | None:
    text = query.text(name, max_length=40)
    if not text:
        return None
    try:
        value = parse_time_bound(text, tz, end=end)
    except (ValueError, OverflowError):
        raise bad(
            "invalid_parameter",
            f"{name}: expected an ISO 8601 date (2026-11-28) or datetime "
            f"(2026-11-28T09:00, 2026-11-28T09:00:00+03:00), got {text[:40]!r}",
        ) from None
    if not _TIME_RANGE[0] <= value <= _TIME_RANGE[1]:
        raise bad("invalid_parameter", f"{name}: out of range")
    return value


def _check_cursor(cursor: str) -> str:
    """``cursor`` if :func:`storage.queries.decode_cursor` takes it, else a 400 naming it."""
    try:
        decode_cursor(cursor)
    except CursorError as exc:
        raise bad("invalid_cursor", f"cursor: {exc}; pass next_cursor as it came") from None
    return cursor


def journal_filter(request: web.Request) -> tuple[JournalFilter, int, str | None]:
    """The ``GET /calls`` query string as a filter, a page size and a cursor."""
    settings = request.app[SETTINGS]
    query = Query(request)
    tz = settings.pbx.tz
    started_from = _time_bound(query, "from", tz, end=False)
    started_until = _time_bound(query, "to", tz, end=True)
    if started_from is not None and started_until is not None and started_from > started_until:
        raise bad("invalid_parameter", "from: later than to")
    kinds = query.words("kind", KINDS)
    first_contact = query.boolean("first_contact")
    unregistered = query.boolean("unregistered")
    attention = query.boolean("attention")
    internal = InternalCalls(query.choice("internal", ("hide", "show", "only"), default="hide"))
    employee = query.text("employee", max_length=64) or None
    search = query.text("q", max_length=MAX_QUERY, allow_empty=True) or None
    limit = query.integer("limit", default=50, low=1, high=MAX_LIMIT)
    cursor = query.text("cursor", max_length=MAX_CURSOR, allow_empty=True) or None
    query.done()
    if cursor is not None:
        _check_cursor(cursor)
    where = JournalFilter(
        started_from=started_from,
        started_until=started_until,
        kinds=kinds,
        first_contact=first_contact,
        unregistered=unregistered,
        attention=attention,
        internal=internal,
        employee=employee,
        query=search,
    )
    return where, limit, cursor


def render(request: web.Request, entry: JournalEntry, employees: EmployeeDirectory) -> Any:
    return to_call_object(entry, request.app[SETTINGS].pbx.tz, employees)


@routes.get("/api/v1/calls")
async def list_journal(request: web.Request) -> web.Response:
    where, limit, cursor = journal_filter(request)
    journal = request.app[JOURNAL]
    employees = await journal.employee_directory()
    async with journal.database.sessions() as session:
        items, next_cursor = await list_call_objects(
            session,
            where,
            request.app[SETTINGS].pbx.tz,
            employees,
            limit=limit,
            cursor=cursor,
            region=journal.region,
        )
    return json_response({"items": items, "next_cursor": next_cursor})


def _timeline(
    request: web.Request, entry: JournalEntry, employees: EmployeeDirectory, present: list[bool]
) -> dict[str, Any]:
    tz = request.app[SETTINGS].pbx.tz
    call = entry.call
    return {
        "participants": [
            {
                "extension": p.extension,
                "name": employees.get(p.extension).name,
                "role": p.role.value,
                "rang_at": format_time(p.rang_at, tz),
                "answered_at": format_time(p.answered_at, tz),
                "talk_seconds": round(p.talk_seconds, 1),
                "on_mobile": p.mobile,
            }
            for p in call.participants
        ],
        "legs": [
            {
                "extension": leg.extension,
                "name": employees.get(leg.extension).name,
                "connected_at": format_time(leg.connected_at, tz),
                "disconnected_at": format_time(leg.disconnected_at, tz),
                "seconds": round(leg.disconnected_at - leg.connected_at, 1),
                "on_mobile": leg.mobile,
            }
            for leg in call.legs
        ],
        "transfers": [
            {"kind": t.kind, "at": format_time(t.at, tz), "by": t.by, "target": t.target}
            for t in call.transfers
        ],
        "recordings": [
            {
                "id": stored.id,
                "part": stored.found.part,
                "started_at": format_time(stored.found.started_at, tz),
                "offset_seconds": stored.found.offset_seconds,
                "duration_seconds": stored.found.duration_seconds,
                "size": stored.found.size,
                "available": available,
                "url": f"/api/v1/recordings/{stored.id}",
            }
            for stored, available in zip(entry.recordings, present, strict=True)
        ],
    }


def _files_present(paths: list[Path], directories: Sequence[str]) -> list[bool]:
    """Whether each part can be served: a file inside the recordings directories (a stored
    path that resolves elsewhere is a 404 when fetched, so it is not ``available``)."""
    present = []
    for path in paths:
        real = inside_directories(path, directories)
        present.append(real is not None and real.is_file())
    return present


@routes.get("/api/v1/calls/{call_id}")
async def get_call(request: web.Request) -> web.Response:
    call_id = path_int(request, "call_id")
    Query(request).done()
    journal = request.app[JOURNAL]
    async with journal.database.sessions() as session:
        found = await load_entries(session, [call_id])
    employees = await journal.employee_directory()
    if not found:
        raise ApiError(404, "call_not_found", f"no call {call_id}")
    entry = found[0]
    # stat() of the parts off the loop: the recordings may live on a network mount.
    present = await asyncio.to_thread(
        _files_present,
        [r.found.file for r in entry.recordings],
        request.app[SETTINGS].recordings.directories,
    )
    body = render(request, entry, employees)
    body["timeline"] = _timeline(request, entry, employees, present)
    body["recording_url"] = f"/api/v1/calls/{call_id}/recording" if entry.recordings else None
    return json_response(body)


def _journal_changed(message: str, journal_id: str, version: int) -> web.Response:
    """409 ``journal_changed``: the client's version belongs to another journal (or to this
    one before an older backup was restored). It must read everything again from 0; beside
    the error, the answer carries this journal's ``journal_id`` and ``last_version``."""
    body = error_body("journal_changed", f"{message}; read the journal again from since=0")
    body.update(journal_id=journal_id, last_version=version)
    return json_response(body, status=409)


def _client_journal_id(query: Query) -> str | None:
    text = query.text("journal_id", max_length=36)
    if text is None:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise bad(
            "invalid_parameter", "journal_id: expected the journal_id of an answer (a UUID)"
        ) from None


@routes.get("/api/v1/changes")
async def get_changes(request: web.Request) -> web.Response:
    query = Query(request)
    since = query.integer("since", default=0, low=0, high=INT64_MAX)
    limit = query.integer("limit", default=500, low=1, high=MAX_CHANGES)
    wait = query.number("wait", default=0.0, low=0.0, high=MAX_WAIT)
    expected_id = _client_journal_id(query)
    query.done()
    journal = request.app[JOURNAL]
    feed = request.app[FEED]
    journal_id = await feed.journal_id()
    if expected_id is not None and expected_id != journal_id:
        return _journal_changed(
            f"journal_id: this is journal {journal_id}, not {expected_id}",
            journal_id,
            await journal.last_version(),
        )
    deadline = time.monotonic() + wait
    woke = False
    tz = request.app[SETTINGS].pbx.tz
    while True:
        if wait > 0 and since == feed.version:
            # Nothing beyond what the feed knows (its probe and NOTIFY bring other processes'
            # commits): straight to the wait, no query.
            remembered: tuple[list[JournalEntry], int] | None = ([], since)
        else:
            # The rows a long-poll wakes for were just read back by the daemon: no query.
            remembered = feed.recent(since, limit)
        if remembered is not None:
            feed.answers_from_memory += 1
            entries, last = remembered
            items = []
            if entries:
                employees = await journal.employee_directory()
                items = [to_call_object(entry, tz, employees) for entry in entries]
        else:
            feed.answers_from_database += 1
            employees = await journal.employee_directory()
            try:
                async with journal.database.sessions() as session:
                    items, last = await change_objects(session, since, tz, employees, limit)
            except SinceAheadError as exc:
                # Never taken as the journal's version (it would move the feed, its metric
                # and every long-poll): the client is told to start again.
                return _journal_changed(
                    f"since: {since} is ahead of this journal (last version {exc.version})",
                    journal_id,
                    exc.version,
                )
        remaining = deadline - time.monotonic()
        if items or remaining <= 0:
            break
        if woke:
            # Told of a version this read did not see (another process's commit on its way):
            # a moment before looking again, never a busy loop.
            await asyncio.sleep(0.01)
        feed.advance(last)
        woke = await feed.wait_beyond(last, remaining)
        if not woke:
            break
    return json_response({"items": items, "last_version": last, "journal_id": journal_id})


@routes.put("/api/v1/calls/{call_id}/comment")
async def put_comment(request: web.Request) -> web.Response:
    call_id = path_int(request, "call_id")
    Query(request).done()
    body = expect_object(await read_json(request, limit=_BODY_LIMIT), "body", ("text",))
    text = body.get("text")
    if text is not None and not isinstance(text, str):
        raise bad("invalid_body", "body.text: expected a string (empty removes the comment)")
    if text:
        check_text(text, "body.text", max_length=MAX_COMMENT, allow_empty=True)
    journal = request.app[JOURNAL]
    try:
        change = await journal.set_comment(call_id, text or None, time.time())
    except UnknownCall:
        raise ApiError(404, "call_not_found", f"no call {call_id}") from None
    request.app[FEED].committed([change])
    comment = text if text and text.strip() else None
    return json_response({"id": call_id, "comment": comment, "version": change.version})


@routes.delete("/api/v1/calls/{call_id}/comment")
async def delete_comment(request: web.Request) -> web.Response:
    """Remove the comment; a call without one keeps its version (nothing changes)."""
    call_id = path_int(request, "call_id")
    Query(request).done()
    journal = request.app[JOURNAL]
    try:
        change = await journal.set_comment(call_id, None, time.time())
    except UnknownCall:
        raise ApiError(404, "call_not_found", f"no call {call_id}") from None
    request.app[FEED].committed([change])
    return json_response({"id": call_id, "comment": None, "version": change.version})
