"""What an admin sees when pbxjournal cannot start, and ``check-config`` / ``--version``.

The real command in a subprocess, against real failures: a directory that does not exist,
an immutable file (chattr +i), a port nobody listens on, a port another socket holds; and
``check-config`` against the real fake PBX.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from config import load_settings
from connector.fakepbx import FakePbx
from pbxjournal.daemon import spool_path
from pbxjournal.startup import sqlite_path
from tests.ami_helpers import serving
from tests.scenarios import RECORDINGS

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pbxjournal(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PBXJOURNAL_")}
    environ.update(
        {
            # Nothing listens on port 1: the AMI side is never reached in these tests.
            "PBXJOURNAL_AMI__PORT": "1",
            "PBXJOURNAL_HTTP__LISTEN": f"127.0.0.1:{free_port()}",
            "PBXJOURNAL_LOG__FORMAT": "json",
        }
    )
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pbxjournal", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def human_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What the command printed for a person (the JSON log lines aside)."""
    return [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and not line.startswith("{")
    ]


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = human_lines(result)
    assert len(lines) == 2, lines  # the failure, and its hint
    assert lines[0].startswith("pbxjournal run: ")
    assert lines[1].startswith("  hint: ")
    for word in words:
        assert word in lines[0], lines


def test_a_journal_in_a_directory_that_does_not_exist(tmp_path: Path) -> None:
    database = tmp_path / "missing" / "journal.sqlite3"
    result = pbxjournal("run", env={"PBXJOURNAL_STORAGE__URL": f"sqlite+aiosqlite:///{database}"})
    assert_one_line(result, 3, str(database), "does not exist")


def test_the_file_checked_at_start_is_the_file_sqlalchemy_opens(tmp_path: Path) -> None:
    """A percent-encoded URL names a file with a space: the start's check and the spool beside
    the journal read it as the engine does (they once split the URL by hand)."""
    database = tmp_path / "with space" / "journal.sqlite3"
    url = "sqlite+aiosqlite:///" + str(database).replace(" ", "%20")
    assert sqlite_path(url) == database
    assert sqlite_path(url + "?timeout=5") == database
    settings = load_settings(None, environ={"PBXJOURNAL_STORAGE__URL": url})
    assert spool_path(settings) == database.with_name("journal.sqlite3-spool-main.jsonl")
    assert make_url(url).database == str(database)
    for other in ("sqlite+aiosqlite:///:memory:", "sqlite://", "postgresql+asyncpg://h/db", "::"):
        assert sqlite_path(other) is None, other
    # The start refuses the missing directory by its real name.
    result = pbxjournal("run", env={"PBXJOURNAL_STORAGE__URL": url})
    assert_one_line(result, 3, str(database), "does not exist")


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], check=False).returncode:
        pytest.skip("chattr +i is not available on this file system")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_an_immutable_journal_file(tmp_path: Path) -> None:
    database = tmp_path / "journal.sqlite3"
    database.write_bytes(b"")
    with immutable(database):
        result = pbxjournal(
            "run", env={"PBXJOURNAL_STORAGE__URL": f"sqlite+aiosqlite:///{database}"}
        )
    assert_one_line(result, 3, str(database), "read-only")


def test_a_postgresql_that_refuses_connections() -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+asyncpg://journal:s3cret-pw@127.0.0.1:{port}/journal"
    result = pbxjournal("run", env={"PBXJOURNAL_STORAGE__URL": url})
    assert_one_line(result, 3, f"127.0.0.1:{port}/journal", "connection refused")
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_the_http_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = pbxjournal(
            "run",
            env={
                "PBXJOURNAL_STORAGE__URL": f"sqlite+aiosqlite:///{tmp_path / 'j.sqlite3'}",
                "PBXJOURNAL_HTTP__LISTEN": f"127.0.0.1:{port}",
            },
        )
    assert_one_line(result, 4, f"127.0.0.1:{port}", "address already in use")


def test_likely_mistakes_are_warned_about_at_start(tmp_path: Path) -> None:
    """A missing recordings directory, no API client, a relative SQLite path: warnings
    (the run then fails on the missing directory of the relative path, on purpose)."""
    missing = tmp_path / "no-such-recordings"
    result = pbxjournal(
        "run",
        env={
            "PBXJOURNAL_STORAGE__URL": "sqlite+aiosqlite:///no-such-dir/journal.sqlite3",
            "PBXJOURNAL_RECORDINGS__DIRECTORIES": json.dumps([str(missing)]),
        },
    )
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    warnings = {r["event"]: r for r in records if r["level"] == "warning"}
    recordings = warnings["recordings directory does not exist: calls will show no recordings"]
    assert recordings["directory"] == str(missing)
    assert "no [[http.clients]] configured: every API request will be refused with 401" in (
        warnings
    )
    relative = warnings[
        "storage.url names a relative SQLite path: it depends on the working directory"
    ]
    assert relative["resolves_to"] == str(ROOT / "no-such-dir" / "journal.sqlite3")
    assert result.returncode == 3


def test_version() -> None:
    from importlib.metadata import version

    result = pbxjournal("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"pbxjournal {version('pbxjournal')}"


async def test_check_config_checks_the_ami_login_the_journal_and_the_directories(
    tmp_path: Path,
) -> None:
    recordings = RECORDINGS / "01-incoming-answered-direct"
    async with serving(FakePbx([], username="journal", secret="right")) as fake:
        env = {
            "PBXJOURNAL_AMI__PORT": str(fake.port),
            "PBXJOURNAL_AMI__USERNAME": "journal",
            "PBXJOURNAL_AMI__SECRET": "right",
            "PBXJOURNAL_STORAGE__URL": f"sqlite+aiosqlite:///{tmp_path / 'journal.sqlite3'}",
            "PBXJOURNAL_RECORDINGS__DIRECTORIES": json.dumps([str(recordings)]),
            "PBXJOURNAL_HTTP__CLIENTS": json.dumps(
                [{"name": "1c", "username": "1c", "password": "pw"}]
            ),
        }
        good = await asyncio.to_thread(pbxjournal, "check-config", env=env)
        bad = await asyncio.to_thread(
            pbxjournal,
            "check-config",
            env={
                **env,
                "PBXJOURNAL_AMI__SECRET": "wrong",
                "PBXJOURNAL_STORAGE__URL": "sqlite+aiosqlite:////no-such-dir/j.sqlite3",
                "PBXJOURNAL_RECORDINGS__DIRECTORIES": json.dumps([str(tmp_path / "none")]),
            },
        )
    assert good.returncode == 0, good.stdout
    lines = good.stdout.splitlines()
    assert any(line.startswith("ok    ami") and "logged in as 'journal'" in line for line in lines)
    assert any(line.startswith("ok    journal") and "will create it" in line for line in lines)
    assert any(line.startswith("ok    recordings") for line in lines)
    assert lines[-1] == "configuration ok"
    assert not (tmp_path / "journal.sqlite3").exists()  # it changes nothing
    assert bad.returncode == 1
    failed = [line for line in bad.stdout.splitlines() if line.startswith("FAIL")]
    assert [line.split()[1] for line in failed] == ["ami", "journal", "recordings"]
    assert "refused" in failed[0]
    assert "wrong" not in bad.stdout  # the secret is never printed
    assert bad.stdout.splitlines()[-1] == "3 check(s) failed"


@pytest.mark.parametrize(
    "command",
    [
        ["migrate"],
        ["calls"],
        ["replay", str(ROOT / "tests/data/ami-traces/01-incoming-answered-direct.ami")],
    ],
)
def test_the_tools_say_the_same_in_one_line(tmp_path: Path, command: list[str]) -> None:
    database = tmp_path / "missing" / "journal.sqlite3"
    url = f"sqlite+aiosqlite:///{database}"
    args = [*command, "--database", url]
    result = pbxjournal(*args)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    lines = human_lines(result)
    assert lines == [
        f"pbxjournal {command[0]}: cannot open the journal {database}: directory "
        f"{database.parent} does not exist",
        "  hint: create the directory and give it to the daemon's user (install -d -o "
        "pbxjournal -g pbxjournal DIR), or set storage.url",
    ]


def test_a_spool_in_a_directory_that_does_not_exist_is_not_created(tmp_path: Path) -> None:
    spool = tmp_path / "no-such-dir" / "spool.jsonl"
    result = pbxjournal(
        "run",
        env={
            "PBXJOURNAL_STORAGE__URL": f"sqlite+aiosqlite:///{tmp_path / 'journal.sqlite3'}",
            "PBXJOURNAL_WRITER__SPOOL": str(spool),
        },
    )
    assert_one_line(result, 3, str(spool), "does not exist")
    assert not spool.parent.exists()


async def test_check_config_tells_whether_the_ami_user_may_originate(tmp_path: Path) -> None:
    """A client with the originate scope needs an AMI user with the originate permission:
    ``ListCommands`` lists only what the user may call (the fake lists Originate unless it
    refuses it as Asterisk refuses a user without the permission)."""
    fake = FakePbx([], click_to_call=ROOT / "tests/data/ami-traces/18-click-to-call-originate.ami")
    async with serving(fake):
        env = {
            "PBXJOURNAL_AMI__PORT": str(fake.port),
            "PBXJOURNAL_STORAGE__URL": f"sqlite+aiosqlite:///{tmp_path / 'journal.sqlite3'}",
            "PBXJOURNAL_RECORDINGS__DIRECTORIES": json.dumps([str(RECORDINGS)]),
            "PBXJOURNAL_HTTP__CLIENTS": json.dumps(
                [{"name": "1c", "token": "t0ken", "scopes": ["read", "write", "originate"]}]
            ),
        }
        allowed = await asyncio.to_thread(pbxjournal, "check-config", env=env)
        fake.originate_error = "Permission denied"
        refused = await asyncio.to_thread(pbxjournal, "check-config", env=env)
        plain = await asyncio.to_thread(
            pbxjournal,
            "check-config",
            env={**env, "PBXJOURNAL_HTTP__CLIENTS": json.dumps([{"name": "1c", "token": "t0ken"}])},
        )
    assert allowed.returncode == 0, allowed.stdout
    assert any(
        line.startswith("ok    originate") and "click-to-call for 1c" in line
        for line in allowed.stdout.splitlines()
    )
    assert refused.returncode == 1
    (failed,) = [line for line in refused.stdout.splitlines() if line.startswith("FAIL")]
    assert "originate" in failed and "manager.conf" in failed
    # Nobody may click-to-call: nothing to check.
    assert plain.returncode == 0
    assert "originate" not in plain.stdout
