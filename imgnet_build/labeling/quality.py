"""Worker quality: each worker's estimated coins and interval, and who is blocked.

    newly_blocked = update_workers(workspace, worker_ids, result.workers, settings)

Blocking is decided on the 95% interval of each worker's balanced accuracy
((sensitivity + specificity) / 2, from controls and from agreement with the other voters):

- a worker whose whole interval lies under `block_below` (0.6) is blocked: their answers
  carry no information (random, or the same answer to everything) or point the wrong way,
  and enough of them were seen to be sure;
- a worker whose whole interval lies under `prefer_above` (0.75) is set aside (blocked
  too) only while the crowd can spare them: at least `reserve` other workers are estimated
  at `prefer_above` or better. Under the vote cap a pair decides sooner on strong votes,
  but a small or weak crowd needs every honest worker (a 0.65 worker carries information).

A worker with little evidence, or whose controls were one-sided, has a wide interval and is
not blocked; everyone not blocked is weighted by their coins.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from imgnet_build.labeling.consensus import WorkerQuality
from imgnet_build.store import Worker
from imgnet_build.workspace import Workspace

__all__ = ["update_workers", "to_block"]


def to_block(accuracy: np.ndarray, high: np.ndarray, blocked: np.ndarray, block_below: float, prefer_above: float,
             reserve: int) -> np.ndarray:
    """Which workers to block now (bool per worker), from their balanced accuracy estimate and
    its interval's upper end (nan: no votes, never blocked); see the module's docstring."""
    high = np.nan_to_num(high, nan=1.0)
    active = ~blocked
    useless = active & (high < block_below)
    strong = active & ~useless & (np.nan_to_num(accuracy, nan=0.0) >= prefer_above)
    weak = active & (high < prefer_above) if strong.sum() >= reserve else np.zeros_like(useless)
    return useless | weak


def _value(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 4)


def update_workers(workspace: Workspace, workers: list[int], quality: WorkerQuality, settings) -> int:
    """Store each worker's estimate and interval; block those `to_block` names. Returns how
    many were newly blocked."""
    newly = 0
    block = to_block(quality.accuracy, quality.high, np.zeros(len(workers), bool), settings.block_below,
                     settings.prefer_above, settings.reserve)
    with workspace.session() as session:
        rows = {row.id: row for row in session.scalars(select(Worker).where(Worker.id.in_(workers)))} if workers else {}
        for index, worker_id in enumerate(workers):
            row = rows[worker_id]
            row.accuracy = _value(quality.accuracy[index])
            row.accuracy_low, row.accuracy_high = _value(quality.low[index]), _value(quality.high[index])
            row.sensitivity, row.specificity = _value(quality.sensitivity[index]), _value(quality.specificity[index])
            if block[index] and not row.blocked:
                row.blocked = True
                newly += 1
    return newly
