"""Memory benchmark (issue 7, item 3): does the daemon's memory stay flat over a million calls?

Theory of operation
-------------------
The calls are :mod:`bench.synth` copies of the real ones, about 500 open at once, generated
on the fly (a million calls are ~150 million AMI messages; a file of them would not fit on a
disk). Only the messages the transport hands on are rendered — the noise never reaches the
assembler — and each is parsed and normalised as the transport does, then fed to
:class:`pbxjournal.pipeline.JournalPipeline` at the PBX's clock.

Two runs go side by side, each in its own process, reading its RSS after 10,000 calls, after
100,000 and after the last:

* ``assembler``: the pipeline with a journal that keeps no rows, so what stays in memory is
  the assembler's state (open conversations, the ids of recently finished channels) and the
  interpreter's. The goal: at most 20 MB more after a million calls than after 10,000.
* ``journal``: the pipeline with :class:`storage.memory.MemoryJournal`, which keeps every
  row by design (it backs ``pbxjournal replay``; the daemon's database journal keeps none in
  memory): it grows by the size of a row per call.

A third process opens 5,000 conversations at once and divides the memory they hold
(``tracemalloc``: every allocation made while feeding them, still alive) by their number;
the RSS growth over the same events is shown beside it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import report
from bench.synth import CallTemplate, iter_plan, load_templates, render
from config import Settings
from connector.assembly import FinishedCall
from connector.events import AmiEvent, parse_event
from connector.recordings import FoundRecording
from pbxjournal.pipeline import JournalPipeline, build_pipeline
from storage.journal import JournalEntry
from storage.memory import MemoryJournal
from storage.rules import AttentionWindow

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
GOAL_MB = 20.0
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident set size now (not its peak)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


class RowlessJournal(MemoryJournal):
    """A journal that keeps no rows: the memory left is the assembler's and the pipeline's."""

    def write(
        self, call: FinishedCall, recordings: Sequence[FoundRecording], now: float
    ) -> list[JournalEntry]:
        return []


def journal_events(
    templates: Sequence[CallTemplate], *, calls: int, concurrency: int, seed: int
) -> Iterator[AmiEvent]:
    """The journal events of ``calls`` synthetic calls, normalised, in stream order."""
    instances = iter_plan(templates, calls=calls, concurrency=concurrency, seed=seed)
    for at, raw in render(instances, journal_only=True):
        # As the transport's consumer does, without the blank line that ends the message.
        yield parse_event(raw[:-4], at / 1e6)


def make_pipeline(kind: str) -> JournalPipeline:
    settings = Settings()
    pipeline = build_pipeline(settings, recordings=[])
    if kind == "assembler":
        window = AttentionWindow.fixed(24 * 3600.0, settings.pbx.tz)
        rowless = RowlessJournal(pbx=settings.pbx.name, window=window)
        pipeline = JournalPipeline(
            pipeline.assembler, pipeline.finder, rowless, grace=pipeline.grace
        )
    return pipeline


def run_growth(kind: str, calls: int, checkpoints: Sequence[int], seed: int) -> None:
    """Feed ``calls`` calls; print a JSON line at every checkpoint of finished calls."""
    templates = load_templates()
    pipeline = make_pipeline(kind)
    pending = sorted(c for c in checkpoints if c <= calls)
    now = 0.0
    began = time.perf_counter()
    for event in journal_events(templates, calls=calls, concurrency=500, seed=seed):
        now = max(now, event.time)
        pipeline.feed(event, now)
        if pending and pipeline.stats.calls_finished >= pending[0]:
            _checkpoint(kind, pipeline, pending.pop(0), began)
    pipeline.drain(now)
    _checkpoint(kind, pipeline, pipeline.stats.calls_finished, began, last=True)


def _checkpoint(
    kind: str, pipeline: JournalPipeline, mark: int, began: float, *, last: bool = False
) -> None:
    gc.collect()
    print(
        json.dumps(
            {
                "kind": kind,
                "mark": mark,
                "calls": pipeline.stats.calls_finished,
                "rss": rss_bytes(),
                "open": pipeline.assembler.open_conversations,
                "channels": pipeline.assembler.open_channels,
                "rows": len(pipeline.journal.entries()) if kind == "journal" else 0,
                "seconds": time.perf_counter() - began,
                "last": last,
            }
        ),
        flush=True,
    )


def prepare_open(target: int, seed: int, path: Path) -> None:
    """Write the journal messages of the first calls of ``target`` lanes to ``path``."""
    templates = load_templates()
    instances = iter_plan(templates, calls=target * 3 // 2, concurrency=target, seed=seed)
    with path.open("wb") as out:
        for _, raw in render(instances, journal_only=True):
            out.write(raw)


def run_open(path: Path, *, traced: bool) -> None:
    """Feed the prepared messages; report the memory held when most conversations are open.

    A fresh process reads the messages before the baseline is taken, so the memory measured
    is what the assembler allocated and kept, not space freed by earlier work and reused.
    """
    raws = path.read_bytes().split(b"\r\n\r\n")
    raws.pop()  # what follows the last message end: nothing
    gc.collect()
    if traced:
        tracemalloc.start()
    before = rss_bytes()
    pipeline = make_pipeline("assembler")
    assembler = pipeline.assembler
    peak = (0, 0, 0)  # open conversations, traced bytes, RSS growth
    now = 0.0
    for index, raw in enumerate(raws):
        event = parse_event(raw, 0.0)
        now = max(now, event.time)
        pipeline.feed(event, now)
        opened = assembler.open_conversations
        if opened > peak[0] and (traced or index % 64 == 0):
            memory = tracemalloc.get_traced_memory()[0] if traced else 0
            peak = (opened, memory, rss_bytes() - before)
    result = {"open": peak[0], "traced_bytes" if traced else "rss_growth": peak[1 if traced else 2]}
    print(json.dumps(result), flush=True)


def _spawn(*args: str) -> subprocess.Popen[str]:
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))
    return subprocess.Popen(
        [sys.executable, "-m", "bench.memory", *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


def _lines(process: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{process.args!r} failed with status {process.returncode}")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def benchmark(args: argparse.Namespace) -> int:
    checkpoints = [c for c in (10_000, 100_000) if c < args.calls]
    marks = ",".join(str(c) for c in checkpoints)
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    growth = [
        _spawn(
            "growth",
            kind,
            "--calls",
            str(args.calls),
            "--checkpoints",
            marks,
            "--seed",
            str(args.seed),
        )
        for kind in ("assembler", "journal")
    ]
    results = [_lines(p) for p in growth]
    print(f"growth runs done in {time.perf_counter() - began:.0f} s", flush=True)
    messages = Path(tempfile.gettempdir()) / f"pbxjournal-open-{args.open}-s{args.seed}.ami"
    _lines(
        _spawn("open", "prepare", str(messages), "--open", str(args.open), "--seed", str(args.seed))
    )
    rss = _lines(_spawn("open", "rss", str(messages)))[0]
    traced = _lines(_spawn("open", "traced", str(messages)))[0]
    messages.unlink()
    opened = {
        "open": traced["open"],
        "traced_bytes": traced["traced_bytes"],
        "open_rss": rss["open"],
        "rss_growth": rss["rss_growth"],
    }
    text = render_report(results, opened, args, (load_before, os.getloadavg()[0]))
    print()
    print(text)
    if not args.no_docs:
        report.update_section("bench.memory", text)
        print(f"\nwritten to {report.BENCHMARKS}")
    return 0


def render_report(
    results: list[list[dict[str, Any]]],
    opened: dict[str, Any],
    args: argparse.Namespace,
    load: tuple[float, float],
) -> str:
    mb = 1024 * 1024
    rows = []
    verdicts = []
    for lines in results:
        kind = lines[0]["kind"]
        first, last = lines[0], lines[-1]
        growth = (last["rss"] - first["rss"]) / mb
        cells = [
            "assembler + pipeline, no rows kept"
            if kind == "assembler"
            else "assembler + pipeline + MemoryJournal (every row kept)",
        ]
        cells += [f"{line['rss'] / mb:,.0f} MB after {line['calls']:,}" for line in lines]
        cells.append(f"{growth:+,.1f} MB")
        if kind == "journal" and last["rows"] > first["rows"]:
            per_row = (last["rss"] - first["rss"]) / (last["rows"] - first["rows"])
            cells.append(f"{per_row:,.0f} bytes per row")
        else:
            cells.append(f"{last['open']} open at the end, {last['seconds']:.0f} s")
        rows.append(cells)
        if kind == "assembler":
            ok = growth <= GOAL_MB
            verdicts.append(
                f"Goal (issue 7): the assembler's memory flat, ≤ {GOAL_MB:.0f} MB growth from "
                f"{first['calls']:,} to {last['calls']:,} calls: {growth:+.1f} MB "
                f"({'met' if ok else 'NOT met'})."
            )
    width = max(len(r) for r in rows)
    header = ["run"] + [f"RSS {i + 1}" for i in range(width - 3)] + ["growth", "note"]
    rows = [r[:-2] + [""] * (width - len(r)) + r[-2:] for r in rows]
    table = report.table(header, rows)
    per_conversation = opened["traced_bytes"] / max(1, opened["open"])
    rss_per = opened["rss_growth"] / max(1, opened["open_rss"])
    marks = ", ".join(f"{c:,}" for c in (10_000, 100_000) if c < args.calls)
    intro = report.prose(
        f"""
Machine: {report.machine()}. Load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after.

Command: `{report.command_line()}`

{args.calls:,} synthetic calls (`bench.synth`, seed {args.seed}, about 500 open at once),
their journal events rendered, parsed and normalised as the transport does and fed to the
pipeline at the PBX's clock; RSS read after {marks} and {args.calls:,} calls, each run in a
process of its own. "No rows kept": the pipeline with a journal that keeps nothing, so what
stays is the assembler's state and the interpreter's. "MemoryJournal": the journal of
`pbxjournal replay`, which keeps every row by design (the daemon's SQL journal keeps none in
memory).
"""
    )
    closing = report.prose(
        f"""
{" ".join(verdicts)}

Open conversations: with {opened["open"]:,} open at once, the assembler holds
{opened["traced_bytes"] / mb:,.1f} MB (tracemalloc: allocations made while feeding them and
still alive), **{per_conversation:,.0f} bytes per open conversation**; RSS grew
{opened["rss_growth"] / mb:,.1f} MB over the same events ({rss_per:,.0f} bytes each, measured
without tracemalloc, at {opened["open_rss"]:,} open).
"""
    )
    return (
        "## Memory: RSS over a million calls, bytes per open conversation\n\n"
        f"{intro}\n\n{table}\n\n{closing}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--open", type=int, default=5000, help="conversations open at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    sub = parser.add_subparsers(dest="command")
    growth = sub.add_parser("growth", help=argparse.SUPPRESS)
    growth.add_argument("kind", choices=("assembler", "journal"))
    growth.add_argument("--calls", type=int, required=True)
    growth.add_argument("--checkpoints", default="")
    growth.add_argument("--seed", type=int, default=1)
    opened = sub.add_parser("open", help=argparse.SUPPRESS)
    opened.add_argument("step", choices=("prepare", "rss", "traced"))
    opened.add_argument("file", type=Path)
    opened.add_argument("--open", type=int, default=5000)
    opened.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "growth":
        marks = [int(c) for c in args.checkpoints.split(",") if c]
        run_growth(args.kind, args.calls, marks, args.seed)
        return 0
    if args.command == "open":
        if args.step == "prepare":
            prepare_open(args.open, args.seed, args.file)
        else:
            run_open(args.file, traced=args.step == "traced")
        return 0
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
