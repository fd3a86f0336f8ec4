"""scale: indexes for the hot queries at a million rows, 64-bit candidate ids on PostgreSQL

- candidate: ok pairs per category (covering);
- vote: votes per pair per category;
- image: rows not hashed yet (partial), rows per dedup threshold (what a rerun must look at),
  rows by pHash; `detail`, the grey-level spread dedup measures to set near-constant images apart.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 12:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

UNHASHED = sa.text("phash IS NULL")
HASHED = sa.text("phash IS NOT NULL")


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.alter_column('candidate', 'id', existing_type=sa.Integer(), type_=sa.BigInteger())
    op.create_index('ix_candidate_category', 'candidate', ['category_id', 'status', 'image_sha256'])
    op.create_index('ix_vote_category', 'vote', ['category_id', 'image_sha256'])
    op.create_index('ix_image_unhashed', 'image', ['sha256'], sqlite_where=UNHASHED, postgresql_where=UNHASHED)
    op.create_index('ix_image_dedup_threshold', 'image', ['dedup_threshold', 'phash'])
    op.create_index('ix_image_phash', 'image', ['phash'], sqlite_where=HASHED, postgresql_where=HASHED)
    op.add_column('image', sa.Column('detail', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.drop_column('detail')
    for table, name in (('image', 'ix_image_phash'), ('image', 'ix_image_dedup_threshold'),
                        ('image', 'ix_image_unhashed'), ('vote', 'ix_vote_category'),
                        ('candidate', 'ix_candidate_category')):
        op.drop_index(name, table_name=table)
    if op.get_bind().dialect.name == 'postgresql':
        op.alter_column('candidate', 'id', existing_type=sa.BigInteger(), type_=sa.Integer())
