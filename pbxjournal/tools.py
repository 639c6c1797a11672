"""The ``capture`` and ``fake-pbx`` subcommands: thin wrappers over connector modules.

Both run one asyncio loop, turn SIGINT/SIGTERM into a clean stop (the capture logs off so
that the file ends with the ``Goodbye``; the fake PBX closes its connections) and return an
exit status instead of raising.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connector.ami import AmiSettings

__all__ = ["run_capture", "run_fake_pbx"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_fake_pbx(args: argparse.Namespace) -> int:
    """Serve captures until they are all streamed (forever with ``--loop``) or a signal."""
    return asyncio.run(_serve_fake_pbx(args))


async def _serve_fake_pbx(args: argparse.Namespace) -> int:
    from connector.fakepbx import FakePbx

    try:
        fake = FakePbx(
            [Path(p) for p in args.captures],
            host=args.host,
            port=args.port,
            username=args.username,
            secret=args.secret,
            speed=args.speed,
            loop=args.loop,
            keep_time=args.keep_time,
            click_to_call=args.click_to_call,
        )
    except (OSError, ValueError) as exc:  # a missing capture, a bad recvlog, a bad speed
        print(f"pbxjournal fake-pbx: {exc}", file=sys.stderr)
        return 2
    try:
        port = await fake.start()
    except OSError as exc:
        print(
            f"pbxjournal fake-pbx: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        await fake.close()
        return 1
    print(f"fake-pbx listening on {args.host}:{port}", flush=True)
    try:
        # --stay: like a real PBX after its calls, stay up (answering Ping) until a signal.
        await _until_signal(None if args.loop or args.stay else fake.wait_done)
    finally:
        await fake.close()
    return 0


def run_capture(args: argparse.Namespace) -> int:
    """Record the live AMI stream of the configured PBX to ``args.output``."""
    from config import load_settings

    settings = load_settings(args.config, os.environ)
    return asyncio.run(_capture(settings.ami, Path(args.output), args.duration))


async def _capture(settings: AmiSettings, output: Path, duration: float | None) -> int:
    from connector.ami import AmiError
    from connector.capture import record_session

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        written = await record_session(settings, output, duration=duration, stop=stop)
    except (AmiError, OSError, TimeoutError) as exc:
        print(f"pbxjournal capture: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    print(f"captured {written} bytes to {output}", file=sys.stderr)
    return 0


async def _until_signal(done: Callable[[], Awaitable[None]] | None) -> None:
    """Wait for SIGINT/SIGTERM, or for ``done()`` to finish when given."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    waiters: list[asyncio.Task[object]] = [asyncio.create_task(stop.wait())]
    if done is not None:
        waiters.append(asyncio.create_task(_wrap(done)))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def _wrap(done: Callable[[], Awaitable[None]]) -> object:
    await done()
    return None
