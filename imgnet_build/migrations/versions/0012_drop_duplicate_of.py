"""image.duplicate_of goes: the cluster (image.cluster_id, cluster.representative) is the only grouping

It was a cache of the cluster's representative, written by dedup beside the cluster; every
reader now asks the cluster. A downgrade writes it back from the clusters.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26 16:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.drop_index('ix_image_duplicate_of')
        batch_op.drop_column('duplicate_of')


def downgrade() -> None:
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.add_column(sa.Column('duplicate_of', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_image_duplicate_of', ['duplicate_of'], unique=False)
    op.execute("UPDATE image SET duplicate_of = (SELECT cluster.representative FROM cluster "
               "WHERE cluster.id = image.cluster_id AND cluster.representative != image.sha256)")
