"""Issue 18: a number's calls in journal order, ``(number, started_at, id)``.

A search's key opens a page of its number's calls newest first, ``ORDER BY started_at DESC,
id DESC``. SQLite's ``ix_calls_number (number, started_at)`` gives that order (its entries
end with the rowid, which is ``id``); PostgreSQL's does not, so its planner sorted the
number's calls: with a filter it estimated one call of the number would pass, and read and
sorted every call of it. The busy number (50,000 calls at ten million) with lost calls: every
row fetched, 122 ms, for a page that is within its newest 1,700. With ``id`` in the index the
order is the index's, and the walk stops after a page on both engines. The rules' per-number
reads (``number``, then a range of ``started_at``) read the same entries as before.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild(columns: list[str]) -> None:
    op.drop_index("ix_calls_number", table_name="calls")
    op.create_index("ix_calls_number", "calls", columns)
    if op.get_bind().dialect.name == "sqlite":
        # The planner's statistics of the index, from a sample (ANALYZE of the whole table
        # reads every index: 90 s at ten million calls).
        op.execute("PRAGMA analysis_limit = 2000")
        op.execute("ANALYZE ix_calls_number")
        op.execute("PRAGMA analysis_limit = 0")
    else:
        op.execute("ANALYZE calls")


def upgrade() -> None:
    _rebuild(["number", "started_at", "id"])


def downgrade() -> None:
    _rebuild(["number", "started_at"])
