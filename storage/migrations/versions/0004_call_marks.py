"""Issue 15's marks: withheld numbers, calls taken on a mobile, employees' mobiles.

- ``calls.number_withheld``: the caller withheld their number (presentation prohibited);
  the number is kept for calling back, 1C shows «Номер скрыт».
- ``call_participants.on_mobile`` and ``call_legs.on_mobile``: the employee was reached on
  (talked on, or was only rung on) one of their mobiles, over a trunk.
- ``employee_mobiles``: an employee's external numbers, normalised (the primary key: a
  number is at most one employee's mobile), as written (``raw``), in the employee's order
  (``ordinal``).

The columns are added with a ``false`` default, which is also what every call written
before this migration was. The transfer kind ``blonde`` needs no change (``kind`` is a
string).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MARKS = (
    ("calls", "number_withheld"),
    ("call_participants", "on_mobile"),
    ("call_legs", "on_mobile"),
)


def upgrade() -> None:
    # A plain ADD COLUMN (no batch): SQLite adds a column with a constant default in place,
    # without copying ``calls`` (whose search triggers a copy would drop).
    for table, column in _MARKS:
        op.add_column(
            table,
            sa.Column(column, sa.Boolean(), nullable=False, server_default=sa.false()),
        )
    op.create_table(
        "employee_mobiles",
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("raw", sa.String(64), nullable=False),
        sa.Column("employee_id", sa.String(64), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["employee_id"],
            ["employees.id"],
            ondelete="CASCADE",
            name=op.f("fk_employee_mobiles_employee_id_employees"),
        ),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_employee_mobiles")),
    )
    op.create_index(op.f("ix_employee_mobiles_employee_id"), "employee_mobiles", ["employee_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_employee_mobiles_employee_id"), table_name="employee_mobiles")
    op.drop_table("employee_mobiles")
    # ALTER TABLE … DROP COLUMN (SQLite 3.35+): no index or constraint names these columns.
    for table, column in reversed(_MARKS):
        op.drop_column(table, column)
