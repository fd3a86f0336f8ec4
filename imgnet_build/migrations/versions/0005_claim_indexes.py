"""candidate: indexes for claiming pending rows in order and for "already stored?" by source SHA-1

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 12:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.create_index('ix_candidate_pending', ['category_id', 'rank', 'id'], unique=False,
                              sqlite_where=PENDING, postgresql_where=PENDING)
        batch_op.create_index('ix_candidate_source_sha1', ['source_sha1'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.drop_index('ix_candidate_source_sha1')
        batch_op.drop_index('ix_candidate_pending')
