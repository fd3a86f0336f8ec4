"""worker: both coins (sensitivity, specificity) and the interval of the balanced accuracy

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 12:50:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('worker', schema=None) as batch_op:
        batch_op.add_column(sa.Column('accuracy_low', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('accuracy_high', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('sensitivity', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('specificity', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('worker', schema=None) as batch_op:
        batch_op.drop_column('specificity')
        batch_op.drop_column('sensitivity')
        batch_op.drop_column('accuracy_high')
        batch_op.drop_column('accuracy_low')
