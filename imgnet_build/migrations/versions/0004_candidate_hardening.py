"""candidate: keyed on a hash of the URL (any length), licence as text, claims (leases) for fetch runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 17:30:00.000000
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.add_column(sa.Column('url_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('lease_owner', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.alter_column('license', existing_type=sa.String(length=255), type_=sa.Text(),
                              existing_nullable=True)
    connection = op.get_bind()
    candidate = sa.table('candidate', sa.column('id', sa.Integer()), sa.column('url', sa.Text()),
                         sa.column('url_hash', sa.String(64)))
    rows = connection.execute(sa.select(candidate.c.id, candidate.c.url)).all()
    for start in range(0, len(rows), 1000):
        connection.execute(
            candidate.update().where(candidate.c.id == sa.bindparam('row_id')).values(url_hash=sa.bindparam('hash')),
            [{'row_id': id_, 'hash': hashlib.sha256(url.encode('utf-8', 'surrogatepass')).hexdigest()}
             for id_, url in rows[start:start + 1000]])
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.alter_column('url_hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.drop_constraint('uq_candidate', type_='unique')
        batch_op.create_unique_constraint('uq_candidate', ['category_id', 'url_hash'])
        batch_op.create_index('ix_candidate_url_hash', ['url_hash'], unique=False)
        batch_op.create_index('ix_candidate_lease', ['lease_owner'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.drop_index('ix_candidate_lease')
        batch_op.drop_index('ix_candidate_url_hash')
        batch_op.drop_constraint('uq_candidate', type_='unique')
        batch_op.create_unique_constraint('uq_candidate', ['category_id', 'url'])
        batch_op.alter_column('license', existing_type=sa.Text(), type_=sa.String(length=255),
                              existing_nullable=True)
        batch_op.drop_column('lease_until')
        batch_op.drop_column('lease_owner')
        batch_op.drop_column('url_hash')
