"""Issue 18's read side: every journal view in a page's worth of index entries at ten
million calls.

``ix_calls_class`` orders the calls by every flag a filter combines — ``direction``,
``answered``, ``attention``, ``first_contact``, ``unregistered``, ``status`` — and then by
journal order ``(started_at, id)``. A combined filter ("lost first contacts", "my missed calls
needing attention", "outgoing needing attention": none of them has an index of its own, and
the single-flag index the planner picked walked and tested the rows of its flag one by one,
hundreds of thousands for a rare or empty combination) is read as a merge of one range of this
index per matching combination (:func:`storage.queries.journal_classes`): each range is in
journal order already, holds only rows that match, and the merge stops after a page. See
``docs/storage.md``.

Built in place (``CREATE INDEX``; no table copy): at ten million calls it takes the time
``docs/benchmarks.md`` gives, during which SQLite's writer waits (the migration runs before
the daemon starts serving).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLASS_INDEX = "ix_calls_class"
CLASS_COLUMNS = [
    "direction",
    "answered",
    "attention",
    "first_contact",
    "unregistered",
    "status",
    "started_at",
    "id",
]


def upgrade() -> None:
    op.create_index(CLASS_INDEX, "calls", CLASS_COLUMNS)
    if op.get_bind().dialect.name == "sqlite":
        # The planner's statistics for the new index (the others keep theirs).
        op.execute(f"ANALYZE {CLASS_INDEX}")


def downgrade() -> None:
    op.drop_index(CLASS_INDEX, table_name="calls")
