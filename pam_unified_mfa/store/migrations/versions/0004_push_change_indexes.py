"""push change indexes: the service's sweep reads pushes created or decided since a time

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_push_created", "push_challenges", ["created_at"], unique=False)
    op.create_index("ix_push_decided", "push_challenges", ["decided_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_push_decided", table_name="push_challenges")
    op.drop_index("ix_push_created", table_name="push_challenges")
