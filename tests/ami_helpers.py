"""Shared pieces of the AMI transport, capture and fake-PBX tests: real TCP on port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from config import AmiSettings
from connector.ami import AmiConnector, SessionEvent
from connector.capture import iter_capture_messages
from connector.events import (
    AmiEvent,
    AmiMessage,
    MessageFramer,
    is_journal_message,
    normalize,
    parse_message,
)
from connector.fakepbx import FakePbx

TRACES = Path(__file__).resolve().parent / "data" / "ami-traces"


def trace(number: str) -> Path:
    """The capture whose name starts with ``number`` (``"01"``)."""
    (path,) = TRACES.glob(f"{number}-*.ami")
    return path


def ami_settings(port: int, **overrides: Any) -> AmiSettings:
    """Settings for a test: short timeouts, quick reconnects, no ping unless asked."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "username": "journal",
        "secret": "s3cret",
        "connect_timeout": 2.0,
        "action_timeout": 1.0,
        "ping_interval": 60.0,
        "ping_timeout": 1.0,
        "reconnect_min": 0.05,
        "reconnect_max": 0.2,
    }
    values.update(overrides)
    return AmiSettings(**values)


def streamed_events(*captures: Path) -> list[AmiEvent]:
    """The journal events a FakePbx streams from these captures, normalised.

    The fake sends its own FullyBooted and none of the captured responses, so both are left
    out here; times come from the ``Timestamp`` headers, so they compare across runs.
    """
    events: list[AmiEvent] = []
    for path in captures:
        for captured in iter_capture_messages(path):
            if captured.raw.startswith(b"Response:") or not is_journal_message(captured.raw):
                continue
            event = normalize(parse_message(captured.raw), 0.0)
            if event.name != "FullyBooted":
                events.append(event)
    return events


def comparable(events: Iterable[AmiEvent]) -> list[tuple[str, dict[str, str]]]:
    """Events as plain data, FullyBooted (made by the fake per login) left out."""
    return [(e.name, dict(e.headers)) for e in events if e.name != "FullyBooted"]


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``within`` seconds."""
    async with asyncio.timeout(within):
        # Polling: the conditions are counters and lists that no event announces.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


class Recorder:
    """A connector's handler and session hook that keep everything in one timeline."""

    def __init__(self) -> None:
        self.events: list[AmiEvent] = []
        self.sessions: list[SessionEvent] = []
        self.timeline: list[AmiEvent | SessionEvent] = []

    def __call__(self, event: AmiEvent) -> None:
        self.events.append(event)
        self.timeline.append(event)

    def on_session(self, event: SessionEvent) -> None:
        self.sessions.append(event)
        self.timeline.append(event)

    def count(self, kind: str) -> int:
        return sum(1 for s in self.sessions if s.kind == kind)

    def names(self) -> list[str]:
        return [e.name for e in self.events]


@asynccontextmanager
async def running(connector: AmiConnector) -> AsyncIterator[AmiConnector]:
    """Run the connector in a task owned by the test; close it and await it on exit."""
    task = asyncio.create_task(connector.run())
    try:
        yield connector
    finally:
        await connector.close()
        await task


@asynccontextmanager
async def serving(fake: FakePbx) -> AsyncIterator[FakePbx]:
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


class RawClient:
    """A bare AMI client over a real socket: to look at the fake's bytes directly."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = MessageFramer()
        self._ready: list[bytes] = []

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, text: str) -> None:
        self.writer.write(text.replace("\n", "\r\n").encode() + b"\r\n")
        await self.writer.drain()

    async def read_raw(self, within: float = 5.0) -> bytes | None:
        """The next message's bytes, or None at end of stream."""
        async with asyncio.timeout(within):
            while not self._ready:
                data = await self.reader.read(65536)
                if not data:
                    return None
                self._ready.extend(self.framer.feed(data))
        return self._ready.pop(0)

    async def read(self, within: float = 5.0) -> AmiMessage | None:
        raw = await self.read_raw(within)
        return None if raw is None else parse_message(raw)

    async def login(self, username: str = "journal", secret: str = "s3cret") -> AmiMessage:
        await self.send(f"Action: Login\nActionID: l1\nUsername: {username}\nSecret: {secret}\n")
        response = await self.read()
        assert response is not None
        return response

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError):
            await self.writer.wait_closed()
