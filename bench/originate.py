"""Click-to-call (issue 17): how long ``POST /api/v1/originate`` takes to answer, and how long
from the click to the call back's journal row, through the whole daemon.

Theory of operation
-------------------
The real daemon runs in-process (a SQLite journal in a temporary directory, logging at
warning), logged in over a real AMI TCP session to the in-process fake PBX, which answers each
``Originate`` with capture 18 rewritten for the request (:mod:`connector.fakeoriginate`) as
fast as the socket drains (``speed=0``: the PBX's clock is in the events' ``Timestamp``, so
the call still lasts its recorded 11 s of PBX time). A client sends ``--count`` click-to-calls
one after another over HTTP, each for the same employee and customer, and polls
``GET /api/v1/originate/{id}`` every 2 ms until it is ``finished``.

- *accepted*: from sending the POST to reading its ``202`` — the API's checks (the employee,
  the number, the returned call), the ``Originate`` over AMI and the PBX's ``Response``;
- *row written*: from sending the POST to the state ``finished`` — every event of the call
  through the assembler, the grace period after its last ``Hangup`` (``pbx.hangup_grace``,
  set to ``--grace``), the journal's write with the rules, the state's update.

Run: ``python -m bench.originate`` (``--count 200``); the table goes to stdout and, with the
machine and the command, to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from bench import report
from config import load_settings
from connector.fakepbx import FakePbx
from pbxjournal.daemon import Daemon
from pbxjournal.logs import configure_logging

CLICK_TO_CALL = (
    Path(__file__).resolve().parent.parent
    / "tests"
    / "data"
    / "ami-traces"
    / "18-click-to-call-originate.ami"
)
AUTH = "Basic " + base64.b64encode(b"bench:bench").decode()


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(count: int, grace: float, directory: Path) -> tuple[list[float], list[float]]:
    pbx = FakePbx([], speed=0, click_to_call=CLICK_TO_CALL)
    port = await pbx.start()
    settings = load_settings(
        None,
        environ={
            "PBXJOURNAL_AMI__PORT": str(port),
            "PBXJOURNAL_STORAGE__URL": f"sqlite+aiosqlite:///{directory / 'journal.sqlite3'}",
            "PBXJOURNAL_HTTP__LISTEN": "127.0.0.1:0",
            "PBXJOURNAL_HTTP__CLIENTS": json.dumps(
                [
                    {
                        "name": "bench",
                        "username": "bench",
                        "password": "bench",
                        "scopes": ["read", "originate"],
                    }
                ]
            ),
            "PBXJOURNAL_EMPLOYEES": json.dumps({"101": "Ivanova Anna"}),
            "PBXJOURNAL_PBX__HANGUP_GRACE": f"{grace}s",
            "PBXJOURNAL_RECORDINGS__DIRECTORIES": json.dumps([str(directory)]),
            "PBXJOURNAL_LOG__LEVEL": "warning",
        },
    )
    configure_logging("warning", "json")
    daemon = Daemon(settings)
    runner = asyncio.create_task(daemon.run())
    accepted: list[float] = []
    written: list[float] = []
    try:
        while daemon.http_port is None or not daemon.ami_connected:  # noqa: ASYNC110 - no event says it
            await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{daemon.http_port}"
        headers = {"Authorization": AUTH}
        body = {"employee": "101", "number": "8 926 700-11-22"}
        async with aiohttp.ClientSession(headers=headers) as http:
            for _ in range(count):
                start = time.monotonic()
                async with http.post(base + "/api/v1/originate", json=body) as response:
                    status = await response.json()
                    assert response.status == 202, status
                accepted.append(time.monotonic() - start)
                while status["state"] not in ("finished", "failed"):
                    await asyncio.sleep(0.002)
                    async with http.get(base + status["url"]) as response:
                        status = await response.json()
                assert status["state"] == "finished", status
                written.append(time.monotonic() - start)
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, 30)
        await pbx.close()
    return accepted, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--grace", type=float, default=0.2, help="pbx.hangup_grace, seconds")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-originate-") as tmp:
        accepted, written = asyncio.run(measure(args.count, args.grace, Path(tmp)))
    rows = []
    for name, values in (
        ("accepted (POST → 202)", accepted),
        ("row written (POST → finished)", written),
    ):
        ms = [v * 1000 for v in values]
        rows.append(
            [
                name,
                f"{statistics.median(ms):.1f}",
                f"{_percentile(ms, 0.95):.1f}",
                f"{max(ms):.1f}",
            ]
        )
    text = "\n\n".join(
        [
            "## Click-to-call (`bench/originate.py`)",
            report.prose(
                f"{args.count} click-to-calls one after another through the in-process daemon "
                "over a real AMI session to the fake PBX, which answers each Originate with "
                "capture 18 rewritten for it; SQLite journal; "
                f"`pbx.hangup_grace` {args.grace:g} s (included in the second row). "
                f"Load average at the start: {load:.2f}."
            ),
            report.table(["milliseconds", "p50", "p95", "max"], rows),
            f"Machine: {report.machine()}.\n\nCommand: `{report.command_line()}`",
        ]
    )
    print(text)
    report.update_section("bench.originate", text)


if __name__ == "__main__":
    main()
