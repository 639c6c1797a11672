"""systemd's notify protocol (``Type=notify``, ``WatchdogSec``), without libsystemd.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace) and, with
``WatchdogSec``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``. The daemon sends datagrams of
``KEY=value`` lines: ``READY=1`` once it serves (database migrated, port bound), ``STATUS=…``
for ``systemctl status``, ``WATCHDOG=1`` at least every ``WATCHDOG_USEC``, ``RELOADING=1`` /
``READY=1`` around a SIGHUP reload, ``STOPPING=1`` when it shuts down.

The watchdog is fed by a task on the event loop itself, and only while a probe shows the loop
is responsive (it wakes on time): a loop blocked by a bug stops the pings and systemd restarts
the service, which is the point of a watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Mapping

__all__ = ["Notifier", "watchdog_interval"]


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None when not asked."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (a wrapper script)
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


class Notifier:
    """Sends notify messages to systemd; does nothing when not started by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if address.startswith("@"):
            self._address = "\0" + address[1:]
        elif address.startswith("/"):
            self._address = address
        self._socket: socket.socket | None = None
        self.interval = watchdog_interval(env)
        self.sent: list[str] = []
        #: :meth:`keep_starting`'s period and the start time each of its messages asks for.
        self.extend_every = 10.0
        self.extend_by = 30.0

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines (``ready=1`` → ``READY=1``); False when not delivered."""
        if self._address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        if self._socket is None:
            # Non-blocking: a notify must never stall the event loop, not even when the
            # receiver's queue is full (a lost WATCHDOG=1 is what a watchdog is for).
            self._socket = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError:  # BlockingIOError included
            return False
        self.sent.append(message)
        return True

    async def keep_starting(self, status: str) -> None:
        """Until cancelled, ask systemd every ``extend_every`` seconds for ``extend_by`` more
        seconds of start (``EXTEND_TIMEOUT_USEC``, systemd 236+): a migration of a big journal
        outlasts the unit's ``TimeoutStartSec``, and a start killed there would start over,
        migrate again and never finish. Runs while the journal is opened, before ``READY=1``."""
        if not self.enabled:
            return
        while True:
            self.notify(extend_timeout_usec=int(self.extend_by * 1_000_000), status=status)
            await asyncio.sleep(self.extend_every)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def run_watchdog(self, healthy: Callable[[], bool] = lambda: True) -> None:
        """Ping systemd every ``interval`` while the loop is responsive and ``healthy()``.

        Each round sleeps half the interval and checks it woke up within the other half: a
        loop that stalled longer skips the ping, and systemd's timer keeps running.
        """
        if self.interval is None or not self.enabled:
            return
        loop = asyncio.get_running_loop()
        half = self.interval / 2
        while True:
            started = loop.time()
            await asyncio.sleep(half)
            late = loop.time() - started - half
            if late < half and healthy():
                self.notify(watchdog=1)

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.close()
