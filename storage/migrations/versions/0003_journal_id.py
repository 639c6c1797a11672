"""The journal's identity: ``journal_state.journal_id``, a random UUID.

Made here, once: for a new database right after ``0001`` created it, for an existing one on
its upgrade. ``GET /changes`` returns it in every answer, so that 1C notices when the journal
behind the URL is another one (a new database, a different server) than the one its saved
version belongs to, and reads everything again from version 0.

The column is added nullable, filled, then made NOT NULL (on SQLite by Alembic's batch mode,
which copies the one-row table).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("journal_state") as batch:
        batch.add_column(sa.Column("journal_id", sa.String(36), nullable=True))
    op.get_bind().execute(
        sa.text("UPDATE journal_state SET journal_id = :journal_id"),
        {"journal_id": str(uuid.uuid4())},
    )
    with op.batch_alter_table("journal_state") as batch:
        batch.alter_column("journal_id", existing_type=sa.String(36), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("journal_state") as batch:
        batch.drop_column("journal_id")
