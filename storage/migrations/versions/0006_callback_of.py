"""Issue 17's click-to-call: ``calls.callback_of``, the call a call returns.

A call placed from the journal (``POST /api/v1/originate`` with ``call_id``) is linked to the
call it returns; every call written before this migration returns none (NULL). A plain
ADD COLUMN (no batch): SQLite adds a nullable column in place, without copying ``calls``
(whose search triggers a copy would drop).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "calls",
        sa.Column(
            "callback_of", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
    )


def downgrade() -> None:
    # ALTER TABLE … DROP COLUMN (SQLite 3.35+): no index or constraint names the column.
    op.drop_column("calls", "callback_of")
