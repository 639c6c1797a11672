"""The README's first command works: the demo fills the journal from real captures."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_streams_every_capture_into_the_journal() -> None:
    env = dict(os.environ, DEMO_SECONDS="25", SPEED="40")
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
    stopped = [r for r in records if r["event"] == "stopped"]
    assert stopped and stopped[-1]["open_conversations"] == 0
    assert "fake PBX on 127.0.0.1:" in result.stdout
