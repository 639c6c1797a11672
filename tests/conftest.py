"""Fixtures shared by test modules: the real databases of tests/db.py."""

from tests.db import database, empty_database, journal

__all__ = ["database", "empty_database", "journal"]
