"""radius replies shared across nodes

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "radius_replies",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("reply", sa.LargeBinary(), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index(op.f("ix_radius_replies_expires_at"), "radius_replies", ["expires_at"],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_radius_replies_expires_at"), table_name="radius_replies")
    op.drop_table("radius_replies")
