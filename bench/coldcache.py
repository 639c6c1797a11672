"""Cold reads for the journal benchmarks: the database's files dropped from the operating
system's page cache before a request, and the bytes its processes then read from the disk.

Theory of operation
-------------------
*Dropping.* ``posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)`` on every file of the database
evicts its clean pages from the page cache (the files are not written meanwhile, so every
page is clean); the next read goes to the disk. SQLite: the database file and its WAL (the
``-shm`` index is a memory map the library keeps). PostgreSQL: every file under
``base/<database oid>`` of the server's data directory (tables, indexes, their free-space and
visibility maps). ``echo 1 > /proc/sys/vm/drop_caches`` (root) works too, but drops every
file of every process on the machine; the benchmarks use the targeted call.

*Counting.* ``/proc/<pid>/io``'s ``read_bytes`` counts what a process caused to be fetched
from the block device: for SQLite the process that runs the queries (this one, or the API's
child), for PostgreSQL the server's processes (the postmaster's children). The difference
around a request, in 4 KiB pages, is "pages read" in the tables (readahead included: the
kernel may fetch more than the page asked for).
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["DiskCache", "postgres_cache", "random_reads", "sqlite_cache"]

PAGE = 4096


def drop_files(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                if line.startswith("read_bytes:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def random_reads(paths: Iterable[Path], samples: int = 300) -> tuple[float, float]:
    """The disk's latency for one random 4 KiB page (p50, p95, milliseconds): pages of the
    largest of ``paths`` dropped from the page cache, then read one at a time, as a B-tree's
    descent reads them (each read waits for the one before). A cold request spends about its
    pages read times this on reads; the rest of its time is CPU."""
    path = max((p for p in paths if p.is_file()), key=lambda p: p.stat().st_size)
    pages = path.stat().st_size // PAGE
    rnd = random.Random(18)
    drop_files([path])
    timings = []
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead: one page per read
        for _ in range(samples):
            at = rnd.randrange(pages) * PAGE
            began = time.perf_counter()
            os.pread(fd, PAGE, at)
            timings.append((time.perf_counter() - began) * 1000)
    finally:
        os.close(fd)
    drop_files([path])
    cuts = statistics.quantiles(timings, n=20)
    return statistics.median(timings), cuts[-1]


class DiskCache:
    """One database's files and the processes that read them."""

    def __init__(self, files: Callable[[], list[Path]], readers: Callable[[], list[int]]) -> None:
        self._files = files
        self._readers = readers

    def drop(self) -> None:
        drop_files(self._files())

    def latency(self) -> tuple[float, float]:
        """:func:`random_reads` of the database's largest file."""
        return random_reads(self._files())

    def read_bytes(self) -> int:
        return read_bytes(self._readers())

    def pages_since(self, before: int) -> int:
        return (self.read_bytes() - before) // PAGE


def sqlite_cache(path: Path, reader: int | None = None) -> DiskCache:
    """The SQLite file at ``path`` (and its WAL), read by process ``reader`` (default: this
    one)."""
    pid = os.getpid() if reader is None else reader
    return DiskCache(lambda: [path, Path(f"{path}-wal")], lambda: [pid])


def postgres_cache(data_directory: Path, database_oid: int) -> DiskCache:
    """A PostgreSQL database's files, read by the server's processes. ``data_directory`` is
    the server's (``SHOW data_directory``, readable by a superuser)."""
    base = data_directory / "base" / str(database_oid)
    postmaster = int((data_directory / "postmaster.pid").read_text().split()[0])

    def files() -> list[Path]:
        return [path for path in base.iterdir() if path.is_file()]

    return DiskCache(files, lambda: [postmaster, *children(postmaster)])
