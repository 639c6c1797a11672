"""``GET /healthz``: is the database writable, is the AMI session up.

"Writable" is proven, not assumed: the probe opens the journal's write transaction (SQLite's
``BEGIN IMMEDIATE`` takes the write lock; PostgreSQL locks ``journal_state``) and commits
nothing. Anyone may call ``/healthz`` without credentials, so the answer is cached for a
second: a flood of probes costs one transaction a second.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from httpd.protocols import DaemonStatus
from storage.store import SqlJournal

__all__ = ["HealthProbe"]


@dataclass(slots=True)
class _Result:
    at: float
    writable: bool
    error: str | None


class HealthProbe:
    def __init__(
        self,
        journal: SqlJournal,
        status: DaemonStatus | None,
        *,
        timeout: float = 5.0,
        cache_seconds: float = 1.0,
    ) -> None:
        self.journal = journal
        self.status = status
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._last: _Result | None = None
        self._lock = asyncio.Lock()

    async def _writable(self) -> _Result:
        async with self._lock:
            now = time.monotonic()
            last = self._last
            if last is not None and now - last.at < self.cache_seconds:
                return last
            try:
                async with asyncio.timeout(self.timeout), self.journal.transaction():
                    pass
            except TimeoutError:
                result = _Result(now, False, f"no write lock within {self.timeout:g} s")
            except Exception as exc:
                result = _Result(now, False, type(exc).__name__)
            else:
                result = _Result(now, True, None)
            self._last = result
            return result

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, the JSON body)."""
        database = await self._writable()
        ami: dict[str, Any] | None = None
        healthy = database.writable
        if self.status is not None:
            connected = bool(self.status.ami_connected)
            ami = {"connected": connected}
            healthy = healthy and connected
        body: dict[str, Any] = {
            "status": "ok" if healthy else "unavailable",
            "database": {"writable": database.writable, "error": database.error},
            "ami": ami,
        }
        return healthy, body
