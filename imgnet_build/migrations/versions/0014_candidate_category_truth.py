"""ix_candidate_category also holds truth: the simulated crowd's truth check reads the index only

`label submit --backend simulated` refuses pairs without truth. Its query asks, per chunk of 500
categories, for the ok candidates whose truth is NULL: on (category_id, status, image_sha256)
each candidate's table row was read for its truth (about 60 ms of CPU per chunk at a million
images, 38 chunks); with truth in the index the query reads the index only (about 3 ms). The
pairs query that uses the index stays index-only.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27 02:40:00.000000
"""

from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_candidate_category', table_name='candidate')
    op.create_index('ix_candidate_category', 'candidate', ['category_id', 'status', 'image_sha256', 'truth'])


def downgrade() -> None:
    op.drop_index('ix_candidate_category', table_name='candidate')
    op.create_index('ix_candidate_category', 'candidate', ['category_id', 'status', 'image_sha256'])
