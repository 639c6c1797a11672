"""Fixtures shared by test modules: the real databases of tests/db.py, and the HTTP API over
a seeded journal of tests/http_support.py."""

from tests.db import database, empty_database, journal
from tests.http_support import make_api, sqlite_template

__all__ = ["database", "empty_database", "journal", "make_api", "sqlite_template"]
