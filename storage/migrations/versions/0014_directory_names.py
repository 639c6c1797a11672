"""Issue 18: the names of customers and contact persons read from one index entry.

Every journal page and every page of ``GET /changes`` joins its calls to ``customers`` and
``contacts`` by id for their names. Through a primary key on a text id that is two B-tree
descents on SQLite (the key's index, then the table by rowid) and, on PostgreSQL, the index and
then the heap. An index of ``(id, name)`` covers the join: one descent, one leaf page. Cold, a
``/changes`` of 500 calls at ten million calls (some 200 customers and 60 contact persons)
read 680-1,150 pages for its rows and 470-670 with these indexes (``bench.issue18-quiet``).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_customers_names", "customers", ["id", "name"])
    op.create_index("ix_contacts_names", "contacts", ["id", "name"])
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ANALYZE customers")
        op.execute("ANALYZE contacts")


def downgrade() -> None:
    op.drop_index("ix_contacts_names", table_name="contacts")
    op.drop_index("ix_customers_names", table_name="customers")
