"""Prometheus metrics (``GET /metrics``) and the access log.

``prometheus_client`` rather than an in-repo registry: its text exposition (escaping, the
histogram's cumulative buckets, ``_sum``/``_count``, ``# HELP``/``# TYPE``) is what
Prometheus parses, and getting that subtly wrong is the usual fate of hand-written
exporters. Its module-global default registry is *not* used: each application owns a
:class:`prometheus_client.CollectorRegistry`, so two apps (tests, several front ends in one
process) never share counters. The daemon's counters (AMI events, calls written, AMI
connected) are read at scrape time from :class:`httpd.protocols.DaemonStatus` by a custom
collector, so the daemon does not have to import anything from here.

Latency is observed per route *template* (``/api/v1/calls/{call_id}``), never per raw path:
ids and numbers in paths would make a label per call. Unknown paths share one label.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from httpd.feed import ChangeFeed
from httpd.keys import CLIENT
from httpd.protocols import DaemonStatus

__all__ = ["CONTENT_TYPE", "Metrics", "observe_middleware"]

log = structlog.get_logger("pbxjournal.http")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _DaemonCollector(Collector):
    def __init__(self, status: DaemonStatus | None, feed: ChangeFeed | None) -> None:
        self.status = status
        self.feed = feed

    def collect(self) -> Iterator[Metric]:
        status = self.status
        if status is not None:
            yield CounterMetricFamily(
                "pbxjournal_ami_events_received",
                "AMI messages received since the daemon started.",
                value=status.events_received,
            )
            yield CounterMetricFamily(
                "pbxjournal_calls_written",
                "Finished calls written to the journal since the daemon started.",
                value=status.calls_written,
            )
            yield GaugeMetricFamily(
                "pbxjournal_ami_connected",
                "1 while logged in to the Asterisk Manager Interface.",
                value=1 if status.ami_connected else 0,
            )
        if self.feed is not None:
            yield GaugeMetricFamily(
                "pbxjournal_journal_version",
                "Newest journal version this process knows to be committed.",
                value=self.feed.version,
            )
            reads = CounterMetricFamily(
                "pbxjournal_changes_reads",
                "Reads of GET /changes, by source: memory (the rows the daemon just wrote, or "
                "nothing new) or database.",
                labels=["source"],
            )
            reads.add_metric(["memory"], self.feed.answers_from_memory)
            reads.add_metric(["database"], self.feed.answers_from_database)
            yield reads
            yield GaugeMetricFamily(
                "pbxjournal_changes_waiting",
                "Long-polls of GET /changes waiting for a change now.",
                value=self.feed.waiting,
            )


class Metrics:
    def __init__(self, status: DaemonStatus | None, feed: ChangeFeed | None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "pbxjournal_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status.",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_DaemonCollector(status, feed))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _route_of(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


def observe_middleware(
    metrics: Metrics,
) -> Middleware:
    @web.middleware
    async def middleware(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        began = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            elapsed = time.perf_counter() - began
            route = _route_of(request)
            metrics.latency.labels(request.method, route, str(status)).observe(elapsed)
            log.info(
                "http",
                method=request.method,
                route=route,
                status=status,
                ms=round(elapsed * 1000, 1),
                client=request.get(CLIENT),
                peer=request.remote,
            )

    return middleware
