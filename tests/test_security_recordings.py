"""Attacks on the recordings: paths out of the spool, hostile Range headers, the merge cache.

A recording is served only when its file, resolved (``..`` and symlinks followed), lies inside
one of the configured recordings directories: checked when the finder stores the path and
again when the file is opened. The daemon's own configuration (``SECRET`` here) stands for
every file of the host that must never come out of ``GET /api/v1/recordings/{id}``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from config import Settings
from connector.assembly import FinishedCall, RecordingPart
from connector.recordings import FoundRecording, RecordingFinder
from httpd.app import init_app
from httpd.audio import MergedRecordings, default_cache_directory
from httpd.errors import ApiError
from httpd.keys import MERGED
from httpd.recordings import ByteRange, requested_range
from pbxjournal.pipeline import log_refused_recordings
from storage.engine import Database, open_database
from storage.migrate import upgrade
from tests.db import make_journal
from tests.http_support import Api, Maker, api_settings
from tests.scenarios import RECORDINGS, assemble_capture

BLIND = RECORDINGS / "11-incoming-blind-transfer"
SECRET = b'[ami]\nsecret = "ami-secret-do-not-leak"\n[[http.clients]]\npassword = "s3cret"\n'
REFUSED = "recording outside the recordings directories refused"


@dataclasses.dataclass
class Spool:
    """A recordings directory with one real recording, and a secret file outside it."""

    directory: Path
    legit: Path
    secret: Path

    def escape(self) -> str:
        """``<directory>/../../…/<secret>``: textually under the directory, really outside."""
        climb = "/".join([".."] * (len(self.directory.parts) + 2))
        return f"{self.directory}/{climb}{self.secret}"


def make_spool(tmp_path: Path) -> Spool:
    directory = tmp_path / "spool" / "monitor"
    directory.mkdir(parents=True)
    legit = Path(shutil.copy(sorted(BLIND.iterdir())[0], directory / "legit.wav"))
    etc = tmp_path / "etc"
    etc.mkdir()
    secret = etc / "pbxjournal.toml"
    secret.write_bytes(SECRET)
    return Spool(directory, legit, secret)


def blind_call(*paths: str) -> FinishedCall:
    """The blind-transfer capture's call, its recording parts announced at ``paths``."""
    (call,) = assemble_capture("11-incoming-blind-transfer").calls
    template = call.recordings[0]
    parts = tuple(
        RecordingPart(path=p, started_at=template.started_at + i, channel=template.channel)
        for i, p in enumerate(paths)
    )
    return dataclasses.replace(call, recordings=parts)


def refusals(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == REFUSED]


# -- point 1: the finder stores only paths inside the directories ------------------------------


def test_a_traversal_out_of_the_recordings_directory_is_not_a_part(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    call = blind_call(str(spool.legit), spool.escape())
    assert Path(os.path.realpath(spool.escape())) == spool.secret  # the attack is real
    with capture_logs() as logs:
        found = RecordingFinder([spool.directory], on_refused=log_refused_recordings).find(call)
    assert [f.file for f in found] == [spool.legit]
    (refused,) = refusals(logs)
    assert refused["log_level"] == "warning"
    assert refused["conversation_id"] == call.conversation_id
    assert "ami-secret" not in repr(logs)


def test_a_symlink_in_the_recordings_directory_pointing_outside_is_not_a_part(
    tmp_path: Path,
) -> None:
    spool = make_spool(tmp_path)
    link = spool.directory / "link.wav"
    link.symlink_to(spool.secret)
    (spool.directory / "etc").symlink_to(spool.secret.parent)  # a linked directory too
    call = blind_call(str(link), str(spool.legit), f"/var/spool/x/etc/{spool.secret.name}")
    with capture_logs() as logs:
        found = RecordingFinder([spool.directory], on_refused=log_refused_recordings).find(call)
        assert RecordingFinder([spool.directory]).locate(str(link)) is None
    assert [f.file for f in found] == [spool.legit]
    # Two parts refused, one line for the call.
    (refused,) = refusals(logs)
    assert refused["conversation_id"] == call.conversation_id


def test_a_symlink_between_configured_directories_is_followed(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    other = tmp_path / "archive"
    other.mkdir()
    moved = other / "moved.wav"
    spool.legit.rename(moved)
    spool.legit.symlink_to(moved)
    # A configured directory that is itself a symlink is resolved the same way.
    alias = tmp_path / "alias"
    alias.symlink_to(spool.directory)
    found = RecordingFinder([alias, other]).find(blind_call(str(alias / "legit.wav")))
    assert [f.file for f in found] == [moved]


# -- point 1: the server opens only files inside the current directories ------------------------

Serve = Callable[[Settings], Awaitable[Api]]


@pytest.fixture
async def serve(aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[Serve]:
    """``await serve(settings)``: the real app over an empty SQLite journal."""
    databases: list[Database] = []

    async def start(settings: Settings) -> Api:
        database = open_database(
            f"sqlite+aiosqlite:///{tmp_path / f'journal-{len(databases)}.sqlite3'}"
        )
        databases.append(database)
        await upgrade(database)
        journal = await make_journal(database)
        app = init_app(settings, journal, merged_cache=tmp_path / "merged")
        client = await aiohttp_client(app)
        return Api(client, app, journal, settings)

    try:
        yield start
    finally:
        for database in databases:
            await database.dispose()


def with_directories(tmp_path: Path, *directories: Path) -> Settings:
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    settings = api_settings(config)
    recordings = dataclasses.replace(
        settings.recordings, directories=tuple(str(d) for d in directories)
    )
    return dataclasses.replace(settings, recordings=recordings)


def stored(call: FinishedCall, *files: Path) -> list[FoundRecording]:
    """Parts as a journal written by an older daemon (or another tool) may hold them."""
    return [
        FoundRecording(
            part=i + 1,
            pbx_path=str(file),
            file=file,
            started_at=call.started_at + i,
            offset_seconds=float(i),
            duration_seconds=None,
            size=file.stat().st_size,
        )
        for i, file in enumerate(files)
    ]


async def only_call(api: Api) -> dict[str, Any]:
    (listed,) = await api.calls()
    detail: dict[str, Any] = await api.get(f"/api/v1/calls/{listed['id']}")
    return detail


async def test_a_traversal_path_is_never_stored_nor_served(serve: Serve, tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    settings = with_directories(tmp_path, spool.directory)
    api = await serve(settings)
    call = blind_call(str(spool.legit), spool.escape())
    finder = RecordingFinder(settings.recordings.directories, settings.recordings.formats)
    await api.journal.write(call, finder.find(call), call.ended_at)
    detail = await only_call(api)
    (part,) = detail["recordings"]
    assert await api.get(part["url"]) == spool.legit.read_bytes()  # the legitimate one plays
    for number in range(1, 5):
        async with api.client.get(f"/api/v1/recordings/{number}", headers=api.auth) as response:
            assert SECRET not in await response.read()


async def test_a_stored_path_outside_the_directories_is_a_404_logged_once(
    serve: Serve, tmp_path: Path
) -> None:
    spool = make_spool(tmp_path)
    api = await serve(with_directories(tmp_path, spool.directory))
    call = blind_call()
    escape = Path(spool.escape())
    await api.journal.write(call, stored(call, spool.legit, escape), call.ended_at)
    detail = await only_call(api)
    legit, outside = detail["recordings"]
    # The detail does not promise what a fetch would refuse.
    assert [r["available"] for r in detail["timeline"]["recordings"]] == [True, False]
    assert await api.get(legit["url"]) == spool.legit.read_bytes()
    with capture_logs() as logs:
        for _ in range(3):
            refused = await api.get(outside["url"], status=404)
            assert refused["error"]["code"] == "recording_missing"
        merged = await api.get(detail["recording_url"] + "?format=wav", status=404)
        assert merged["error"]["code"] == "recording_missing"
    (line,) = refusals(logs)
    assert line["log_level"] == "warning"
    assert line["call_id"] == detail["id"]
    assert "ami-secret" not in repr(logs)


async def test_a_stored_file_later_replaced_by_a_symlink_outside_is_a_404(
    serve: Serve, tmp_path: Path
) -> None:
    spool = make_spool(tmp_path)
    api = await serve(with_directories(tmp_path, spool.directory))
    call = blind_call()
    planted = spool.directory / "planted.wav"
    shutil.copy(spool.legit, planted)
    await api.journal.write(call, stored(call, planted), call.ended_at)
    (part,) = (await only_call(api))["recordings"]
    assert await api.get(part["url"]) == spool.legit.read_bytes()
    planted.unlink()
    planted.symlink_to(spool.secret)  # someone with write access to the spool
    refused = await api.get(part["url"], status=404)
    assert refused["error"]["code"] == "recording_missing"


async def test_a_directory_removed_from_the_settings_no_longer_serves(
    serve: Serve, tmp_path: Path
) -> None:
    spool = make_spool(tmp_path)
    kept = tmp_path / "kept"
    kept.mkdir()
    still = Path(shutil.copy(spool.legit, kept / "still.wav"))
    call = blind_call()
    # A journal written while ``spool.directory`` was configured, served with only ``kept``.
    second = await serve(with_directories(tmp_path, kept))
    await second.journal.write(call, stored(call, spool.legit, still), call.ended_at)
    gone, kept_part = (await only_call(second))["recordings"]
    assert (await second.get(gone["url"], status=404))["error"]["code"] == "recording_missing"
    assert await second.get(kept_part["url"]) == spool.legit.read_bytes()  # still.wav


# -- point 6a: Range headers ------------------------------------------------------------------

SIZE = 1000

MALFORMED = [
    "",
    " ",
    "bytes",
    "bytes=",
    "bytes= ",
    "bytes=,",
    "bytes=, ,",
    "bytes=-",
    "bytes=--",
    "bytes=--1",
    "bytes=1--2",
    "bytes=a-b",
    "bytes=1-a",
    "bytes=a-",
    "bytes=-a",
    "bytes=0x10-",
    "bytes=+1-2",
    "bytes=1-+2",
    "bytes=-+2",
    "bytes=1.5-2",
    "bytes=1 - 2",
    "bytes=1- 2",
    "bytes=5-3",
    "bytes=10-9",
    "bytes=0-1,5-3",
    "bytes=0-1,x",
    "bytes=0-1;5-6",
    "bytes=١-٢",
    "bytes=²-",
    "bytes=1-2-3",
    "bytes = 0-1",
    "bytes =0-1",
    "=0-1",
    "0-1",
    "bytes:0-1",
    "bytes 0-1",
    "bytes=0-1=2",
    "by tes=0-1",
    "bytes=\t",
    "bytes=0-99999999999999999999999999999999999999999999-",
    "bytes=" + "9" * 5000 + "-" + "1" * 5000,
    "bytes=-0",
    "bytes=-00000",
    "bytes=" + "9" * 5000 + "-",
    "bytes=99999999999999999999-",
]


def past_the_end(size: int) -> list[str]:
    return [f"bytes={size}-", f"bytes={size}-{size + 5}", f"bytes={size + 1}-{size + 1}"]


@pytest.mark.parametrize("header", MALFORMED + past_the_end(SIZE))
def test_a_malformed_or_unsatisfiable_range_is_refused(header: str) -> None:
    with pytest.raises(ApiError) as refused:
        requested_range(header, SIZE)
    error = refused.value
    assert (error.status, error.code) == (416, "range_not_satisfiable")
    assert error.headers == {"Content-Range": f"bytes */{SIZE}"}


@pytest.mark.parametrize(
    ("header", "wanted"),
    [
        ("bytes=0-0", ByteRange(0, 0)),
        ("bytes=0-", ByteRange(0, SIZE - 1)),
        ("BYTES=10-19", ByteRange(10, 19)),
        ("bytes=10-99999", ByteRange(10, SIZE - 1)),
        ("bytes=-1", ByteRange(SIZE - 1, SIZE - 1)),
        ("bytes=-5000", ByteRange(0, SIZE - 1)),
        ("bytes=-" + "9" * 5000, ByteRange(0, SIZE - 1)),
        ("bytes=0-" + "9" * 5000, ByteRange(0, SIZE - 1)),
        ("bytes=5-9, ", ByteRange(5, 9)),
        ("bytes=007-008", ByteRange(7, 8)),
        # Several ranges, and units other than bytes, are ignored: the whole file (200).
        ("bytes=0-1,5-6", None),
        ("bytes=0-1, -5", None),
        ("bytes=0-1,1-2,2-3", None),
        ("items=0-5", None),
        ("none=", None),
    ],
)
def test_a_range_is_one_satisfiable_span_or_ignored(header: str, wanted: ByteRange | None) -> None:
    assert requested_range(header, SIZE) == wanted


HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\t,-=0"),
    max_size=40,
).map(str.strip)
BYTES_SPECS = st.lists(
    st.from_regex(r"\A[0-9 ]{0,6}-?[0-9a-z+ ]{0,6}\Z") | st.sampled_from(["", "-0", "5-3", "-"]),
    min_size=1,
    max_size=3,
).map(lambda specs: "bytes=" + ",".join(specs))


@settings(max_examples=300, deadline=None)
@given(header=HEADER_TEXT | BYTES_SPECS, size=st.integers(0, 3000))
def test_any_range_is_one_span_inside_the_file_ignored_or_a_416(header: str, size: int) -> None:
    try:
        wanted = requested_range(header, size)
    except ApiError as error:
        assert (error.status, error.code) == (416, "range_not_satisfiable")
        assert error.headers == {"Content-Range": f"bytes */{size}"}
        return
    if wanted is not None:
        assert 0 <= wanted.first <= wanted.last < size


async def range_request(api: Api, url: str, header: str) -> tuple[int, dict[str, str], bytes]:
    async with api.client.get(url, headers={**api.auth, "Range": header}) as response:
        return response.status, dict(response.headers), await response.read()


async def test_malformed_ranges_over_http_are_416_json_with_content_range(
    make_api: Maker,
) -> None:
    api = await make_api()
    (listed,) = await api.calls(q="79057778899")
    call = await api.get(f"/api/v1/calls/{listed['id']}")
    part = call["recordings"][0]
    original = sorted(BLIND.iterdir())[0].read_bytes()
    # Not the empty ones (a client sends no value) nor those over aiohttp's 8190-byte limit.
    tried = [h for h in MALFORMED if h.strip() and len(h) < 8000] + past_the_end(len(original))
    assert len(tried) > 40
    for header in tried:
        status, headers, body = await range_request(api, part["url"], header)
        assert status == 416, (header, status)
        assert headers["Content-Type"].startswith("application/json"), header
        assert headers["Content-Range"] == f"bytes */{len(original)}", header
        assert b'"range_not_satisfiable"' in body, header
    status, _, body = await range_request(api, part["url"], "bytes=0-1,5-6")
    assert (status, body) == (200, original)
    status, _, body = await range_request(api, part["url"], "items=0-5")
    assert (status, body) == (200, original)
    status, headers, body = await range_request(api, part["url"], "bytes=-10, ")
    assert (status, body) == (206, original[-10:])
    size = len(original)
    assert headers["Content-Range"] == f"bytes {size - 10}-{size - 1}/{size}"
    # An If-Range older than the file makes the Range void: the whole file, even a bad Range.
    async with api.client.get(
        part["url"],
        headers={**api.auth, "Range": "bytes=-0", "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"},
    ) as response:
        assert response.status == 200
        assert await response.read() == original
    # The merged download answers Range the same way.
    status, headers, body = await range_request(api, call["recording_url"], "bytes=-0")
    assert status == 416
    assert b'"range_not_satisfiable"' in body
    assert headers["Content-Range"].startswith("bytes */")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(header=HEADER_TEXT.filter(bool) | BYTES_SPECS)
async def test_no_range_header_makes_a_5xx_or_an_empty_error(make_api: Maker, header: str) -> None:
    api = await make_api()
    (listed,) = await api.calls(q="79057778899")
    url = (await api.get(f"/api/v1/calls/{listed['id']}"))["recordings"][0]["url"]
    original = sorted(BLIND.iterdir())[0].read_bytes()
    status, headers, body = await range_request(api, url, header)
    assert status in (200, 206, 416), (header, status, body[:200])
    if status == 416:
        assert b'"range_not_satisfiable"' in body
        assert headers["Content-Range"] == f"bytes */{len(original)}"
    elif status == 206:
        span, total = headers["Content-Range"].removeprefix("bytes ").split("/")
        first, last = (int(n) for n in span.split("-"))
        assert (int(total), body) == (len(original), original[first : last + 1])
    else:
        assert body == original


# -- point 6d: the merged-recordings cache is private -----------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory the fallback uses, kept inside the test's own."""
    fallback = tmp_path / "tmp"
    fallback.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(fallback))
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    return fallback


async def test_the_default_cache_is_a_private_per_user_directory(
    tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    database = open_database(f"sqlite+aiosqlite:///{tmp_path / 'journal.sqlite3'}")
    try:
        await upgrade(database)
        app = init_app(with_directories(tmp_path, BLIND), await make_journal(database))
        cache = app[MERGED].directory
    finally:
        await database.dispose()
    assert cache == tmp_path / "xdg" / "pbxjournal" / "merged"
    assert mode(cache) == mode(cache.parent) == 0o700
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_directory() == tmp_path / "home" / ".cache" / "pbxjournal" / "merged"
    monkeypatch.setenv("CACHE_DIRECTORY", f"{tmp_path / 'systemd'}:{tmp_path / 'other'}")
    assert default_cache_directory() == tmp_path / "systemd" / "merged"


def test_a_merge_cache_readable_by_others_is_made_private(
    tmp_path: Path, private_tmp: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    cache.chmod(0o755)
    assert MergedRecordings(cache).directory == cache
    assert mode(cache) == 0o700


@pytest.mark.parametrize("how", ["group-writable", "world-writable", "shared-parent", "foreign"])
def test_an_unsafe_merge_cache_is_refused_for_a_fresh_private_one(
    tmp_path: Path, private_tmp: Path, how: str
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    if how == "group-writable":
        cache.chmod(0o770)
    elif how == "world-writable":
        cache.chmod(0o777)
    elif how == "shared-parent":
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o777)  # no sticky bit: anyone may swap ``merged`` for their own
        cache = shared / "merged"
        cache.mkdir(mode=0o700)
    elif os.geteuid() == 0:
        os.chown(cache, 65534, 65534)
        cache.chmod(0o700)
    else:
        cache = Path("/")  # root's, not ours
    with capture_logs() as logs:
        merged = MergedRecordings(cache)
    assert merged.directory != cache
    assert merged.directory.parent == private_tmp
    assert mode(merged.directory) == 0o700
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert warning["directory"] == str(cache)
    merged.get(sorted(BLIND.iterdir())[:1], "wav")
    assert [p.suffix for p in merged.directory.iterdir()] == [".wav"]
