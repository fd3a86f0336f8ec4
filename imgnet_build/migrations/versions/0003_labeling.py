"""labeling: stable clusters, workers, task items as rows, votes per worker, labels per cluster

The 0.1 task/assignment/vote/label tables were placeholders that no command wrote; they
are replaced. Images get a cluster on the next `imgnet dedup`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 16:58:50.057665
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


PLACEHOLDERS = ("vote", "assignment", "task", "label")


def upgrade() -> None:
    for table in PLACEHOLDERS:  # children first
        op.drop_table(table)
    op.create_table('cluster',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('representative', sa.String(length=64), nullable=False),
    sa.Column('merged_into', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('split', sa.String(length=8), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("split IN ('train', 'val')", name='ck_cluster_split'),
    sa.ForeignKeyConstraint(['merged_into'], ['cluster.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('cluster', schema=None) as batch_op:
        batch_op.create_index('ix_cluster_key', ['key'], unique=False)

    op.create_table('worker',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('backend', sa.String(length=32), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('token_hash', sa.String(length=64), nullable=True),
    sa.Column('accuracy', sa.Float(), nullable=True),
    sa.Column('control_answers', sa.Integer(), nullable=False),
    sa.Column('control_correct', sa.Integer(), nullable=False),
    sa.Column('blocked', sa.Boolean(), nullable=False),
    sa.Column('revoked', sa.Boolean(), nullable=False),
    sa.Column('simulated', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('backend', 'external_id', name='uq_worker'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_table('category_consensus',
    sa.Column('category_id', sa.Integer(), nullable=False),
    sa.Column('prior', sa.Float(), nullable=True),
    sa.Column('table', sa.JSON(), nullable=True),
    sa.Column('seed_images', sa.Integer(), nullable=False),
    sa.Column('hard', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['category_id'], ['category.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('category_id')
    )
    op.create_table('label',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('cluster_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('yes_votes', sa.Integer(), nullable=False),
    sa.Column('no_votes', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('simulated', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('accepted', 'rejected', 'undecided')", name='ck_label_status'),
    sa.ForeignKeyConstraint(['category_id'], ['category.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['cluster_id'], ['cluster.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cluster_id', 'category_id', name='uq_label')
    )
    with op.batch_alter_table('label', schema=None) as batch_op:
        batch_op.create_index('ix_label_category', ['category_id', 'status'], unique=False)

    op.create_table('label_history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('cluster_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('yes_votes', sa.Integer(), nullable=False),
    sa.Column('no_votes', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['category_id'], ['category.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['cluster_id'], ['cluster.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('label_history', schema=None) as batch_op:
        batch_op.create_index('ix_label_history_pair', ['cluster_id', 'category_id'], unique=False)

    op.create_table('task',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('batch', sa.String(length=64), nullable=False),
    sa.Column('backend', sa.String(length=32), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('assignments_wanted', sa.Integer(), nullable=False),
    sa.Column('reward', sa.String(length=16), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('new', 'open', 'done', 'expired')", name='ck_task_status'),
    sa.ForeignKeyConstraint(['category_id'], ['category.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.create_index('ix_task_category', ['category_id'], unique=False)
        batch_op.create_index('ix_task_status', ['status'], unique=False)

    op.create_table('assignment',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('task_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('worker_id', sa.Integer(), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('simulated', sa.Boolean(), nullable=False),
    sa.Column('feedback', sa.Text(), nullable=True),
    sa.Column('given_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('given', 'submitted', 'approved', 'rejected', 'abandoned')", name='ck_assignment_status'),
    sa.ForeignKeyConstraint(['task_id'], ['task.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['worker_id'], ['worker.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id', 'worker_id', name='uq_assignment')
    )
    with op.batch_alter_table('assignment', schema=None) as batch_op:
        batch_op.create_index('ix_assignment_status', ['status'], unique=False)
        batch_op.create_index('ix_assignment_worker', ['worker_id'], unique=False)

    op.create_table('gold',
    sa.Column('image_sha256', sa.String(length=64), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=False),
    sa.Column('answer', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['category_id'], ['category.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['image_sha256'], ['image.sha256'], ),
    sa.PrimaryKeyConstraint('image_sha256', 'category_id')
    )
    op.create_table('task_item',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('task_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('image_sha256', sa.String(length=64), nullable=False),
    sa.Column('cluster_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('expected', sa.Boolean(), nullable=True),
    sa.CheckConstraint("kind IN ('candidate', 'positive', 'negative')", name='ck_task_item_kind'),
    sa.ForeignKeyConstraint(['cluster_id'], ['cluster.id'], ),
    sa.ForeignKeyConstraint(['image_sha256'], ['image.sha256'], ),
    sa.ForeignKeyConstraint(['task_id'], ['task.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id', 'position', name='uq_task_item')
    )
    with op.batch_alter_table('task_item', schema=None) as batch_op:
        batch_op.create_index('ix_task_item_cluster', ['cluster_id'], unique=False)
        batch_op.create_index('ix_task_item_image', ['image_sha256'], unique=False)

    op.create_table('vote',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('assignment_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('worker_id', sa.Integer(), nullable=False),
    sa.Column('task_item_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('image_sha256', sa.String(length=64), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=False),
    sa.Column('answer', sa.Boolean(), nullable=False),
    sa.Column('control', sa.Boolean(), nullable=False),
    sa.Column('simulated', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['assignment_id'], ['assignment.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['category_id'], ['category.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['image_sha256'], ['image.sha256'], ),
    sa.ForeignKeyConstraint(['task_item_id'], ['task_item.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['worker_id'], ['worker.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('worker_id', 'image_sha256', 'category_id', name='uq_vote')
    )
    with op.batch_alter_table('vote', schema=None) as batch_op:
        batch_op.create_index('ix_vote_assignment', ['assignment_id'], unique=False)
        batch_op.create_index('ix_vote_pair', ['image_sha256', 'category_id'], unique=False)

    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cluster_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.create_index('ix_image_cluster', ['cluster_id'], unique=False)
        batch_op.create_foreign_key('fk_image_cluster', 'cluster', ['cluster_id'], ['id'])


def downgrade() -> None:  # drops what upgrade made and puts back the empty 0.1 placeholders
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.drop_constraint('fk_image_cluster', type_='foreignkey')
        batch_op.drop_index('ix_image_cluster')
        batch_op.drop_column('cluster_id')

    with op.batch_alter_table('vote', schema=None) as batch_op:
        batch_op.drop_index('ix_vote_pair')
        batch_op.drop_index('ix_vote_assignment')

    op.drop_table('vote')
    with op.batch_alter_table('task_item', schema=None) as batch_op:
        batch_op.drop_index('ix_task_item_image')
        batch_op.drop_index('ix_task_item_cluster')

    op.drop_table('task_item')
    op.drop_table('gold')
    with op.batch_alter_table('assignment', schema=None) as batch_op:
        batch_op.drop_index('ix_assignment_worker')
        batch_op.drop_index('ix_assignment_status')

    op.drop_table('assignment')
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_index('ix_task_status')
        batch_op.drop_index('ix_task_category')

    op.drop_table('task')
    with op.batch_alter_table('label_history', schema=None) as batch_op:
        batch_op.drop_index('ix_label_history_pair')

    op.drop_table('label_history')
    with op.batch_alter_table('label', schema=None) as batch_op:
        batch_op.drop_index('ix_label_category')

    op.drop_table('label')
    op.drop_table('category_consensus')
    op.drop_table('worker')
    with op.batch_alter_table('cluster', schema=None) as batch_op:
        batch_op.drop_index('ix_cluster_key')

    op.drop_table('cluster')
    _create_placeholders()


def _create_placeholders() -> None:
    op.create_table('label',
    sa.Column('image_sha256', sa.String(length=64), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('yes_votes', sa.Integer(), nullable=False),
    sa.Column('no_votes', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['category_id'], ['category.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['image_sha256'], ['image.sha256'], ),
    sa.PrimaryKeyConstraint('image_sha256', 'category_id')
    )
    op.create_table('task',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=False),
    sa.Column('batch', sa.String(length=64), nullable=False),
    sa.Column('backend', sa.String(length=32), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('items', sa.JSON(), nullable=False),
    sa.Column('assignments_wanted', sa.Integer(), nullable=False),
    sa.Column('reward', sa.String(length=16), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['category_id'], ['category.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.create_index('ix_task_status', ['status'], unique=False)
    op.create_table('assignment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('worker_id', sa.String(length=255), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['task.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id', 'worker_id', name='uq_assignment')
    )
    op.create_table('vote',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('assignment_id', sa.Integer(), nullable=False),
    sa.Column('image_sha256', sa.String(length=64), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=False),
    sa.Column('answer', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['assignment_id'], ['assignment.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['category_id'], ['category.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['image_sha256'], ['image.sha256'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('assignment_id', 'image_sha256', 'category_id', name='uq_vote')
    )
    with op.batch_alter_table('vote', schema=None) as batch_op:
        batch_op.create_index('ix_vote_pair', ['image_sha256', 'category_id'], unique=False)
