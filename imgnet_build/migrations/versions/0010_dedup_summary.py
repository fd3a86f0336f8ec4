"""dedup_summary: the duplicate counts and what they were counted from, so a dedup rerun or
`imgnet status` with nothing new reads them instead of counting a million rows again

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 15:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'dedup_summary',
        sa.Column('id', sa.Integer(), nullable=False),
        *[sa.Column(name, sa.BigInteger(), nullable=False) for name in (
            'images', 'ok_candidates', 'exact_files', 'exact_pixels', 'near', 'clusters',
            'conflicts')],
        sa.Column('counted_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade() -> None:
    op.drop_table('dedup_summary')
