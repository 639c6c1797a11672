"""Hostile HTTP clients against the real server on a real port, spoken to over raw sockets.

- Requests aiohttp's own parser rejects are answered with our JSON error, and neither the
  answer nor any log (structlog's or the standard library's) carries the bytes they held:
  credentials, tokens, phone numbers, search terms.
- What a client sends is bounded in time: the request head, the body and the idle time
  between requests each have a timeout, and connections beyond a cap are refused. A long-poll
  that is slow to *answer* is not affected.
- Two ``Authorization`` headers are refused; a client gone in the middle of its body is not a
  database outage.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import io
import json
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from config import ConfigError, HttpSettings, Settings, load_settings
from httpd.app import init_app, start_http
from pbxjournal.logs import configure_logging
from storage.engine import open_database
from tests.db import make_journal
from tests.http_support import CLIENTS, PASSWORD, TOKEN, USER, Seeded, copy_sqlite

BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
NUMBER = "+7 916 123-45-67"
DIGITS = "9161234567"
CYRILLIC = "Иванов"
#: What must never reach a log or be echoed back.
SECRETS = (BASIC, PASSWORD, TOKEN, DIGITS, "916 123", CYRILLIC, CYRILLIC.encode().hex())
AUTH = f"Authorization: Basic {BASIC}\r\n"


@dataclass
class Server:
    port: int
    runner: web.AppRunner

    def connections(self) -> int:
        return len(self.runner.server.connections) if self.runner.server else 0

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def exchange(self, data: bytes, *, within: float = 5.0) -> bytes:
        """Send ``data``, read until the server closes (bounded)."""
        reader, writer = await self.connect()
        try:
            writer.write(data)
            await writer.drain()
            return await read_until_closed(reader, within)
        finally:
            writer.close()


async def read_until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    chunks = []
    async with asyncio.timeout(within):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def limits(**overrides: Any) -> HttpSettings:
    return HttpSettings(listen="127.0.0.1:0", clients=CLIENTS, **overrides)


@contextlib.asynccontextmanager
async def serving(
    sqlite_template: Seeded, tmp_path: Path, http: HttpSettings
) -> AsyncIterator[Server]:
    settings: Settings = dataclasses.replace(sqlite_template.settings, http=http)
    url = copy_sqlite(sqlite_template.path, tmp_path / "journal.sqlite3")
    database = open_database(url)
    journal = await make_journal(database)
    app = init_app(settings, journal, merged_cache=tmp_path / "merged")
    runner = await start_http(app, http)
    try:
        yield Server(int(runner.addresses[0][1]), runner)
    finally:
        await runner.cleanup()
        await database.dispose()


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[list[Any]]:
    """Every structlog event and every standard-library record (any logger, any level)."""
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        captured: list[Any] = events
        yield captured
    captured.extend(caplog.records)


def log_text(logs: list[Any]) -> str:
    parts = []
    for entry in logs:
        if isinstance(entry, logging.LogRecord):
            parts.append(entry.getMessage())
            if entry.exc_info:
                parts.append(logging.Formatter().formatException(entry.exc_info))
            if entry.exc_text:
                parts.append(entry.exc_text)
        else:
            parts.append(repr(entry))
    return "\n".join(parts)


# --- 3: what aiohttp's parser rejects --------------------------------------------------------

HOSTILE = {
    "bare LF line endings": (f"GET /api/v1/calls HTTP/1.1\nHost: x\n{AUTH.strip()}\n\n", 400),
    "folded Authorization header": (
        f"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Basic\r\n {BASIC}\r\n\r\n",
        400,
    ),
    "control character after a Bearer token": (
        f"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\x01\r\n\r\n",
        400,
    ),
    "NUL inside Basic credentials": (
        f"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {BASIC}\x00\r\n\r\n",
        400,
    ),
    "phone number unencoded in the path": (
        f"GET /api/v1/numbers/{NUMBER} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n",
        400,
    ),
    "Cyrillic unencoded in the query": (
        f"GET /api/v1/calls?q={CYRILLIC} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n",
        400,
    ),
    "Cyrillic in a header name": (
        f"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\n{CYRILLIC}: {DIGITS}\r\n{AUTH}\r\n",
        400,
    ),
    "Content-Length with Transfer-Encoding": (
        f"POST /api/v1/calls HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: 3\r\n"
        f"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "invalid method": (f"G{DIGITS} /api/v1/calls HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n", 400),
    "header too large": (
        f"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\nX-Note: {DIGITS * 1000}\r\n{AUTH}\r\n",
        431,
    ),
    "request line too long": (f"GET /api/v1/calls?q={DIGITS * 1000} HTTP/1.1\r\n\r\n", 431),
    "too many headers": (
        "GET /api/v1/calls HTTP/1.1\r\nHost: x\r\n"
        + "".join(f"X-{i}: {DIGITS}\r\n" for i in range(200))
        + f"{AUTH}\r\n",
        431,
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_parser_rejections_answer_json_and_log_no_request_bytes(
    sqlite_template: Seeded, tmp_path: Path, all_logs: list[Any], name: str
) -> None:
    request, expected = HOSTILE[name]
    async with serving(sqlite_template, tmp_path, limits()) as server:
        raw = await server.exchange(request.encode())

    status, headers, body = parse(raw)
    assert status == expected, raw[:300]
    assert headers["content-type"].startswith("application/json"), raw[:300]
    error = json.loads(body)["error"]
    assert error["code"] == ("bad_request" if expected == 400 else "header_too_large")
    assert error["message"]
    text = log_text(all_logs)
    for secret in SECRETS:
        assert secret not in body.decode(), (secret, body)
        assert secret not in text, (secret, text)
    assert "Traceback" not in text
    assert any("http request rejected" in repr(entry) for entry in all_logs)


async def test_a_truncated_chunked_body_is_a_json_400_without_its_bytes(
    sqlite_template: Seeded, tmp_path: Path, all_logs: list[Any]
) -> None:
    request = (
        f"PUT /api/v1/customers/c-9 HTTP/1.1\r\nHost: x\r\n{AUTH}"
        f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        f"zz{DIGITS}\r\n{CYRILLIC}\r\n0\r\n\r\n"
    )
    async with serving(sqlite_template, tmp_path, limits()) as server:
        raw = await server.exchange(request.encode())

    status, headers, body = parse(raw)
    assert status == 400, raw[:300]
    assert headers["content-type"].startswith("application/json")
    text = log_text(all_logs)
    for secret in SECRETS:
        assert secret not in text, (secret, text)
        assert secret not in body.decode()


# --- 6b: two Authorization headers -------------------------------------------------------------


async def test_two_authorization_headers_are_refused(
    sqlite_template: Seeded, tmp_path: Path
) -> None:
    wrong = base64.b64encode(b"intruder:guess").decode()
    request = (
        f"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\n{AUTH}Authorization: Basic {wrong}\r\n"
        "Connection: close\r\n\r\n"
    )
    async with serving(sqlite_template, tmp_path, limits()) as server:
        raw = await server.exchange(request.encode())
        single = await server.exchange(
            f"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\n{AUTH}Connection: close\r\n\r\n".encode()
        )

    status, _, body = parse(raw)
    assert status == 400, raw[:300]
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_header"
    assert "Authorization" in error["message"]
    assert parse(single)[0] == 200


# --- 5: timeouts and the connection cap ------------------------------------------------------


async def test_a_silent_connection_is_closed_after_the_header_timeout(
    sqlite_template: Seeded, tmp_path: Path
) -> None:
    async with serving(sqlite_template, tmp_path, limits(header_timeout=0.3)) as server:
        reader, writer = await server.connect()
        started = time.monotonic()
        raw = await read_until_closed(reader, 5.0)
        elapsed = time.monotonic() - started
        writer.close()

    assert 0.25 <= elapsed < 2.0, elapsed
    status, _, body = parse(raw)
    assert status == 408
    assert json.loads(body)["error"]["code"] == "request_timeout"


@pytest.mark.parametrize("kept_alive", [False, True], ids=["first request", "next request"])
async def test_headers_trickled_a_byte_at_a_time_are_cut_off(
    sqlite_template: Seeded, tmp_path: Path, kept_alive: bool
) -> None:
    request = f"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode()
    async with serving(
        sqlite_template, tmp_path, limits(header_timeout=0.5, idle_timeout=30.0)
    ) as server:
        reader, writer = await server.connect()
        if kept_alive:  # one whole request first; the clock starts again with the next one
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(5.0):
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(int(parse(head)[1]["content-length"]))
            await asyncio.sleep(0.6)  # idle longer than header_timeout: that is allowed
        started = time.monotonic()
        closed = False
        for byte in request:  # one byte every 50 ms: the whole head would take seconds
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    if await reader.read(65536) == b"":
                        closed = True
                        break
        elapsed = time.monotonic() - started
        writer.close()

    assert closed, "the server kept a trickling client"
    assert elapsed < 2.0, elapsed


async def test_a_trickled_body_is_answered_408_after_the_body_timeout(
    sqlite_template: Seeded, tmp_path: Path, all_logs: list[Any]
) -> None:
    head = (
        f"PUT /api/v1/customers/c-9 HTTP/1.1\r\nHost: x\r\n{AUTH}"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    async with serving(
        sqlite_template, tmp_path, limits(header_timeout=5.0, body_timeout=0.5)
    ) as server:
        reader, writer = await server.connect()
        writer.write(head + b'{"name": "')
        await writer.drain()
        started = time.monotonic()
        raw = b""
        async with asyncio.timeout(5.0):
            while not raw:
                with contextlib.suppress(ConnectionError):
                    writer.write(b"a")
                    await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        raw = await reader.read(65536)
                        if not raw:
                            break
            raw += await read_until_closed(reader, 2.0)
        elapsed = time.monotonic() - started
        writer.close()

    assert elapsed < 2.5, elapsed
    status, headers, body = parse(raw)
    assert status == 408, raw[:300]
    assert headers.get("connection", "").lower() == "close"
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert "database unavailable" not in log_text(all_logs)


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
    sqlite_template: Seeded, tmp_path: Path
) -> None:
    async with serving(
        sqlite_template, tmp_path, limits(header_timeout=5.0, idle_timeout=0.4)
    ) as server:
        reader, writer = await server.connect()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5.0):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(parse(head)[1]["content-length"])
            await reader.readexactly(length)
        started = time.monotonic()
        rest = await read_until_closed(reader, 5.0)
        elapsed = time.monotonic() - started
        writer.close()

    assert rest == b""
    assert 0.3 <= elapsed < 2.0, elapsed


async def test_connections_beyond_the_cap_are_refused(
    sqlite_template: Seeded, tmp_path: Path
) -> None:
    async with serving(
        sqlite_template, tmp_path, limits(max_connections=3, header_timeout=10.0)
    ) as server:
        held = [await server.connect() for _ in range(3)]
        for _ in range(100):  # the server has registered them once it answers nothing yet
            if server.connections() == 3:
                break
            await asyncio.sleep(0.01)
        reader, writer = await server.connect()
        raw = await read_until_closed(reader, 5.0)
        writer.close()
        status, _, body = parse(raw)
        assert status == 503
        assert json.loads(body)["error"]["code"] == "too_many_connections"
        # Closing one frees a slot.
        held[0][1].close()
        answer = b""
        for _ in range(100):
            answer = await server.exchange(
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            if answer and parse(answer)[0] != 503:
                break
            await asyncio.sleep(0.02)
        assert parse(answer)[0] in (200, 503) and b"too_many_connections" not in answer
        for _, other in held[1:]:
            other.close()


async def test_a_long_poll_outlives_every_client_timeout(
    sqlite_template: Seeded, tmp_path: Path
) -> None:
    http = limits(header_timeout=0.2, body_timeout=0.2, idle_timeout=0.2)
    async with serving(sqlite_template, tmp_path, http) as server:
        since = 0
        for _ in range(100):  # page through the journal to its end
            page = json.loads(parse(await server.exchange(changes(since, "&limit=1000")))[2])
            since = page["last_version"]
            if len(page["items"]) < 1000:
                break
        started = time.monotonic()
        raw = await server.exchange(changes(since, "&wait=1"))
        elapsed = time.monotonic() - started

    assert parse(raw)[0] == 200, raw[:300]
    assert json.loads(parse(raw)[2])["items"] == []
    assert elapsed >= 0.9, elapsed


def changes(since: int, extra: str) -> bytes:
    return (
        f"GET /api/v1/changes?since={since}{extra} HTTP/1.1\r\nHost: x\r\n{AUTH}"
        "Connection: close\r\n\r\n"
    ).encode()


# --- 5: a client gone in the middle of its body ----------------------------------------------


async def test_a_client_gone_mid_body_is_not_a_database_outage(
    sqlite_template: Seeded, tmp_path: Path, all_logs: list[Any]
) -> None:
    head = (
        f"PUT /api/v1/customers/c-9 HTTP/1.1\r\nHost: x\r\n{AUTH}Expect: 100-continue\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    async with serving(sqlite_template, tmp_path, limits()) as server:
        reader, writer = await server.connect()
        writer.write(head)
        await writer.drain()
        # 100 Continue: the request is in the app, whose handler goes on to read the body.
        async with asyncio.timeout(5.0):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
        writer.write(b'{"name": "')
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()  # a reset: the client is gone in the middle of its body
        for _ in range(500):  # the access line is written once the handler is done
            if any(isinstance(e, dict) and e.get("event") == "http" for e in all_logs):
                break
            await asyncio.sleep(0.01)

    access = [e for e in all_logs if isinstance(e, dict) and e.get("event") == "http"]
    assert access and access[0]["status"] != 503, access
    text = log_text(all_logs)
    assert "database unavailable" not in text, text
    assert "unhandled error" not in text, text


# --- 6c: control characters in the AMI credentials -------------------------------------------

AMI_SECRET = "s3cret\r\nAction: Originate"


@pytest.mark.parametrize(
    ("key", "variable", "value"),
    [
        ("secret", "PBXJOURNAL_AMI__SECRET", AMI_SECRET),
        ("secret", "PBXJOURNAL_AMI__SECRET", "s3cret\x00"),
        ("secret", "PBXJOURNAL_AMI__SECRET", "s3cret\tx"),
        ("username", "PBXJOURNAL_AMI__USERNAME", "pbxjournal\r\nSecret: x"),
        ("username", "PBXJOURNAL_AMI__USERNAME", "pbx\x7fjournal"),
    ],
)
def test_control_characters_in_ami_credentials_are_refused_without_echo(
    tmp_path: Path, key: str, variable: str, value: str
) -> None:
    path = tmp_path / "pbxjournal.toml"
    path.write_text(f"[ami]\n{key} = {json.dumps(value)}\n", encoding="utf-8")

    for source, environ in ((path, {}), (None, {variable: value})):
        with pytest.raises(ConfigError) as caught:
            load_settings(source, environ=environ)
        (problem,) = caught.value.problems
        assert f"ami.{key}" in problem, problem
        assert "control characters" in problem, problem
        if key == "secret":
            assert "s3cret" not in problem, problem
            assert "Originate" not in problem, problem


def test_ordinary_ami_credentials_still_load(tmp_path: Path) -> None:
    path = tmp_path / "pbxjournal.toml"
    path.write_text('[ami]\nusername = "pbxjournal"\nsecret = "пароль s3cret!:#"\n', "utf-8")

    settings = load_settings(path, environ={})

    assert settings.ami.secret == "пароль s3cret!:#"
    assert load_settings(None, environ={"PBXJOURNAL_AMI__SECRET": ""}).ami.secret == ""


async def test_a_corrupt_compressed_body_is_a_json_400_that_does_not_quote_it(
    sqlite_template: Seeded, tmp_path: Path, all_logs: list[Any]
) -> None:
    body = f"{CYRILLIC} {DIGITS}".encode() * 10
    request = (
        f"PUT /api/v1/customers/c-9 HTTP/1.1\r\nHost: x\r\n{AUTH}"
        f"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    async with serving(sqlite_template, tmp_path, limits()) as server:
        raw = await server.exchange(request)

    status, headers, answer = parse(raw)
    assert headers["content-type"].startswith("application/json")
    assert status == 400, raw[:300]
    assert json.loads(answer)["error"]["code"] == "invalid_body"
    text = log_text(all_logs)
    for secret in SECRETS:
        assert secret not in text, (secret, text)
        assert secret not in answer.decode()
    assert "unhandled error" not in text


# --- 3, second line of defence: aiohttp's own loggers carry no exception text ---------------


def test_configured_logging_strips_exception_text_from_aiohttp_loggers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    saved = structlog.get_config()
    caplog.set_level(logging.DEBUG)
    try:
        configure_logging("info", "json", stream=io.StringIO())
        for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access"):
            try:
                raise ValueError(f"Bad status line b'Authorization: Basic {BASIC}'")
            except ValueError:
                logging.getLogger(name).exception("Error handling request from %s", "10.0.0.9")
    finally:
        structlog.configure(**saved)

    records = [r for r in caplog.records if r.name.startswith("aiohttp")]
    assert len(records) == 3
    for record in records:
        assert record.getMessage() == "Error handling request from 10.0.0.9"
        assert record.exc_info is None and not record.exc_text
    assert BASIC not in caplog.text


# --- 5: the unit leaves room for the connections ---------------------------------------------


def test_the_unit_sets_an_open_files_limit_above_the_connection_cap() -> None:
    unit = (Path(__file__).resolve().parent.parent / "systemd" / "pbxjournal.service").read_text()
    (line,) = [line for line in unit.splitlines() if line.startswith("LimitNOFILE=")]
    assert int(line.split("=", 1)[1]) >= 2 * HttpSettings().max_connections + 128
