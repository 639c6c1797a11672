"""The assembler and the rules stay sans-IO (STYLE.md rule 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("asyncio", "panoramisk", "sqlalchemy", "aiohttp", "structlog", "aiosqlite", "asyncpg")


@pytest.mark.parametrize(
    "module",
    [
        "connector.assembly",
        "connector.events",
        "storage.rules",
        "storage.memory",
        "storage.journal",
    ],
)
def test_module_pulls_in_no_io_library(module: str) -> None:
    # A fresh interpreter: whatever the module imports, directly or not, shows in sys.modules.
    code = (
        "import sys, importlib\n"
        f"importlib.import_module({module!r})\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "", f"{module} imports {result.stdout.strip()}"


def test_the_check_would_notice_an_io_import() -> None:
    # The same probe on a module that does import asyncio must report it.
    code = (
        "import sys, importlib\nimportlib.import_module('asyncio')\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'asyncio'))[:7])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "asyncio"
