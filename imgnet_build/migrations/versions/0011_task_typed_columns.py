"""task: typed columns for what the batch name and two strings encoded

`live` (MTurk's live endpoint; the batch ended in `-mturk-live`), `publish_token` (MTurk's
UniqueRequestToken, kept as `pending:<token>` in `external_id` until the HIT id came back),
`reward_cents` (was the text `reward`, e.g. "0.05") and `crowd` (the simulated crowd's
parameters, parsed from the batch name `r1-sim-w60-a0.6-0.95-p0.1-s0`).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 16:45:00.000000
"""

import re
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

PENDING = "pending:"
CROWD = re.compile(r"-sim-w(\d+)-a([0-9.]+)-([0-9.]+)-p([0-9.]+)(?:-c([0-9.]+))?-s(-?\d+)$")


def _cents(reward: str | None) -> int | None:
    try:
        return int((Decimal(reward) * 100).to_integral_value()) if reward else None
    except InvalidOperation:
        return None


def _crowd(batch: str) -> dict | None:
    match = CROWD.search(batch)
    if not match:
        return None
    return {"workers": int(match[1]), "accuracy": [float(match[2]), float(match[3])], "spammers": float(match[4]),
            "seed": int(match[6]), "constant": float(match[5] or 0)}


def upgrade() -> None:
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('publish_token', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('reward_cents', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('live', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('crowd', sa.JSON(), nullable=True))
    connection = op.get_bind()
    task = sa.table('task', sa.column('id', sa.Integer), sa.column('batch', sa.String), sa.column('backend', sa.String),
                    sa.column('external_id', sa.String), sa.column('reward', sa.String),
                    sa.column('publish_token', sa.String), sa.column('reward_cents', sa.Integer),
                    sa.column('live', sa.Boolean), sa.column('crowd', sa.JSON))
    rows = connection.execute(sa.select(task.c.id, task.c.batch, task.c.backend, task.c.external_id,
                                        task.c.reward)).all()
    for task_id, batch, backend, external_id, reward in rows:
        pending = external_id is not None and external_id.startswith(PENDING)
        connection.execute(sa.update(task).where(task.c.id == task_id).values(
            publish_token=external_id[len(PENDING):] if pending else None,
            external_id=None if pending else external_id, reward_cents=_cents(reward),
            live=backend == "mturk" and batch.endswith("-mturk-live"),
            crowd=_crowd(batch) if backend == "simulated" else None))
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_column('reward')


def downgrade() -> None:
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reward', sa.String(length=16), nullable=True))
    connection = op.get_bind()
    for task_id, cents in connection.execute(sa.text("SELECT id, reward_cents FROM task "
                                                     "WHERE reward_cents IS NOT NULL")).all():
        connection.execute(sa.text("UPDATE task SET reward = :reward WHERE id = :id"),
                           {"reward": str(Decimal(cents) / 100), "id": task_id})
    connection.execute(sa.text("UPDATE task SET external_id = 'pending:' || publish_token "
                               "WHERE external_id IS NULL AND publish_token IS NOT NULL"))
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_column('crowd')
        batch_op.drop_column('live')
        batch_op.drop_column('reward_cents')
        batch_op.drop_column('publish_token')
