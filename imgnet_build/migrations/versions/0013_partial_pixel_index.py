"""ix_image_pixel indexes only the images with a pixel digest (pixel_sha256 IS NOT NULL)

Dedup digests the decoded pixels of a few images (those with a near twin), so the column is
mostly NULL. Its count of exact-pixel duplicates filters on `pixel_sha256 IS NOT NULL`: SQLite
scanned the whole image table for it (with or without ANALYZE statistics); on the partial
index it reads only the digested images. Lookups by digest (`pixel_sha256 = ?`) imply the
index's condition and keep using it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26 20:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

PIXELS = sa.text("pixel_sha256 IS NOT NULL")


def upgrade() -> None:
    op.drop_index('ix_image_pixel', table_name='image')
    op.create_index('ix_image_pixel', 'image', ['pixel_sha256'], sqlite_where=PIXELS, postgresql_where=PIXELS)


def downgrade() -> None:
    op.drop_index('ix_image_pixel', table_name='image')
    op.create_index('ix_image_pixel', 'image', ['pixel_sha256'])
