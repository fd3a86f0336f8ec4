"""image.dedup_threshold: the threshold of the dedup run that last clustered the image

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 06:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dedup_threshold', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.drop_column('dedup_threshold')
