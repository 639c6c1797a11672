"""End to end, as an admin runs it: ``pbxjournal fake-pbx`` and ``pbxjournal run`` as real
processes, the journal read over HTTP, SIGTERM, and a restart on the same database."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios import EMPLOYEES, RECORDINGS, TRACES

ROOT = Path(__file__).resolve().parent.parent
AUTH = "Basic " + base64.b64encode(b"1c:secret").decode()
SLUGS = [p.name.removesuffix(".ami") for p in sorted(TRACES.glob("[01][0-9]-*.ami"))][1:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, ami_port: int, http_port: int) -> Path:
    employees = "\n".join(f'{ext} = "{name}"' for ext, name in EMPLOYEES.items())
    dirs = json.dumps([str(RECORDINGS / s) for s in SLUGS])
    path = tmp_path / "pbxjournal.toml"
    path.write_text(
        f"""
[ami]
port = {ami_port}
username = "journal"
secret = "ami-secret"
reconnect_min = "0.1s"
reconnect_max = "0.5s"
[pbx]
name = "e2e"
[storage]
url = "sqlite+aiosqlite:///{tmp_path / "journal.sqlite3"}"
[recordings]
directories = {dirs}
[http]
listen = "127.0.0.1:{http_port}"
[[http.clients]]
name = "1c"
username = "1c"
password = "secret"
[employees]
{employees}
""",
        "utf-8",
    )
    return path


def start(*args: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    handle = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "pbxjournal.cli", *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )


def get(port: int, path: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": AUTH}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def all_calls(port: int) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = get(port, f"/api/v1/calls?internal=show&limit=500{cursor}")
        calls.extend(page["items"])
        if not page["next_cursor"]:
            return calls
        cursor = f"&cursor={page['next_cursor']}"


def wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_daemon_and_fake_pbx_as_processes_serve_the_journal_over_http(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    ami_port, http_port = free_port(), free_port()
    config = write_config(tmp_path, ami_port, http_port)
    captures = [str(TRACES / f"{slug}.ami") for slug in SLUGS]
    fake = start(
        "fake-pbx",
        *captures,
        "--port",
        str(ami_port),
        "--speed",
        "50",
        "--stay",
        "--username",
        "journal",
        "--secret",
        "ami-secret",
        log=tmp_path / "fake.log",
    )
    processes.append(fake)
    wait_for(lambda: b"listening" in (tmp_path / "fake.log").read_bytes(), 20, "fake-pbx")
    daemon = start("run", "--config", str(config), log=tmp_path / "daemon.log")
    processes.append(daemon)
    wait_for(lambda: len(all_calls(http_port)) >= 70, 120, "70 calls over HTTP")

    calls = all_calls(http_port)
    assert len(calls) == 70
    assert len({c["linkedid"] for c in calls}) == 70
    by_number = {c["number"]: c for c in calls if c["number"]}
    transfer = by_number["+79057778899"]
    assert [(e["extension"], e["role"]) for e in transfer["employees"]] == [
        ("101", "answered"),
        ("103", "answered"),
    ]
    assert len(transfer["recordings"]) == 2
    missed = next(
        c for c in calls if c["number"] == "+79265550011" and c["direction"] == "incoming"
    )
    assert (missed["status"], missed["attention"]) == ("no_answer", False)
    assert sum(1 for c in calls if c["status"] in ("answered", "reached")) == 14 + 44

    # SIGTERM: clean exit within 10 s, nothing lost.
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=10) == 0
    assert time.monotonic() - started < 10

    # A restart continues with the same database: the same 70 rows, none added.
    again = start("run", "--config", str(config), log=tmp_path / "daemon2.log")
    processes.append(again)
    wait_for(lambda: get(http_port, "/healthz") is not None, 30, "the restarted daemon")
    assert {c["linkedid"] for c in all_calls(http_port)} == {c["linkedid"] for c in calls}
    again.send_signal(signal.SIGTERM)
    assert again.wait(timeout=10) == 0
    log = (tmp_path / "daemon.log").read_text("utf-8")
    assert "ami-secret" not in log and "secret" not in log.replace("ami_user", "")
