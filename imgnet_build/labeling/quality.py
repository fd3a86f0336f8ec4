"""Worker quality: each worker's estimated accuracy, and who is blocked.

    newly_blocked = update_workers(workspace, worker_ids, accuracy, votes, settings)
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from imgnet_build.labeling.consensus import VoteTable
from imgnet_build.store import Worker

__all__ = ["update_workers"]


def update_workers(workspace, workers: list[int], accuracy: np.ndarray, votes: VoteTable, settings) -> int:
    """Store each worker's estimated accuracy and block those under `settings.block_below`;
    returns how many were newly blocked."""
    counts = np.bincount(votes.worker, minlength=len(workers))
    newly = 0
    with workspace.session() as session:
        rows = {row.id: row for row in session.scalars(select(Worker).where(Worker.id.in_(workers)))} if workers else {}
        for index, worker_id in enumerate(workers):
            row = rows[worker_id]
            row.accuracy = None if np.isnan(accuracy[index]) else round(float(accuracy[index]), 4)
            if row.control_answers >= settings.block_after_controls:
                low = row.control_correct / row.control_answers < settings.block_below
            else:
                low = counts[index] >= settings.block_after_votes and (row.accuracy or 1) < settings.block_below
            if low and not row.blocked:
                row.blocked = True
                newly += 1
    return newly
