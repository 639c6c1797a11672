"""What every benchmark writes: the machine it ran on, and its own section of
``docs/benchmarks.md``, replaced on each run so that several benchmarks share the file."""

from __future__ import annotations

import os
import platform
import re
import shlex
import statistics
import sys
import textwrap
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

__all__ = [
    "BENCHMARKS",
    "command_line",
    "machine",
    "median",
    "prose",
    "table",
    "update_section",
]

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

_HEADER = """# Benchmarks

Figures written by the scripts under `bench/`; each section names the machine and the exact
command that reproduces it. The machines are noisy: compare figures of one run, side by side,
and read the ratios rather than the absolute numbers.
"""


def machine() -> str:
    """CPU model, cores, RAM, OS and Python, on one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    try:
        panoramisk = metadata.version("panoramisk")
    except metadata.PackageNotFoundError:
        panoramisk = "?"
    return (
        f"{cpu}, {os.cpu_count()} CPUs (nproc), {ram} RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()} "
        f"({platform.python_implementation()}), panoramisk {panoramisk}"
    )


def command_line() -> str:
    """How this benchmark was started, as a shell command from the repository root; a
    database URL with a password in it is written as the command that prints the test one."""
    module = sys.modules["__main__"].__spec__
    head = ["python", "-m", module.name] if module is not None else ["python", sys.argv[0]]
    marker = "\0database-url\0"
    args = [marker if re.match(r"^[a-z+]+://[^/@]*:[^/@]*@", a) else a for a in sys.argv[1:]]
    return shlex.join([*head, *args]).replace(shlex.quote(marker), '"$(scripts/test-postgres)"')


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def prose(text: str, width: int = 95) -> str:
    """Paragraphs (separated by blank lines) re-wrapped: figures put in them change lengths."""
    paragraphs = [" ".join(p.split()) for p in text.strip().split("\n\n")]
    return "\n\n".join(textwrap.fill(p, width, break_on_hyphens=False) for p in paragraphs)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded so that it also reads well on a terminal."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def update_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    """Put ``body`` between this benchmark's markers in ``path``, replacing what was there."""
    start = f"<!-- {name}:start -->"
    end = f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text("utf-8") if path.exists() else _HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
