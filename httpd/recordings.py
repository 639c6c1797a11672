"""Recordings: each part streamed with Range support, the whole conversation as one download.

A recording is addressed by its id only. The file behind it is the path the daemon's
recordings finder stored when it wrote the call (resolved against ``recordings.directories``);
nothing in a request ever becomes part of a path. Before a file is opened, its path is
resolved again (``..`` and symlinks) and must still lie inside one of the directories of the
current settings (:func:`connector.recordings.inside_directories`): a path stored by an older
daemon, a symlink planted in the spool since, or a directory no longer configured is refused
like a missing file (404 ``recording_missing``), with one warning per call. A part whose file
is gone (rotated away, unmounted) is a 404 ``recording_missing``, not a 500.

``Range`` (RFC 9110 section 14) is read here, by :func:`requested_range`, and only one valid,
satisfiable byte range reaches ``web.FileResponse`` (206, ``Accept-Ranges: bytes``), so 1C's
player seeks ±10 s without downloading the whole part. A malformed ``bytes`` range, or one
that asks for nothing of the file (``bytes=-0``, a start past the end), is a 416
``range_not_satisfiable`` JSON error with ``Content-Range: bytes */SIZE``. Several ranges in
one request, and units other than ``bytes``, are ignored, as RFC 9110 allows (and requires for
an unknown unit): the whole file with 200. An ``If-Range`` older than the file voids the
``Range`` as well.

The merged download (``GET /calls/{id}/recording?format=mp3|wav``) runs
:class:`httpd.audio.MergedRecordings` in the application's worker threads: decoding and
encoding are CPU-bound and must not stall the event loop (nor the AMI session living on it).
Its cache key covers every part's path, size and modification time, so a part that changed
or a part added since the last download makes a new merge.
"""

from __future__ import annotations

import asyncio
import os
import re
import unicodedata
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import structlog
from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

from connector.recordings import inside_directories
from httpd.audio import FORMATS, AudioError
from httpd.errors import ApiError
from httpd.keys import JOURNAL, MERGE_SLOTS, MERGED, SETTINGS, WORKERS
from httpd.params import Query, path_int
from storage.journal import JournalEntry, StoredRecording
from storage.queries import load_entries

__all__ = [
    "ByteRange",
    "attachment_header",
    "content_type_of",
    "download_name",
    "requested_range",
    "routes",
]

log = structlog.get_logger("pbxjournal.http")

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


# -- which files may be served -------------------------------------------------------------

#: Calls whose refused recording was logged, per app: one warning per call, not per request.
_REFUSALS_LOGGED: weakref.WeakKeyDictionary[web.Application, set[int]] = weakref.WeakKeyDictionary()
_REFUSALS_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class _Servable:
    """The real files of some parts, or the first part that cannot be served and why."""

    files: list[Path]
    unservable: StoredRecording | None = None
    outside: bool = False


def _servable(parts: Sequence[StoredRecording], directories: Sequence[str]) -> _Servable:
    """Each part's real file, when it is a regular file inside ``directories`` (blocking)."""
    files = []
    for part in parts:
        real = inside_directories(part.found.file, directories)
        if real is None:
            return _Servable([], part, outside=True)
        if not real.is_file():
            return _Servable([], part)
        files.append(real)
    return _Servable(files)


async def _files_of(
    request: web.Request, call_id: int, parts: Sequence[StoredRecording]
) -> list[Path]:
    """The real files to open for ``parts`` of call ``call_id``, or a 404 ``recording_missing``.

    Checked against the directories of the current settings, in a worker thread (the spool may
    be a network mount).
    """
    directories = request.app[SETTINGS].recordings.directories
    checked = await asyncio.to_thread(_servable, parts, directories)
    if checked.unservable is None:
        return checked.files
    if checked.outside:
        logged = _REFUSALS_LOGGED.setdefault(request.app, set())
        if call_id not in logged:
            if len(logged) >= _REFUSALS_REMEMBERED:
                logged.clear()
            logged.add(call_id)
            log.warning(
                "recording outside the recordings directories refused",
                call_id=call_id,
                recording_id=checked.unservable.id,
            )
    raise _missing(checked.unservable.id)


# -- Range -----------------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)")
#: Positions longer than this are past any file (and int() of thousands of digits is refused).
_MAX_DIGITS = 18
_SHOWN = 60


@dataclass(frozen=True, slots=True)
class ByteRange:
    """One byte range of a file: ``first`` to ``last``, both included."""

    first: int
    last: int


def _position(digits: str) -> int | None:
    if not digits:
        return None
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _not_satisfiable(header: str, size: int, why: str) -> ApiError:
    shown = header if len(header) <= _SHOWN else header[:_SHOWN] + "…"
    return ApiError(
        416,
        "range_not_satisfiable",
        f"Range {shown!r}: {why}",
        headers={"Content-Range": f"bytes */{size}"},
    )


def requested_range(header: str, size: int) -> ByteRange | None:
    """The one byte range a ``Range`` header asks of a ``size``-byte file.

    None means "ignore the header, send the whole file": a unit other than ``bytes`` (RFC 9110
    section 14.2: a server MUST ignore it), several ranges (a server MAY ignore them; 1C's
    player never asks for more than one), or a suffix range of an empty file. A malformed
    header and a range outside the file raise a 416 :class:`ApiError` with
    ``Content-Range: bytes */SIZE``.
    """
    unit, equals, ranges = header.partition("=")
    if not equals or not _TOKEN.fullmatch(unit):
        raise _not_satisfiable(header, size, "not a range; use bytes=FIRST-LAST")
    if unit.lower() != "bytes":
        return None
    # A list: OWS around the commas, empty elements allowed (RFC 9110 section 5.6.1).
    specs = [spec for spec in (s.strip(" \t") for s in ranges.split(",")) if spec]
    if not specs:
        raise _not_satisfiable(header, size, "no range given; use bytes=FIRST-LAST")
    wanted: list[tuple[int | None, int | None]] = []
    for spec in specs:
        match = _RANGE_SPEC.fullmatch(spec)
        if match is None or not (match[1] or match[2]):
            raise _not_satisfiable(
                header, size, "malformed; use bytes=FIRST-LAST, bytes=FIRST- or bytes=-COUNT"
            )
        first, last = _position(match[1]), _position(match[2])
        if first is not None and last is not None and last < first:
            raise _not_satisfiable(header, size, "the last byte comes before the first")
        wanted.append((first, last))
    if len(wanted) > 1:
        return None
    ((first, last),) = wanted
    if first is None:
        assert last is not None
        if last == 0:
            raise _not_satisfiable(header, size, "a suffix of zero bytes asks for nothing")
        if size == 0:
            return None
        return ByteRange(max(0, size - last), size - 1)
    if first >= size:
        raise _not_satisfiable(header, size, f"the file has only {size} bytes")
    return ByteRange(first, size - 1 if last is None else min(last, size - 1))


def _range_applies(request: web.Request, modified: float) -> bool:
    """False when an ``If-Range`` date older than the file voids the ``Range`` (as aiohttp)."""
    if_range = request.if_range
    return if_range is None or modified <= if_range.timestamp()


class _RangedFile(web.FileResponse):
    """``web.FileResponse`` that sees only the range :func:`requested_range` accepted."""

    def __init__(self, path: Path, byte_range: ByteRange | None, headers: dict[str, str]):
        super().__init__(path, headers=headers)
        self._range_header = (
            None if byte_range is None else f"bytes={byte_range.first}-{byte_range.last}"
        )

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        sent = request.headers.getall(hdrs.RANGE, [])
        if sent != ([] if self._range_header is None else [self._range_header]):
            headers = CIMultiDict(request.headers)
            headers.popall(hdrs.RANGE, None)
            if self._range_header is not None:
                headers[hdrs.RANGE] = self._range_header
            request = request.clone(headers=headers)
        return await super().prepare(request)


async def _file_response(
    request: web.Request, path: Path, headers: dict[str, str]
) -> web.StreamResponse:
    """``path`` (already checked) with the request's ``Range`` read by :func:`requested_range`."""
    sent = request.headers.getall(hdrs.RANGE, [])
    byte_range = None
    if sent:
        try:
            info = await asyncio.to_thread(os.stat, path)
        except OSError:
            raise ApiError(
                404, "recording_missing", "the recording file is not on the server"
            ) from None
        if _range_applies(request, info.st_mtime):
            # Range is one field: several lines of it are one comma-separated list.
            byte_range = requested_range(",".join(sent), info.st_size)
    return _RangedFile(path, byte_range, headers)


# -- routes ----------------------------------------------------------------------------------


@routes.get("/api/v1/recordings/{recording_id}")
async def get_recording(request: web.Request) -> web.StreamResponse:
    recording_id = path_int(request, "recording_id")
    Query(request).done()
    found = await request.app[JOURNAL].recording(recording_id)
    if found is None:
        raise ApiError(404, "recording_not_found", f"no recording {recording_id}")
    call_id, stored = found
    (path,) = await _files_of(request, call_id, [stored])
    return await _file_response(
        request,
        path,
        {
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


#: Russian Cyrillic in Latin letters by the scheme of Russian passports (ICAO Doc 9303, in
#: use since 2014): what people expect to read their own name as.
_PASSPORT = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z",
    "и": "i", "й": "i", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r",
    "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh",
    "щ": "shch", "ъ": "ie", "ы": "y", "ь": "", "э": "e", "ю": "iu", "я": "ia",
}  # fmt: skip


def transliterate(text: str) -> str:
    """``text`` in ASCII: Cyrillic by the passport scheme (``Иванова Анна`` →
    ``Ivanova Anna``), accented Latin without its accents, anything else ``_``."""
    out = []
    for index, char in enumerate(text):
        lower = char.lower()
        if lower in _PASSPORT:
            latin = _PASSPORT[lower]
            if char != lower:
                # ЩУКА → SHCHUKA, Щука → Shchuka
                shouting = (
                    text[index + 1 : index + 2].isupper() or text[index - 1 : index].isupper()
                )
                latin = latin.upper() if shouting else latin.capitalize()
            out.append(latin)
        elif char.isascii():
            out.append(char)
        else:
            plain = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
            out.append(plain or "_")
    return "".join(out)


def attachment_header(name: str, *, inline: bool = False) -> str:
    """``Content-Disposition`` with an ASCII ``filename`` (transliterated) and RFC 5987's
    ``filename*`` (the name in UTF-8)."""
    fallback = "".join(c if " " <= c < "\x7f" else "_" for c in transliterate(name))
    fallback = fallback.replace('"', "").replace("\\", "_")
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
    paths = await _files_of(request, call_id, entry.recordings)
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
    return await _file_response(
        request,
        merged,
        {
            "Content-Type": FORMATS[fmt][1],
            "Content-Disposition": attachment_header(name),
            "Cache-Control": "private, max-age=3600",
        },
    )
