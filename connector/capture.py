"""AMI captures: reading and writing ``.ami`` files and their ``.recvlog`` companions.

Theory of operation
-------------------
A capture is the verbatim byte stream an Asterisk manager session sent: the banner line,
the login response, then every message. Its companion ``NAME.ami.recvlog`` has one line per
TCP read on the capturing side, ``unix_time byte_offset length``, so replaying a capture in
those chunks reproduces the real packet boundaries and timing. Without a recvlog the file is
read in fixed 64 KiB chunks with no time.

:func:`read_capture_chunks` returns those chunks, checking the recvlog against the file (a
bad line is a ``ValueError`` naming the file and line). :func:`iter_capture_messages` frames
them with the same :class:`~connector.events.MessageFramer` the live transport uses and
numbers sessions by banner: a capture that spans a PBX restart holds two.

:class:`CaptureWriter` writes both files as bytes arrive and flushes after each read, so an
interrupted capture is still valid. :func:`record_session` logs in through the live transport
of :mod:`connector.ami` and feeds every byte received into a writer.

Reading needs no event loop and does not import the transport, so the replay tool can use
it without panoramisk.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

from connector.events import BANNER_PREFIX, MessageFramer

if TYPE_CHECKING:
    from connector.ami import AmiSettings

__all__ = [
    "READ_SIZE",
    "CaptureChunk",
    "CaptureWriter",
    "CapturedMessage",
    "iter_capture_messages",
    "read_capture_chunks",
    "record_session",
    "recvlog_path",
]

#: Chunk size used for a capture that has no recvlog.
READ_SIZE = 64 * 1024

# A message end followed by a banner: where a capture crosses into a new session.
_SESSION_START = b"\r\n\r\n" + BANNER_PREFIX


@dataclass(frozen=True, slots=True)
class CaptureChunk:
    """One TCP read of a capture: when it arrived (None without a recvlog) and its bytes."""

    time: float | None
    data: bytes


@dataclass(frozen=True, slots=True)
class CapturedMessage:
    """One framed message of a capture.

    ``receive_time`` is the time of the read that completed the message (None without a
    recvlog); ``session`` counts the banners seen so far (0 for a capture that starts
    mid-session without a banner).
    """

    receive_time: float | None
    raw: bytes
    session: int


def recvlog_path(path: Path) -> Path:
    """The recvlog companion of a capture: ``NAME.ami`` → ``NAME.ami.recvlog``."""
    return path.with_name(path.name + ".recvlog")


def read_capture_chunks(path: Path) -> list[CaptureChunk]:
    """Read a capture in its recorded TCP reads, or in 64 KiB chunks without a recvlog.

    Raises ``ValueError`` naming the recvlog line when the recvlog does not describe the
    file exactly: every line ``time offset length``, reads contiguous from offset 0 and
    covering the whole file.
    """
    data = Path(path).read_bytes()
    log_path = recvlog_path(Path(path))
    if not log_path.exists():
        return [
            CaptureChunk(None, data[start : start + READ_SIZE])
            for start in range(0, len(data), READ_SIZE)
        ]
    chunks: list[CaptureChunk] = []
    expected = 0
    last_line = 0
    with log_path.open(encoding="ascii", errors="replace") as log:
        for lineno, line in enumerate(log, start=1):
            if not line.strip():
                continue
            last_line = lineno
            stamp, offset, length = _parse_recvlog_line(log_path, lineno, line)
            where = f"{log_path}:{lineno}"
            if offset != expected:
                raise ValueError(
                    f"{where}: read at offset {offset} does not follow the previous read, "
                    f"which ended at offset {expected}"
                )
            if offset + length > len(data):
                raise ValueError(
                    f"{where}: read of {length} bytes at offset {offset} goes past the end "
                    f"of {path} ({len(data)} bytes)"
                )
            chunks.append(CaptureChunk(stamp, data[offset : offset + length]))
            expected = offset + length
    if expected != len(data):
        where = f"{log_path}:{last_line}" if last_line else str(log_path)
        raise ValueError(
            f"{where}: the recvlog covers {expected} of the {len(data)} bytes of {path}"
        )
    return chunks


def _parse_recvlog_line(log_path: Path, lineno: int, line: str) -> tuple[float, int, int]:
    where = f"{log_path}:{lineno}"
    fields = line.split()
    if len(fields) != 3:
        raise ValueError(f"{where}: expected 'unix_time byte_offset length', got {line.strip()!r}")
    try:
        stamp = float(fields[0])
        offset = int(fields[1])
        length = int(fields[2])
    except ValueError:
        raise ValueError(
            f"{where}: expected 'unix_time byte_offset length' as numbers, got {line.strip()!r}"
        ) from None
    if not math.isfinite(stamp) or stamp < 0:
        raise ValueError(f"{where}: time {fields[0]!r} is not a unix time")
    if offset < 0 or length <= 0:
        raise ValueError(f"{where}: offset must be >= 0 and length > 0, got {offset} {length}")
    return stamp, offset, length


def iter_capture_messages(path: Path) -> Iterator[CapturedMessage]:
    """Frame a capture into messages, with receive times and session numbers."""
    framer = MessageFramer()
    tail = b""
    for chunk in read_capture_chunks(path):
        for piece in _split_at_sessions(tail, chunk.data):
            for raw in framer.feed(piece):
                yield CapturedMessage(chunk.time, raw, framer.sessions)
        tail = (tail + chunk.data)[-(len(_SESSION_START) - 1) :]


def _split_at_sessions(tail: bytes, data: bytes) -> list[bytes]:
    """Cut ``data`` just after each message end that is followed by a banner.

    The framer counts a banner when it frames the message after it, so a single feed must
    not return messages from both sides of a banner; ``tail`` (the end of the previous
    chunk) catches a message end split between two reads.
    """
    window = tail + data
    cuts: list[int] = []
    position = window.find(_SESSION_START)
    while position >= 0:
        cut = position + 4 - len(tail)  # just after the "\r\n\r\n", in data coordinates
        if cut > 0:
            cuts.append(cut)
        position = window.find(_SESSION_START, position + 1)
    if not cuts:
        return [data]
    pieces: list[bytes] = []
    start = 0
    for cut in cuts:
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    return [piece for piece in pieces if piece]


class CaptureWriter:
    """Writes a capture and its recvlog as reads arrive; flushes after each read.

    The ``.ami`` file receives the bytes verbatim; the recvlog a line
    ``unix_time byte_offset length`` per read. Use it as a context manager.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.bytes_written = 0
        self._data: IO[bytes] | None = None
        self._log: IO[str] | None = None

    def __enter__(self) -> CaptureWriter:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        self._data = self.path.open("wb")
        self._log = recvlog_path(self.path).open("w", encoding="ascii")

    def write(self, receive_time: float, data: bytes) -> None:
        """Append one read; its recvlog line is written after the bytes it describes."""
        if self._data is None or self._log is None:
            raise RuntimeError(f"capture {self.path} is not open")
        if not data:
            return
        self._data.write(data)
        self._data.flush()
        self._log.write(f"{receive_time:.6f} {self.bytes_written} {len(data)}\n")
        self._log.flush()
        self.bytes_written += len(data)

    def close(self) -> None:
        for handle in (self._data, self._log):
            if handle is not None:
                handle.close()
        self._data = None
        self._log = None


async def record_session(
    settings: AmiSettings,
    output: Path,
    *,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Log in to the AMI and write every byte received to ``output``; return the byte count.

    Records until ``duration`` seconds have passed or ``stop`` is set, then logs off so that
    the capture ends with the ``Goodbye`` response. There is no reconnection: a connection
    lost while recording raises :class:`~connector.ami.AmiDisconnected` (what was received
    so far stays in the file).
    """
    # Imported here so that reading captures does not pull in the transport.
    from connector.ami import AmiDisconnected, open_session

    loop = asyncio.get_running_loop()
    with CaptureWriter(output) as writer:
        session = await open_session(settings, tap=writer.write)
        started = loop.time()
        try:
            waiters: list[asyncio.Task[object]] = [
                asyncio.create_task(session.wait_closed(), name="capture-closed")
            ]
            if stop is not None:
                waiters.append(asyncio.create_task(stop.wait(), name="capture-stop"))
            try:
                await asyncio.wait(waiters, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
            if session.is_closed:
                raise AmiDisconnected(
                    f"AMI connection to {settings.host}:{settings.port} lost after "
                    f"{loop.time() - started:.1f} s of capture ({writer.bytes_written} bytes "
                    f"written to {output}): {session.close_reason}"
                )
            await session.logoff()
        finally:
            await session.close()
        return writer.bytes_written
