"""Captures: reading them as recorded, writing them verbatim, recording a live session."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from connector.ami import AmiDisconnected
from connector.capture import (
    READ_SIZE,
    CaptureChunk,
    CaptureWriter,
    iter_capture_messages,
    read_capture_chunks,
    record_session,
    recvlog_path,
)
from connector.events import AmiEvent, is_journal_message, normalize, parse_message
from connector.fakepbx import BANNER, FakePbx
from tests.ami_helpers import ami_settings, comparable, serving, streamed_events, trace

ROOT = Path(__file__).resolve().parent.parent


def recorded_events(path: Path) -> list[AmiEvent]:
    """The journal events of a recorded capture, as a replay would see them."""
    return [
        normalize(parse_message(m.raw), m.receive_time or 0.0)
        for m in iter_capture_messages(path)
        if not m.raw.startswith(b"Response:") and is_journal_message(m.raw)
    ]


def test_a_written_capture_reads_back_in_the_same_reads(tmp_path: Path) -> None:
    reads = [
        CaptureChunk(1795837371.248568, BANNER),
        CaptureChunk(1795837371.248669, b"Response: Success\r\nMessage: Authentication accepted"),
        CaptureChunk(1795837371.25, "\r\n\r\nEvent: Newchannel\r\nCallerIDName: Ив".encode()),
        CaptureChunk(1795837372.5, "анова\r\n\r\n".encode()),
    ]
    path = tmp_path / "out.ami"
    with CaptureWriter(path) as writer:
        for read in reads:
            writer.write(read.time or 0.0, read.data)
        writer.write(1795837373.0, b"")  # an empty read leaves no trace
    assert writer.bytes_written == sum(len(r.data) for r in reads)

    assert read_capture_chunks(path) == reads
    assert path.read_bytes() == b"".join(r.data for r in reads)
    messages = list(iter_capture_messages(path))
    assert [(m.receive_time, m.session) for m in messages] == [
        (1795837371.25, 1),
        (1795837372.5, 1),
    ]
    assert parse_message(messages[1].raw).first("CallerIDName") == "Иванова"


def test_a_real_capture_reads_in_its_recorded_reads_and_counts_two_sessions() -> None:
    path = trace("00")
    chunks = read_capture_chunks(path)
    assert len(chunks) == 7
    assert chunks[0] == CaptureChunk(1795837352.754348, BANNER)
    assert b"".join(c.data for c in chunks) == path.read_bytes()

    messages = list(iter_capture_messages(path))
    sessions = [(parse_message(m.raw).event or "response", m.session) for m in messages]
    assert sessions[8:12] == [("Reload", 1), ("Shutdown", 1), ("response", 2), ("FullyBooted", 2)]
    assert messages[9].receive_time == 1795837358.811366


@pytest.mark.parametrize("offset", range(-6, 40))
def test_the_session_of_each_message_does_not_depend_on_where_reads_end(
    tmp_path: Path, offset: int
) -> None:
    data = trace("00").read_bytes()
    boundary = data.index(BANNER, 1)  # the second banner
    cut = boundary + offset
    path = tmp_path / "cut.ami"
    path.write_bytes(data)
    recvlog_path(path).write_text(f"1.0 0 {cut}\n2.0 {cut} {len(data) - cut}\n")

    got = [(m.raw, m.session) for m in iter_capture_messages(path)]
    assert got == [(m.raw, m.session) for m in iter_capture_messages(trace("00"))]


def test_without_a_recvlog_a_capture_is_read_in_64_kib_chunks_without_times(
    tmp_path: Path,
) -> None:
    path = tmp_path / "17.ami"
    path.write_bytes(trace("17").read_bytes())
    chunks = read_capture_chunks(path)
    assert {c.time for c in chunks} == {None}
    assert [len(c.data) for c in chunks[:-1]] == [READ_SIZE] * (len(chunks) - 1)
    assert b"".join(c.data for c in chunks) == path.read_bytes()
    assert [m.raw for m in iter_capture_messages(path)] == [
        m.raw for m in iter_capture_messages(trace("17"))
    ]


@pytest.mark.parametrize(
    ("recvlog", "line", "complaint"),
    [
        (
            "1.0 0 30\n1.1 40 10\n",
            2,
            "read at offset 40 does not follow the previous read, which ended at offset 30",
        ),
        ("1.0 0 30\n1.1 20 10\n", 2, "read at offset 20 does not follow"),
        ("1.0 0 30\n1.1 30 99999\n", 2, "goes past the end"),
        ("1.0 0 30\n1.1 30 100\n", 2, "the recvlog covers 130 of the 2048 bytes"),
        ("1.0 0 30\nbroken line\n", 2, "expected 'unix_time byte_offset length'"),
        ("1.0 0 thirty\n", 1, "as numbers, got '1.0 0 thirty'"),
        ("nan 0 30\n", 1, "time 'nan' is not a unix time"),
        ("1.0 0 0\n", 1, "length > 0"),
    ],
)
def test_a_recvlog_that_does_not_describe_the_file_is_rejected_naming_the_line(
    tmp_path: Path, recvlog: str, line: int, complaint: str
) -> None:
    path = tmp_path / "bad.ami"
    path.write_bytes(trace("00").read_bytes())
    recvlog_path(path).write_text(recvlog)
    where = re.escape(f"{recvlog_path(path)}:{line}: ")
    with pytest.raises(ValueError, match=f"^{where}") as caught:
        read_capture_chunks(path)
    assert complaint in str(caught.value)


async def test_recording_a_fake_pbx_gives_a_capture_that_replays_to_the_same_events(
    tmp_path: Path,
) -> None:
    output = tmp_path / "live.ami"
    async with serving(FakePbx([trace("01")], keep_time=True, speed=0)) as fake:
        stop = asyncio.Event()
        recording = asyncio.create_task(
            record_session(ami_settings(fake.port), output, duration=None, stop=stop)
        )
        await fake.wait_done()
        stop.set()
        written = await recording

    data = output.read_bytes()
    assert written == len(data)
    assert data.startswith(BANNER + b"Response: Success\r\nActionID: ")
    assert re.search(
        rb"Response: Goodbye\r\nActionID: pbxjournal-\d+\r\n"
        rb"Message: Thanks for all the fish\.\r\n\r\n\Z",
        data,
    )
    chunks = read_capture_chunks(output)  # the recvlog describes the file
    times = [c.time for c in chunks if c.time is not None]
    assert len(times) == len(chunks) and times == sorted(times)
    assert comparable(recorded_events(output)) == comparable(streamed_events(trace("01")))
    # The stream part is byte for byte what the PBX sent.
    raws = [m.raw for m in iter_capture_messages(output)]
    originals = [m.raw for m in iter_capture_messages(trace("01"))]
    assert raws[2:-1] == originals[2:]


async def test_recording_stops_with_a_clear_error_when_the_pbx_goes_away(tmp_path: Path) -> None:
    output = tmp_path / "restart.ami"
    async with serving(FakePbx([trace("00")], keep_time=True, speed=0)) as fake:
        settings = ami_settings(fake.port)
        with pytest.raises(AmiDisconnected) as caught:
            await record_session(settings, output, duration=5.0, stop=None)
    assert str(caught.value).startswith(f"AMI connection to 127.0.0.1:{fake.port} lost after ")
    assert "Asterisk is shutting down (Shutdown event)" in str(caught.value)
    events = [e.name for e in recorded_events(output)]
    assert events == ["FullyBooted", "Reload", "Shutdown"]


async def test_the_capture_command_records_a_live_session_for_its_duration(
    tmp_path: Path,
) -> None:
    output = tmp_path / "cli.ami"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBXJOURNAL_")}
    async with serving(FakePbx([trace("01")], keep_time=True, speed=0)) as fake:
        env |= {
            "PBXJOURNAL_AMI__HOST": "127.0.0.1",
            "PBXJOURNAL_AMI__PORT": str(fake.port),
            "PBXJOURNAL_AMI__USERNAME": "journal",
            "PBXJOURNAL_AMI__SECRET": "s3cret",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pbxjournal",
            "capture",
            "-o",
            str(output),
            "--duration",
            "0.5",
            cwd=ROOT,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(20):
            _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert f"captured {output.stat().st_size} bytes to {output}" in stderr.decode()
    assert comparable(recorded_events(output)) == comparable(streamed_events(trace("01")))
