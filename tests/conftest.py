"""Fixtures shared by test modules: the real databases of tests/db.py, and the HTTP API over
a seeded journal of tests/http_support.py. And one collection check: every test has a node
id of its own."""

from collections import Counter

import pytest

from tests.db import database, empty_database, journal
from tests.http_support import make_api, sqlite_template

__all__ = ["database", "empty_database", "journal", "make_api", "sqlite_template"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a collection where two tests share a node id.

    ``scripts/test`` runs the suite on pytest-xdist's workers, which schedule tests by node
    id: of tests sharing one, a single one runs and the rest vanish from the count without a
    word (pytest 9.2 gave schemathesis' 26 operation tests one id; 25 of them were lost).
    """
    counts = Counter(item.nodeid for item in items)
    shared = sorted(nodeid for nodeid, count in counts.items() if count > 1)
    if shared:
        raise pytest.UsageError(
            "tests sharing a node id (pytest-xdist would run only one of each): "
            + ", ".join(f"{nodeid} ×{counts[nodeid]}" for nodeid in shared)
        )
