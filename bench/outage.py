"""PostgreSQL outage under load (issue "Holes found by attacking the daemon", point 8).

A private PostgreSQL cluster (``initdb`` as the ``postgres`` user in a temporary directory, its
own port and socket: the shared test cluster is never touched) holds the journal.
``pbxjournal run`` is a real subprocess; an in-process :class:`~connector.fakepbx.FakePbx`
streams a synthetic capture (:mod:`bench.synth`) at ``--rate`` calls started per second. After
``--warmup`` seconds the cluster is stopped (``pg_ctl stop -m fast``) for ``--outage`` seconds,
then started again; the stream runs on throughout. When the stream has ended the run waits
until the journal holds every call (or ``--settle`` seconds pass), stops the daemon with
SIGTERM and reports: calls sent, calls in the journal, calls missing, conversations with more
than one row, the daemon's peak RSS (``VmHWM``) and the spool's peak size, and how long the
journal took to catch up after the database came back.

    python -m bench.outage                       # the issue's run: 20 calls/s, 10 minutes down
    python -m bench.outage --outage 30 --calls 1500   # a short one

Exit status 1 when a call is missing or written twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.daemons import child_env, free_port, pbxjournal_command, write_config
from bench.synth import build_capture, load_templates
from connector.fakepbx import FakePbx


def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        raise SystemExit("no PostgreSQL server binaries under /usr/lib/postgresql")
    return versions[-1].parent


class Cluster:
    """A throw-away PostgreSQL cluster run as the ``postgres`` user."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.bin = _pg_bin()
        self.user = pwd.getpwnam("postgres")

    def _run(self, *argv: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def init(self) -> None:
        self.directory.mkdir(parents=True)
        os.chown(self.directory, self.user.pw_uid, self.user.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.directory / "data"),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        )

    def start(self) -> None:
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.directory / "data"),
            "-o",
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1",
            "-l",
            str(self.directory / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop"
        )

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"


def _rss_peak_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


async def _journal(url: str) -> Counter[str]:
    import asyncpg  # type: ignore[import-untyped]

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    try:
        connection = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return Counter()
    try:
        rows = await connection.fetch("SELECT conversation_id FROM calls")
    except asyncpg.PostgresError:
        return Counter()
    finally:
        await connection.close()
    return Counter(str(row[0]) for row in rows)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    cluster = Cluster(workdir / "pg", free_port())
    cluster.init()
    cluster.start()
    capture = build_capture(
        workdir / "stream.ami",
        calls=args.calls,
        rate=args.rate,
        seed=args.seed,
        recvlog=False,
        journal_only=True,
        templates=load_templates(),
    )
    wanted = {call.conversation_id for call in capture.calls}
    pbx = FakePbx([capture.path], username="u", secret="p", speed=1.0)
    port = await pbx.start()
    config = workdir / "pbxjournal.toml"
    spool = workdir / "spool.jsonl"
    write_config(
        config,
        ami_port=port,
        username="u",
        secret="p",
        pbx_name="main",
        grace=3.0,
        url=cluster.url,
        recordings=workdir,
        http_port=free_port(),
    )
    with config.open("a", encoding="utf-8") as extra:
        extra.write(f'\n[writer]\nspool = "{spool}"\n')
    process = await asyncio.create_subprocess_exec(
        *pbxjournal_command(),
        "run",
        "--config",
        str(config),
        env=child_env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    loop = asyncio.get_running_loop()
    spool_peak = 0
    rss_peak = 0

    async def sample() -> None:
        nonlocal spool_peak, rss_peak
        while True:
            with contextlib.suppress(OSError):
                spool_peak = max(spool_peak, spool.stat().st_size)
            rss_peak = max(rss_peak, _rss_peak_kb(process.pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    caught_up_after: float | None = None
    try:
        await asyncio.sleep(args.warmup)
        print(f"stopping PostgreSQL for {args.outage:g} s", file=sys.stderr)
        await asyncio.to_thread(cluster.stop)
        await asyncio.sleep(args.outage)
        await asyncio.to_thread(cluster.start)
        back = loop.time()
        print("PostgreSQL back", file=sys.stderr)
        await asyncio.wait_for(pbx.wait_done(), capture.seconds + args.settle + 60)
        deadline = loop.time() + args.settle
        journal: Counter[str] = Counter()
        while loop.time() < deadline:
            journal = await _journal(cluster.url)
            if set(journal) >= wanted:
                caught_up_after = loop.time() - back
                break
            await asyncio.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        began = loop.time()
        code = await asyncio.wait_for(process.wait(), 120)
        stop_seconds = loop.time() - began
    finally:
        sampler.cancel()
        if process.returncode is None:
            process.kill()
            await process.wait()
        await pbx.close(grace=0.1)
    journal = await _journal(cluster.url)
    with contextlib.suppress(subprocess.CalledProcessError):
        cluster.stop()
    return {
        "rate_calls_per_second": args.rate,
        "outage_seconds": args.outage,
        "calls_sent": len(wanted),
        "calls_in_journal": len(set(journal) & wanted),
        "missing": len(wanted - set(journal)),
        "duplicates": sum(1 for count in journal.values() if count > 1),
        "ghosts": len(set(journal) - wanted),
        "caught_up_seconds_after_database_back": None
        if caught_up_after is None
        else round(caught_up_after, 1),
        "peak_rss_mb": round(rss_peak / 1024, 1),
        "spool_peak_mb": round(spool_peak / 1e6, 2),
        "stop_seconds": round(stop_seconds, 2),
        "exit_code": code,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="calls started per second")
    parser.add_argument("--outage", type=float, default=600.0, help="seconds PostgreSQL is down")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before the outage")
    parser.add_argument("--calls", type=int, default=None, help="default: rate x (outage + 60 s)")
    parser.add_argument("--settle", type=float, default=180.0, help="seconds to catch up")
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args(argv)
    if args.calls is None:
        args.calls = int(args.rate * (args.warmup + args.outage + 60))
    if os.geteuid() != 0:
        raise SystemExit("run as root: the private cluster runs as the postgres user")
    workdir = Path(tempfile.mkdtemp(prefix="pbxjournal-outage-"))
    os.chmod(workdir, 0o755)
    began = time.monotonic()
    try:
        result = asyncio.run(run(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["wall_seconds"] = round(time.monotonic() - began, 1)
    print(json.dumps(result, indent=2))
    return 0 if result["missing"] == 0 and result["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
