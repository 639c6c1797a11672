"""The application's typed keys (``web.AppKey``), all in one place."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from aiohttp import web

from config import Settings
from httpd.audio import MergedRecordings
from httpd.feed import ChangeFeed
from httpd.health import HealthProbe
from httpd.protocols import DaemonStatus, LiveCalls, Originator
from storage.store import SqlJournal

if TYPE_CHECKING:  # httpd.metrics reads CLIENT from here
    from httpd.metrics import Metrics

__all__ = [
    "CLIENT",
    "FEED",
    "HEALTH",
    "JOURNAL",
    "LIVE",
    "MERGED",
    "MERGE_SLOTS",
    "METRICS",
    "ORIGINATOR",
    "SETTINGS",
    "STATUS",
    "WORKERS",
]

SETTINGS = web.AppKey("settings", Settings)
JOURNAL = web.AppKey("journal", SqlJournal)
FEED = web.AppKey("feed", ChangeFeed)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
HEALTH = web.AppKey("health", HealthProbe)
MERGED = web.AppKey("merged_recordings", MergedRecordings)
#: Worker threads for merging recordings (CPU-bound ffmpeg/pydub work, off the loop).
WORKERS: web.AppKey[ThreadPoolExecutor] = web.AppKey("workers")
#: Bounds the merges waiting for a worker: the rest are told to retry.
MERGE_SLOTS = web.AppKey("merge_slots", asyncio.Semaphore)
LIVE: web.AppKey[LiveCalls | None] = web.AppKey("live")
STATUS: web.AppKey[DaemonStatus | None] = web.AppKey("status")
#: Click-to-call through the daemon's AMI session (None on a stateless front end).
ORIGINATOR: web.AppKey[Originator | None] = web.AppKey("originator")

#: The name of the client the request authenticated as (never its credentials).
CLIENT = web.RequestKey("client", str)
