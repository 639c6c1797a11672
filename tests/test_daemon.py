"""``pbxjournal run`` in-process against the fake PBX on a real TCP port."""

from __future__ import annotations

import asyncio
import json

from structlog.testing import capture_logs

from config import load_settings
from connector.fakepbx import FakePbx
from pbxjournal.daemon import Daemon
from tests.scenarios import EMPLOYEES, RECORDINGS, capture


async def test_daemon_writes_every_call_and_closes_the_last_one_on_its_timer() -> None:
    slugs = ["11-incoming-blind-transfer", "15-missed-then-callback"]
    pbx = FakePbx([capture(s) for s in slugs], username="u", secret="p", speed=0)
    port = await pbx.start()
    settings = load_settings(
        None,
        environ={
            "PBXJOURNAL_AMI__PORT": str(port),
            "PBXJOURNAL_AMI__USERNAME": "u",
            "PBXJOURNAL_AMI__SECRET": "p",
            "PBXJOURNAL_AMI__RECONNECT_MIN": "0.05",
            "PBXJOURNAL_RECORDINGS__DIRECTORIES": json.dumps([str(RECORDINGS / s) for s in slugs]),
            "PBXJOURNAL_EMPLOYEES": json.dumps(EMPLOYEES),
        },
    )
    with capture_logs() as logs:
        daemon = Daemon(settings)
        runner = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(pbx.wait_done(), 30)
            # No event follows the last hangup: only the grace timer can write that call.
            for _ in range(100):
                if daemon.pipeline.stats.calls_finished == 3:
                    break
                await asyncio.sleep(0.1)
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 10)
            await pbx.close()
    assert daemon.pipeline.stats.calls_finished == 3
    assert daemon.pipeline.assembler.open_conversations == 0
    calls = [entry for entry in logs if entry["event"] == "call"]
    statuses = [(c["direction"], c["status"]) for c in calls]
    assert statuses.count(("incoming", "answered")) == 1
    assert ("incoming", "lost") in statuses and ("incoming", "no_answer") in statuses
    assert ("outgoing", "reached") in statuses
    transfer = next(c for c in calls if c["status"] == "answered")
    assert transfer["employees"] == ["101:answered", "103:answered"]
    assert transfer["recordings"] == 2
    # Numbers are masked at info level by default.
    assert all("***" in c["number"] for c in calls)
