"""Per-key token budgets and reasoning policy, key rotation with a grace period, and the audit log.

Every new key column is nullable (NULL: no budget, no policy, no previous secret), so the keys already
stored keep working unchanged.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("budgets", sa.Text(), nullable=True))
        batch.add_column(sa.Column("reasoning_policy", sa.Text(), nullable=True))
        batch.add_column(sa.Column("previous_key_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("previous_display_prefix", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("previous_last_four", sa.String(length=4), nullable=True))
        batch.add_column(sa.Column("previous_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_api_keys_previous_key_hash", ["previous_key_hash"], unique=False)
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=True),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_previous_key_hash")
        for name in (
            "previous_expires_at",
            "previous_last_four",
            "previous_display_prefix",
            "previous_key_hash",
            "reasoning_policy",
            "budgets",
        ):
            batch.drop_column(name)
