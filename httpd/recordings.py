"""Recordings: each part streamed with Range support, the whole conversation as one download.

A recording is addressed by its id only. The file behind it is the path the daemon's
recordings finder stored when it wrote the call (resolved against ``recordings.directories``);
nothing in a request ever becomes part of a path. ``web.FileResponse`` answers ``Range``
(206, 416, ``Accept-Ranges: bytes``), so 1C's player seeks ±10 s without downloading the
whole part. A part whose file is gone (rotated away, unmounted) is a 404
``recording_missing``, not a 500.

The merged download (``GET /calls/{id}/recording?format=mp3|wav``) runs
:class:`httpd.audio.MergedRecordings` in the application's worker threads: decoding and
encoding are CPU-bound and must not stall the event loop (nor the AMI session living on it).
Its cache key covers every part's path, size and modification time, so a part that changed
or a part added since the last download makes a new merge.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from httpd.audio import FORMATS, AudioError
from httpd.errors import ApiError
from httpd.keys import JOURNAL, MERGE_SLOTS, MERGED, SETTINGS, WORKERS
from httpd.params import Query, path_int
from storage.journal import JournalEntry, StoredRecording
from storage.queries import load_entries

__all__ = ["attachment_header", "content_type_of", "download_name", "routes"]

routes = web.RouteTableDef()

_CONTENT_TYPES = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".gsm": "audio/gsm",
    ".sln": "audio/L16",
}
_UNSAFE = re.compile(r"[^\w+.-]+")


def content_type_of(path: Path) -> str:
    return _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def _missing(recording_id: int) -> ApiError:
    return ApiError(
        404, "recording_missing", f"the file of recording {recording_id} is not on the server"
    )


def _is_file(path: Path) -> bool:
    return path.is_file()


def _first_missing(parts: Sequence[StoredRecording]) -> StoredRecording | None:
    return next((part for part in parts if not part.found.file.is_file()), None)


@routes.get("/api/v1/recordings/{recording_id}")
async def get_recording(request: web.Request) -> web.StreamResponse:
    recording_id = path_int(request, "recording_id")
    Query(request).done()
    found = await request.app[JOURNAL].recording(recording_id)
    if found is None:
        raise ApiError(404, "recording_not_found", f"no recording {recording_id}")
    _, stored = found
    path = stored.found.file
    if not await asyncio.to_thread(_is_file, path):
        raise _missing(recording_id)
    return web.FileResponse(
        path,
        headers={
            "Content-Type": content_type_of(path),
            "Content-Disposition": attachment_header(
                f"part-{stored.found.part}-{recording_id}{path.suffix.lower()}", inline=True
            ),
            "Cache-Control": "private, max-age=3600",
        },
    )


def _safe(text: str) -> str:
    return _UNSAFE.sub("-", text).strip("-.") or "-"


def download_name(entry: JournalEntry, names: dict[str, str], started: datetime, fmt: str) -> str:
    """``2026-11-28_06-23_+79161234567_Иванова-Анна.mp3``: date, number, employee."""
    call = entry.call
    number = entry.number or call.external_number or "internal"
    person = next((p for p in call.participants if p.answered_at is not None), None)
    if person is None and call.participants:
        person = call.participants[0]
    who = ""
    if person is not None:
        who = names.get(person.extension) or person.extension
    parts = [started.strftime("%Y-%m-%d_%H-%M"), _safe(number)]
    if who:
        parts.append(_safe(who))
    return "_".join(parts) + FORMATS[fmt][0]


def attachment_header(name: str, *, inline: bool = False) -> str:
    """``Content-Disposition`` with an ASCII ``filename`` and RFC 5987 ``filename*``."""
    fallback = name.encode("ascii", "replace").decode("ascii").replace("?", "_").replace('"', "")
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@routes.get("/api/v1/calls/{call_id}/recording")
async def get_merged_recording(request: web.Request) -> web.StreamResponse:
    call_id = path_int(request, "call_id")
    query = Query(request)
    fmt = query.choice("format", tuple(FORMATS), default="mp3")
    query.done()
    journal = request.app[JOURNAL]
    async with journal.database.sessions() as session:
        found = await load_entries(session, [call_id])
    employees = await journal.employee_directory()
    if not found:
        raise ApiError(404, "call_not_found", f"no call {call_id}")
    entry = found[0]
    if not entry.recordings:
        raise ApiError(404, "no_recording", f"call {call_id} has no recording")
    paths = [stored.found.file for stored in entry.recordings]
    # Every part's stat() in one trip to a worker thread (the spool may be a network mount).
    missing = await asyncio.to_thread(_first_missing, entry.recordings)
    if missing is not None:
        raise _missing(missing.id)
    slots = request.app[MERGE_SLOTS]
    if slots.locked():
        raise ApiError(
            429,
            "busy",
            "too many recordings being merged; retry in a few seconds",
            headers={"Retry-After": "5"},
        )
    loop = asyncio.get_running_loop()
    async with slots:
        try:
            merged = await loop.run_in_executor(
                request.app[WORKERS], request.app[MERGED].get, paths, fmt
            )
        except AudioError as exc:
            if "cannot be read" in str(exc):
                raise ApiError(
                    404, "recording_missing", f"a part of call {call_id} is not on the server"
                ) from None
            raise ApiError(
                422, "recording_unreadable", f"the recording of call {call_id}: {exc}"
            ) from None
    settings = request.app[SETTINGS]
    started = datetime.fromtimestamp(entry.call.started_at, settings.pbx.tz)
    names = {ext: employees.get(ext).name for ext in employees.extensions()}
    name = download_name(entry, names, started, fmt)
    return web.FileResponse(
        merged,
        headers={
            "Content-Type": FORMATS[fmt][1],
            "Content-Disposition": attachment_header(name),
            "Cache-Control": "private, max-age=3600",
        },
    )
