"""Issue "Holes found by attacking the daemon", points 8-10: the journal writer.

8. A finished call is never dropped: while the database is away the calls go to the spool
   (fsynced, on the local disk), memory stays bounded by ``writer.max_pending``, and the spool
   is written out, each call once, when the database is back (and by the next start).
9. ``/healthz`` answers 503 naming the error while journal writes fail (a full disk), 200 again
   once they succeed.
10. A stop under a backlog ends within ``writer.stop_timeout``; what was queued is spooled and
   written, once, by the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import storage.engine
from bench.daemons import child_env, free_port, pbxjournal_command, write_config
from bench.synth import SyntheticCapture, build_capture, load_templates
from connector.fakepbx import FakePbx
from pbxjournal import daemon as daemon_module
from pbxjournal.daemon import Daemon, spool_path
from pbxjournal.writer import CallSpool, JournalWriter, call_from_json, call_to_json
from tests.daemon_support import daemon_settings
from tests.scenarios import all_slugs, assemble_capture

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and mounts")


async def until(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def rows(database: Path) -> Counter[str]:
    """Rows per conversation id, read with a connection of its own."""
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as connection:
        return Counter(str(c) for (c,) in connection.execute("SELECT conversation_id FROM calls"))


def synthetic(tmp_path: Path, calls: int, seed: int) -> SyntheticCapture:
    return build_capture(
        tmp_path / f"synthetic-{seed}.ami",
        calls=calls,
        concurrency=20,
        seed=seed,
        recvlog=False,
        journal_only=True,
        templates=load_templates(),
    )


@contextlib.contextmanager
def locked(database: Path) -> Iterator[None]:
    """Another connection holds SQLite's exclusive lock: every write of the daemon fails."""
    blocker = sqlite3.connect(database, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        blocker.rollback()
        blocker.close()


def test_a_spool_line_is_the_call_exactly() -> None:
    calls = [call for slug in all_slugs() for call in assemble_capture(slug).calls]
    assert len(calls) > 30
    for call in calls:
        line = call_to_json(call)
        assert "\n" not in line
        assert call_from_json(line) == call


def test_the_spool_keeps_what_is_not_committed_and_cuts_a_torn_line(tmp_path: Path) -> None:
    calls = assemble_capture("14-two-overlapping-incoming").calls
    spool = CallSpool(tmp_path / "spool.jsonl")
    spool.open()
    spool.append(calls)
    first, offset, lines = spool.read(1)
    assert first == calls[:1] and lines == 1
    spool.committed(offset, lines)
    spool.close()
    with (tmp_path / "spool.jsonl").open("ab") as raw:
        raw.write(b'{"v":1,"call":{"conversation')  # killed in the middle of an append
    again = CallSpool(tmp_path / "spool.jsonl")
    again.open()
    assert again.count == len(calls) - 1
    assert again.read(10)[0] == calls[1:]
    with pytest.raises(RuntimeError, match="in use"):
        CallSpool(tmp_path / "spool.jsonl").open()  # a second daemon on the same spool
    _, offset, lines = again.read(10)
    again.committed(offset, lines)
    assert again.count == 0 and (tmp_path / "spool.jsonl").stat().st_size == 0
    again.close()


# -- 8. a database away while calls flow --------------------------------------------------

MAX_PENDING = 20


async def test_a_database_away_while_calls_flow_loses_no_call_and_memory_stays_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.engine, "SQLITE_BUSY_TIMEOUT_MS", 100)
    # Retries every second at most: the test does not wait out the 30 s of production backoff.
    monkeypatch.setattr(
        daemon_module, "JournalWriter", functools.partial(JournalWriter, retry_max=1.0)
    )
    # The writer's turns: the calls in memory as it decides what to do (write a batch or
    # spool them all), and how many calls had come by then.
    turns: list[tuple[int, int]] = []
    arrived = 0
    submit, spill_due = JournalWriter.submit, JournalWriter._spill_due

    def counted(self: JournalWriter, calls: Any) -> None:
        nonlocal arrived
        arrived += len(calls)
        submit(self, calls)

    def noted(self: JournalWriter, now: float) -> bool:
        turns.append((self.pending, arrived))
        return spill_due(self, now)

    monkeypatch.setattr(JournalWriter, "submit", counted)
    monkeypatch.setattr(JournalWriter, "_spill_due", noted)
    capture = synthetic(tmp_path, calls=300, seed=8)
    wanted = {call.conversation_id for call in capture.calls}
    pbx = FakePbx([capture.path], speed=20.0)
    port = await pbx.start()
    database = tmp_path / "journal.sqlite3"
    settings = daemon_settings(
        port, database, extra={"PBXJOURNAL_WRITER__MAX_PENDING": str(MAX_PENDING)}
    )
    daemon = Daemon(settings)
    runner = asyncio.create_task(daemon.run())
    try:
        await until(lambda: daemon.writer is not None and daemon.calls_written > 10, "writes")
        writer = daemon.writer
        assert writer is not None
        high_water: list[int] = []

        async def watch() -> None:
            while True:
                high_water.append(writer.pending)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        with locked(database):
            # A batch the lock waited for may still be on its way back from the writer's
            # thread: count once the writer has met the lock.
            await until(lambda: writer.stats.writable is False, "the writer to meet the lock")
            written = daemon.calls_written
            # Well over max_pending calls end while the database is away.
            await until(lambda: writer.spooled > 5 * MAX_PENDING, "calls to pile up", 60)
            assert daemon.calls_written == written
            assert writer.stats.writable is False
            assert daemon.write_failure is not None and "locked" in daemon.write_failure
        await asyncio.wait_for(pbx.wait_done(), 120)
        await until(lambda: set(rows(database)) >= wanted, "every call in the journal", 60)
        await until(lambda: writer.spooled == 0, "the spool to be written out")
        watcher.cancel()
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, 30)
        await pbx.close(grace=0.1)
    journal = rows(database)
    assert set(journal) == wanted
    assert max(journal.values()) == 1  # none twice
    # Memory held at most max_pending finished calls, plus those that finished during one of
    # the writer's steps (a write waiting out the lock, an fsync of the spool): counted in
    # calls, not in seconds, which a loaded machine stretches. At every turn, what stayed in
    # memory through the step before it is within max_pending: at max_pending it spools.
    steps = list(itertools.pairwise(turns))
    assert len(steps) > 10
    assert all(after - (came - before) <= MAX_PENDING for (_, before), (after, came) in steps)
    most_in_a_step = max(came - before for (_, before), (_, came) in steps)
    assert max(high_water) <= MAX_PENDING + most_in_a_step, (high_water, most_in_a_step)
    assert writer.stats.spooled > 5 * MAX_PENDING
    assert spool_path(settings).stat().st_size == 0  # emptied once all of it was committed
    with contextlib.closing(sqlite3.connect(database)) as connection:
        assert connection.execute("SELECT count(*) FROM open_conversations").fetchone() == (0,)


# -- 9. a full disk: /healthz says so ------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Take every free byte of the file system (a file of zeros until ENOSPC)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (65536, 512, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


async def test_healthz_is_503_naming_the_error_while_writes_fail_and_200_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    monkeypatch.setattr(
        daemon_module, "JournalWriter", functools.partial(JournalWriter, retry_max=0.5)
    )
    capture = synthetic(tmp_path, calls=60, seed=9)
    wanted = {call.conversation_id for call in capture.calls}
    pbx = FakePbx([capture.path], speed=5.0)
    pbx.hold()
    port = await pbx.start()
    with tmpfs(tmp_path / "disk", "32m") as disk:
        database = disk / "journal.sqlite3"
        settings = daemon_settings(
            port, database, extra={"PBXJOURNAL_WRITER__SPOOL": str(tmp_path / "spool.jsonl")}
        )
        daemon = Daemon(settings)
        runner = asyncio.create_task(daemon.run())
        try:
            await until(lambda: daemon.http_port is not None and daemon.ami_connected, "start")
            url = f"http://127.0.0.1:{daemon.http_port}/healthz"
            async with aiohttp.ClientSession() as http:

                async def health() -> tuple[int, dict[str, object]]:
                    await asyncio.sleep(1.05)  # past the probe's one-second cache
                    async with http.get(url) as response:
                        return response.status, await response.json()

                assert (await health())[0] == 200
                filler = fill(disk)
                pbx.release()
                await until(
                    lambda: daemon.writer is not None and daemon.writer.stats.failures > 0,
                    "a failed write",
                )
                status, body = await health()
                assert status == 503, body
                database_health = body["database"]
                assert isinstance(database_health, dict)
                assert database_health["writable"] is False
                assert "database or disk is full" in str(database_health["error"])
                filler.unlink()
                await asyncio.wait_for(pbx.wait_done(), 60)
                await until(lambda: set(rows(database)) >= wanted, "every call written", 60)
                status, body = await health()
                assert status == 200, body
                assert body["database"] == {"writable": True, "error": None}
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 30)
            await pbx.close(grace=0.1)


# -- 10. a stop under a backlog ends in time; the next start writes it ---------------------

STOP_TIMEOUT = 5.0


class Process:
    """``pbxjournal run`` as a subprocess."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *pbxjournal_command(),
            "run",
            "--config",
            str(self.config),
            env=child_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self.reader = asyncio.create_task(self._read(self.process))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            self.lines.append(line.decode(errors="replace"))

    def said(self, event: str) -> list[dict[str, object]]:
        found = []
        for line in self.lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record)
        return found

    async def stop(self, number: int = signal.SIGTERM, seconds: float = 60.0) -> int:
        assert self.process is not None and self.reader is not None
        self.process.send_signal(number)
        code = await asyncio.wait_for(self.process.wait(), seconds)
        await self.reader
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()


async def test_a_stop_under_a_backlog_ends_in_time_and_the_next_start_writes_it_once(
    tmp_path: Path,
) -> None:
    capture = synthetic(tmp_path, calls=400, seed=10)
    wanted = {call.conversation_id for call in capture.calls}
    pbx = FakePbx([capture.path], speed=0, username="u", secret="p")
    pbx.hold()
    port = await pbx.start()
    database = tmp_path / "journal.sqlite3"
    config = tmp_path / "pbxjournal.toml"
    write_config(
        config,
        ami_port=port,
        username="u",
        secret="p",
        pbx_name="main",
        grace=0.2,
        url=f"sqlite+aiosqlite:///{database}",
        recordings=tmp_path,
        http_port=free_port(),
        ami={"reconnect_min": "0.05", "reconnect_max": "0.2"},
    )
    with config.open("a", encoding="utf-8") as extra:
        extra.write(f'\n[writer]\nstop_timeout = "{STOP_TIMEOUT:g}s"\n')
    daemon = Process(config)
    loop = asyncio.get_running_loop()
    try:
        await daemon.start()
        await until(lambda: bool(daemon.said("AMI resync")), "the daemon's login")
        # The database refuses while the whole burst arrives: a backlog of every call.
        with locked(database):
            pbx.release()
            await asyncio.wait_for(pbx.wait_done(), 60)
            # Stopped in the writer's pause between two tries: a try under way would wait
            # out SQLite's busy timeout first (10 s; a blocking call, not cut short).
            failed = len(daemon.said("journal write failed; calls held for retry"))
            await until(
                lambda: len(daemon.said("journal write failed; calls held for retry")) > failed,
                "a failed write",
            )
            began = loop.time()
            code = await daemon.stop(signal.SIGTERM)
            took = loop.time() - began
        assert code == 0, daemon.lines[-5:]
        assert took < STOP_TIMEOUT + 1.0, took
        assert rows(database) == Counter()
        (stopped,) = daemon.said("stopped")
        assert stopped["spooled"] == len(wanted), stopped
        # The next start writes the spool first: every call, once.
        again = Process(config)
        await again.start()
        try:
            await until(lambda: set(rows(database)) >= wanted, "the spooled calls written", 60)
            assert await again.stop(signal.SIGTERM) == 0
        finally:
            again.kill()
    finally:
        daemon.kill()
        await pbx.close(grace=0.1)
    journal = rows(database)
    assert set(journal) == wanted and max(journal.values()) == 1
    assert spool_path_for(database).stat().st_size == 0


def spool_path_for(database: Path) -> Path:
    return database.with_name(f"{database.name}-spool-main.jsonl")
