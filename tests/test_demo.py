"""The README's first command works: the demo fills the journal from real captures."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_demo_streams_every_capture_into_the_journal(tmp_path: Path) -> None:
    env = dict(os.environ, DEMO_SECONDS="25", SPEED="40", DEMO_DIR=str(tmp_path))
    before = time.time()
    result = subprocess.run(
        [str(ROOT / "scripts" / "demo")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    calls = {r["linkedid"] for r in records if r["event"] == "call"}
    # Every conversation of captures 01-19: 70 rows, no ghosts, none left open.
    assert len(calls) == 70
    # Dated now, not on the captures' day: the fake PBX's clock starts with the stream (at
    # 40x its 5 recorded minutes run ahead of the host's clock by that much at most).
    started = [
        datetime.fromisoformat(r["started_at"]).timestamp() for r in records if r["event"] == "call"
    ]
    assert before - 60 <= min(started) and max(started) <= time.time() + 600
    stopped = [r for r in records if r["event"] == "stopped"]
    assert stopped and stopped[-1]["open_conversations"] == 0
    assert "fake PBX on 127.0.0.1:" in result.stdout
    assert "curl -s -u demo:demo" in result.stdout
    listening = [r for r in records if r["event"] == "http listening"]
    assert listening and listening[0]["url"].startswith("http://127.0.0.1:")


def test_demo_serves_the_journal_over_http_while_it_runs(tmp_path: Path) -> None:
    port = _free_port()
    env = dict(
        os.environ, DEMO_SECONDS="40", SPEED="40", HTTP_PORT=str(port), DEMO_DIR=str(tmp_path)
    )
    demo = subprocess.Popen(
        [str(ROOT / "scripts" / "demo")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        count = 0
        while time.monotonic() < deadline and count < 70:
            time.sleep(0.5)
            try:
                count = len(_calls(port))
            except OSError:
                continue
        assert count == 70
        # Click-to-call through the fake PBX: Anna (101) calls back a lost call.
        lost = next(c for c in _calls(port) if c["status"] == "lost" and c["number"])
        accepted = _post(port, "/api/v1/originate", {"employee": "101", "call_id": lost["id"]})
        assert accepted["state"] in ("ringing_employee", "dialling_customer", "talking")
        for _ in range(200):
            status = _get(port, str(accepted["url"]))
            if status["state"] in ("finished", "failed"):
                break
            time.sleep(0.1)
        assert status["state"] == "finished", status
        back = _get(port, f"/api/v1/calls/{status['call_id']}")
        assert back["callback_of"] == lost["id"]
        assert back["number"] == lost["number"]
        assert [(e["extension"], e["role"]) for e in back["employees"]] == [("101", "placed")]
        assert _get(port, f"/api/v1/calls/{lost['id']}")["attention"] is False
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=30)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_backgrounded_demo_stops_at_once_on_a_signal(tmp_path: Path, sig: int) -> None:
    """Started as `./scripts/demo &` starts it (SIGINT ignored), with DEMO_SECONDS far off:
    the signal stops the demo, its daemon and its fake PBX within seconds."""
    port = _free_port()
    env = dict(
        os.environ, DEMO_SECONDS="600", SPEED="40", HTTP_PORT=str(port), DEMO_DIR=str(tmp_path)
    )

    def like_a_background_job() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    demo = subprocess.Popen(
        [str(ROOT / "scripts" / "demo")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
        preexec_fn=like_a_background_job,  # noqa: PLW1509 - the point of the test
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                _calls(port)
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError("the demo never served its journal")
        demo.send_signal(sig)
        assert demo.wait(timeout=20) != 0  # stopped by the signal, long before 600 s
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    with pytest.raises(OSError):  # its daemon is gone with it
        _calls(port)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _calls(port: int) -> list[dict[str, object]]:
    auth = "Basic " + base64.b64encode(b"demo:demo").decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/calls?internal=show&limit=500",
        headers={"Authorization": auth},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        items: list[dict[str, object]] = json.loads(response.read())["items"]
        return items


_AUTH = "Basic " + base64.b64encode(b"demo:demo").decode()


def _get(port: int, path: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": _AUTH}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def _post(port: int, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Authorization": _AUTH, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body
