"""Numpy helpers the stages share: looking keys up in a sorted array."""

from __future__ import annotations

import numpy as np

__all__ = ["find_sorted"]


def find_sorted(sorted_keys: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of `wanted`: a position in `sorted_keys` (always a valid index when there is
    one) and whether the key there is it, as (positions, found)."""
    if not len(sorted_keys):
        return np.zeros(len(wanted), np.int64), np.zeros(len(wanted), bool)
    at = np.minimum(np.searchsorted(sorted_keys, wanted), len(sorted_keys) - 1)
    return at, sorted_keys[at] == wanted
