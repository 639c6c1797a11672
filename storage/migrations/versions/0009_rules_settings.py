"""Issue 18's repair of a changed rules setting: ``journal_state.rules_window``.

The attention window the stored verdicts were computed with (``AttentionWindow.definition``:
``fixed 3600s`` or ``end_of_day Europe/Moscow``). A journal written before this migration has
none recorded (NULL: unknown): the daemon re-evaluates its calls with a window once at its
next start, then records the configured one (``SqlJournal.repair_window``). A plain
ADD COLUMN: SQLite adds a nullable column in place.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("journal_state", sa.Column("rules_window", sa.String(100), nullable=True))


def downgrade() -> None:
    op.drop_column("journal_state", "rules_window")
