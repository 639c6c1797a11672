"""The ingest paths (b) and (c) without a socket: CPU per event, for profiling and for the
before/after figures of an optimisation.

The synthetic capture is read into memory and handed to the transport's protocol in 64 KiB
pieces, the way the event loop hands it TCP reads; after each piece the queue is drained with
:class:`connector.ami.AmiConnector`'s own per-message step (parse, normalise, handler). Only
CPU time is counted, so a busy neighbour on the machine matters much less than for
:mod:`bench.ingest`, which measures the same work over real TCP.

    python -m bench.hotpath --path pipeline
    python -m pyinstrument -m bench.hotpath --path transport --repeat 1
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import report
from bench.synth import ensure_capture
from config import Settings
from connector.ami import AmiConnector, AmiProtocol, QueueItem
from connector.events import AmiEvent
from pbxjournal.pipeline import build_pipeline

__all__ = ["main", "measure"]

READ_SIZE = 64 * 1024


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + READ_SIZE] for i in range(0, len(data), READ_SIZE)]


async def measure(data: bytes, path: str) -> tuple[int, float, int]:
    """(messages, CPU seconds, calls finished) for one pass of ``path`` over ``data``."""
    chunks = _chunks(data)
    queue: list[QueueItem] = []
    calls = 0
    handle: Callable[[AmiEvent], None]
    if path == "pipeline":
        pipeline = build_pipeline(Settings(), recordings=[])
        now = 0.0

        def handle(event: AmiEvent) -> None:
            nonlocal now
            now = max(now, event.time)
            pipeline.feed(event, now)

    else:

        def handle(event: AmiEvent) -> None:
            return None

    # The connector is never run: its consumer's per-message step is called directly.
    connector = AmiConnector(Settings().ami, handle)
    stats = connector.stats
    protocol = AmiProtocol(peer="bench", stats=stats, sink=queue.append, tap=None)
    began = time.process_time()
    for chunk in chunks:
        protocol.data_received(chunk)
        for item in queue:
            if isinstance(item, tuple):
                connector._deliver(*item)
        queue.clear()
    if path == "pipeline":
        pipeline.drain(now)
        calls = pipeline.stats.calls_finished
    return stats.messages_received, time.process_time() - began, calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--path", choices=("transport", "pipeline", "both"), default="both")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="passes; the median is shown")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--capture", type=Path)
    args = parser.parse_args(argv)
    capture = args.capture or Path(tempfile.gettempdir()) / "pbxjournal-bench" / (
        f"synth-{args.events}-c500-s{args.seed}.ami"
    )
    capture.parent.mkdir(parents=True, exist_ok=True)
    ensure_capture(capture, events=args.events, concurrency=500, seed=args.seed)
    data = capture.read_bytes()
    paths = ("transport", "pipeline") if args.path == "both" else (args.path,)
    for path in paths:
        rates = []
        for _ in range(args.repeat):
            messages, seconds, calls = asyncio.run(measure(data, path))
            rates.append(messages / seconds)
            print(
                f"{path:<9} {messages:,} messages in {seconds:.2f} s CPU: "
                f"{messages / seconds:,.0f}/s, {seconds / messages * 1e6:.2f} µs each"
                + (f", {calls:,} calls" if calls else ""),
                flush=True,
            )
        print(f"{path:<9} median {report.median(rates):,.0f} messages per CPU second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
