"""Running the daemon in-process for tests: settings with a SQLite file of the test's own,
and a listener that collects what the daemon committed to the journal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from config import Settings, load_settings
from pbxjournal.daemon import Daemon
from storage.journal import JournalEntry
from tests.scenarios import EMPLOYEES, RECORDINGS


def daemon_settings(
    port: int,
    database: Path,
    slugs: Iterable[str] = (),
    extra: Mapping[str, str] | None = None,
    config: Path | None = None,
) -> Settings:
    environ = {
        "PBXJOURNAL_AMI__PORT": str(port),
        "PBXJOURNAL_AMI__RECONNECT_MIN": "0.05",
        "PBXJOURNAL_AMI__RECONNECT_MAX": "0.2",
        "PBXJOURNAL_STORAGE__URL": f"sqlite+aiosqlite:///{database}",
        "PBXJOURNAL_RECORDINGS__DIRECTORIES": json.dumps([str(RECORDINGS / s) for s in slugs]),
        "PBXJOURNAL_LOG__NUMBERS": "full",
        "PBXJOURNAL_HTTP__LISTEN": "127.0.0.1:0",
        "PBXJOURNAL_HTTP__CLIENTS": json.dumps(
            [{"name": "1c", "username": "1c", "password": "secret"}]
        ),
    }
    if config is None:
        environ["PBXJOURNAL_EMPLOYEES"] = json.dumps(EMPLOYEES)
    environ.update(extra or {})
    return load_settings(config, environ=environ)


class Committed:
    """Collects the entries of every batch the daemon commits; the last version per id wins."""

    def __init__(self, daemon: Daemon) -> None:
        self.by_id: dict[int, JournalEntry] = {}
        self.batches: list[list[JournalEntry]] = []
        daemon.listeners.append(self)

    def __call__(self, entries: list[JournalEntry]) -> None:
        self.batches.append(entries)
        for entry in entries:
            self.by_id[entry.id] = entry

    @property
    def entries(self) -> list[JournalEntry]:
        return list(self.by_id.values())

    async def wait_for(self, count: int, seconds: float = 15.0) -> None:
        for _ in range(int(seconds / 0.05)):
            if len(self.by_id) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"only {len(self.by_id)} calls committed, expected {count}")
