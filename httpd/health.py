"""``GET /healthz``: is the database writable, is the AMI session up.

"Writable" is proven, not assumed, two ways. The probe opens the journal's write transaction
(SQLite's ``BEGIN IMMEDIATE`` takes the write lock; PostgreSQL locks ``journal_state``) and
commits nothing: that finds a database that is gone, locked or refusing connections. It
cannot find a database that takes the lock but not the data (a full disk: nothing is written
until a commit has pages to write), so in the daemon the journal writer's own outcome counts
too: while its writes fail (:class:`WriteStatus`), ``/healthz`` answers 503 naming the error,
and 200 again once a write succeeds. Anyone may call ``/healthz`` without credentials, so the
probe's answer is cached for a second: a flood of probes costs one transaction a second.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

from httpd.protocols import DaemonStatus
from storage.store import SqlJournal

__all__ = ["HealthProbe", "WriteStatus"]


class WriteStatus(Protocol):
    """What the daemon's journal writer says of its writes (the daemon implements it)."""

    @property
    def write_failure(self) -> str | None:
        """Why the last journal write failed, while writes fail; None when they succeed."""
        ...


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
        writable, error = database.writable, database.error
        # A daemon's status has it (WriteStatus); a test's or a front end's may not.
        failure = getattr(self.status, "write_failure", None)
        if isinstance(failure, str):
            writable = False
            error = f"journal writes failing: {failure}"
        ami: dict[str, Any] | None = None
        healthy = writable
        if self.status is not None:
            connected = bool(self.status.ami_connected)
            ami = {"connected": connected}
            healthy = healthy and connected
        body: dict[str, Any] = {
            "status": "ok" if healthy else "unavailable",
            "database": {"writable": writable, "error": error},
            "ami": ami,
        }
        return healthy, body
