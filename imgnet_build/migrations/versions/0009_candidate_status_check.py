"""candidate.status: a CHECK constraint, as every other status column has

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 13:30:00.000000
"""

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.create_check_constraint('ck_candidate_status', "status IN ('pending', 'ok', 'failed', 'skipped')")


def downgrade() -> None:
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.drop_constraint('ck_candidate_status', type_='check')
