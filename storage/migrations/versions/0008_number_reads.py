"""Issue 18's bounded per-number reads of the rules: ``ix_calls_number_missed``, the missed
incoming calls (those with an attention window) by number and end.

A write reads, of its number's calls, only those it can change (``storage.store``, "Bounded
reads"); the missed calls an answered call may be the later contact of are the ones that
ended at most one window before it, found by this partial index. ``ix_calls_number``
(``number, started_at``) already serves the number's first calls and its answered calls.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHERE = sa.text("window_closes_at IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_calls_number_missed",
        "calls",
        ["number", "ended_at"],
        sqlite_where=_WHERE,
        postgresql_where=_WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_calls_number_missed", table_name="calls")
