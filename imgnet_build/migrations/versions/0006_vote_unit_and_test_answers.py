"""labeling: a vote is unique per (worker, cluster, category); test (sandbox) tasks, votes and labels are marked

Existing votes get the cluster of their image. When a worker voted twice on one cluster of a
category (two images of it, before this revision), only the first vote keeps its cluster: the
later one stays stored but no longer counts. MTurk sandbox tasks (batch `…-mturk-sandbox`) and
their votes become test answers.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 12:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('test', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('label', schema=None) as batch_op:
        batch_op.add_column(sa.Column('test', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('vote', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cluster_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                      nullable=True))
        batch_op.add_column(sa.Column('test', sa.Boolean(), nullable=False, server_default=sa.false()))
    connection = op.get_bind()
    connection.execute(sa.text("UPDATE task SET test = :yes WHERE batch LIKE '%-mturk-sandbox'"), {"yes": True})
    connection.execute(sa.text("UPDATE vote SET test = :yes WHERE assignment_id IN (SELECT assignment.id FROM "
                               "assignment JOIN task ON task.id = assignment.task_id WHERE task.test = :yes)"),
                       {"yes": True})
    rows = connection.execute(sa.text("SELECT vote.id, vote.worker_id, image.cluster_id, vote.category_id FROM vote "
                                      "JOIN image ON image.sha256 = vote.image_sha256 "
                                      "WHERE image.cluster_id IS NOT NULL ORDER BY vote.id")).all()
    seen, first = set(), []
    for vote_id, worker_id, cluster_id, category_id in rows:
        if (worker_id, cluster_id, category_id) not in seen:
            seen.add((worker_id, cluster_id, category_id))
            first.append({"vote_id": vote_id, "cluster": cluster_id})
    for start in range(0, len(first), 1000):
        connection.execute(sa.text("UPDATE vote SET cluster_id = :cluster WHERE id = :vote_id"),
                           first[start:start + 1000])
    with op.batch_alter_table('vote', schema=None) as batch_op:
        batch_op.create_foreign_key('fk_vote_cluster', 'cluster', ['cluster_id'], ['id'])
        batch_op.create_unique_constraint('uq_vote_cluster', ['worker_id', 'cluster_id', 'category_id'])
        batch_op.create_index('ix_vote_cluster', ['cluster_id', 'category_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('vote', schema=None) as batch_op:
        batch_op.drop_index('ix_vote_cluster')
        batch_op.drop_constraint('uq_vote_cluster', type_='unique')
        batch_op.drop_constraint('fk_vote_cluster', type_='foreignkey')
        batch_op.drop_column('test')
        batch_op.drop_column('cluster_id')
    with op.batch_alter_table('label', schema=None) as batch_op:
        batch_op.drop_column('test')
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_column('test')
