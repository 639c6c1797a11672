"""systemd integration: the notify/watchdog protocol over a real datagram socket standing in
for systemd's NOTIFY_SOCKET, SIGHUP reload, and the unit file itself."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from connector.fakepbx import FakePbx
from pbxjournal.daemon import Daemon
from pbxjournal.sdnotify import Notifier, watchdog_interval
from tests.daemon_support import daemon_settings
from tests.scenarios import EMPLOYEES, capture

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """What systemd listens on: a Unix datagram socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[tuple[float, str]]:
    messages = []
    while True:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return messages
        messages.append((time.monotonic(), data.decode()))


def test_watchdog_interval_follows_watchdog_usec_and_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert (
        watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    )
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None


def test_a_full_notify_queue_never_blocks(systemd_socket: socket.socket, tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    started = time.monotonic()
    results = [notifier.notify(watchdog=1) for _ in range(1000)]  # nobody reads
    assert time.monotonic() - started < 1.0
    assert results[0] is True and results[-1] is False
    notifier.close()


def test_notifier_is_silent_without_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.notify(ready=1) is False


def test_notifier_speaks_to_an_abstract_socket() -> None:
    name = f"pbxjournal-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        with Notifier({"NOTIFY_SOCKET": "@" + name}) as notifier:
            assert notifier.notify(ready=1, status="ok")
        assert sock.recv(100) == b"READY=1\nSTATUS=ok"
    finally:
        sock.close()


async def test_daemon_says_ready_feeds_the_watchdog_and_says_stopping(
    systemd_socket: socket.socket, tmp_path: Path
) -> None:
    pbx = FakePbx([capture("01-incoming-answered-direct")], speed=0)
    port = await pbx.start()
    settings = daemon_settings(port, tmp_path / "journal.sqlite3")
    notifier = Notifier(
        {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"}  # 0.2 s
    )
    daemon = Daemon(settings, notifier=notifier)
    runner = asyncio.create_task(daemon.run())
    messages: list[str] = []
    for _ in range(400):  # READY comes once the database is migrated (a fresh one here)
        await asyncio.sleep(0.05)
        messages.extend(text for _, text in received(systemd_socket))
        if any(m.startswith("READY=1") for m in messages):
            break
    for _ in range(12):  # systemd reads as messages come
        await asyncio.sleep(0.05)
        messages.extend(text for _, text in received(systemd_socket))
    daemon.stop()
    await asyncio.wait_for(runner, 10)
    await pbx.close()
    messages.extend(text for _, text in received(systemd_socket))
    # While the journal is opened (migrated), systemd is asked for more time to start; then
    # READY, and no such request after it.
    ready = next(i for i, m in enumerate(messages) if m.startswith("READY=1"))
    assert messages[ready].startswith("READY=1\nSTATUS=")
    assert messages[:ready] and all(
        m.startswith("EXTEND_TIMEOUT_USEC=30000000\nSTATUS=opening the journal database")
        for m in messages[:ready]
    )
    assert not any(m.startswith("EXTEND_TIMEOUT_USEC") for m in messages[ready:])
    watchdog = [m for m in messages if m == "WATCHDOG=1"]
    assert len(watchdog) >= 4  # every 0.05 s for 0.6 s, give or take a busy machine
    assert messages[-1].startswith("STOPPING=1")


async def test_watchdog_stays_silent_while_the_event_loop_is_blocked(
    systemd_socket: socket.socket, tmp_path: Path
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"})
    task = asyncio.create_task(notifier.run_watchdog())
    await asyncio.sleep(0.35)
    before = len(received(systemd_socket))
    blocked_at = time.monotonic()
    time.sleep(0.6)  # noqa: ASYNC251 - a bug blocks the loop: systemd must hear nothing
    unblocked_at = time.monotonic()
    await asyncio.sleep(0.05)
    after_block = received(systemd_socket)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert before >= 2
    # The round that overslept sends nothing; the next ping needs a full, punctual round.
    assert all(at - unblocked_at >= 0 or at < blocked_at for at, _ in after_block)
    assert not [m for at, m in after_block if at - unblocked_at < 0.04]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
async def test_sighup_reloads_employees_without_dropping_the_ami_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pbxjournal.toml"
    config.write_text('[employees]\n101 = "Ivanova Anna"\n[log]\nlevel = "info"\n', "utf-8")
    pbx = FakePbx([capture("01-incoming-answered-direct")], speed=0)
    port = await pbx.start()
    settings = daemon_settings(port, tmp_path / "journal.sqlite3", config=config)
    with capture_logs() as logs:
        daemon = Daemon(settings, config_path=config)
        runner = asyncio.create_task(daemon.run())
        # Reload once the AMI session is up (opening and migrating the journal comes first).
        for _ in range(200):
            if pbx.connections:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        config.write_text(
            '[log]\nlevel = "debug"\n[employees]\n'
            + "".join(f'{k} = "{v}"\n' for k, v in EMPLOYEES.items()),
            "utf-8",
        )
        daemon.reload()
        config.write_text("[employees\nbroken", "utf-8")
        daemon.reload()  # a broken file is refused; the running configuration stays
        await asyncio.sleep(0.1)
        daemon.stop()
        await asyncio.wait_for(runner, 10)
        await pbx.close()
    assert pbx.connections == 1
    assert len(daemon.settings.employees) == 5
    assert daemon.settings.log.level == "debug"
    # The reload reconfigures logging (JSON on a non-terminal stdout): read it there.
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    events = [line["event"] for line in [*logs, *printed]]
    assert "reloaded" in events
    assert "reload failed, keeping the running configuration" in events


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    unit = (ROOT / "systemd" / "pbxjournal.service").read_text("utf-8")
    # verify checks that ExecStart exists: point it at this virtualenv's entry point.
    entry = Path(sys.executable).parent / "pbxjournal"
    unit = unit.replace("/opt/pbxjournal/bin/pbxjournal", str(entry))
    path = tmp_path / "pbxjournal.service"
    path.write_text(unit, "utf-8")
    result = subprocess.run(
        # --man=no: the Documentation= pages are not ours to render (man-db may be absent).
        [analyze, "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "pbxjournal.service" not in result.stderr, result.stderr


def test_unit_file_is_hardened_and_uses_the_notify_protocol() -> None:
    unit = (ROOT / "systemd" / "pbxjournal.service").read_text("utf-8")
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "User=pbxjournal",
        "StateDirectory=pbxjournal",
        "ConfigurationDirectory=pbxjournal",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "ReadOnlyPaths=-/var/spool/asterisk/monitor",
    ):
        assert line in unit, line
    sysusers = (ROOT / "systemd" / "pbxjournal.sysusers.conf").read_text("utf-8")
    assert sysusers.splitlines()[-1].split()[:2] == ["u", "pbxjournal"]


async def test_a_long_migration_keeps_asking_systemd_for_time_to_start(
    systemd_socket: socket.socket, tmp_path: Path
) -> None:
    """A start that migrates a big journal outlasts the unit's TimeoutStartSec: while the
    journal is opened the daemon renews EXTEND_TIMEOUT_USEC, so systemd neither kills nor
    restarts a migration (which would start over every time). Here the database is held
    locked by another connection, so opening it waits as a long migration would."""
    database = tmp_path / "journal.sqlite3"
    blocker = sqlite3.connect(database)
    blocker.execute("BEGIN EXCLUSIVE")
    pbx = FakePbx([capture("01-incoming-answered-direct")], speed=0)
    port = await pbx.start()
    settings = daemon_settings(port, database)
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    notifier.extend_every = 0.05
    daemon = Daemon(settings, notifier=notifier)
    runner = asyncio.create_task(daemon.run())
    messages: list[str] = []
    try:
        await asyncio.sleep(0.6)
        messages.extend(text for _, text in received(systemd_socket))
        assert len(messages) >= 4, messages  # renewed, while nothing else was said
        assert all(m.startswith("EXTEND_TIMEOUT_USEC=30000000\n") for m in messages)
    finally:
        blocker.rollback()
        blocker.close()
    for _ in range(400):
        await asyncio.sleep(0.05)
        messages.extend(text for _, text in received(systemd_socket))
        if any(m.startswith("READY=1") for m in messages):
            break
    daemon.stop()
    await asyncio.wait_for(runner, 10)
    await pbx.close()
    ready = next(i for i, m in enumerate(messages) if m.startswith("READY=1"))
    assert not any(m.startswith("EXTEND_TIMEOUT_USEC") for m in messages[ready:])
