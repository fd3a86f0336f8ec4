"""Find all pairs of 64-bit hashes within a Hamming distance, without comparing all pairs.

Multi-index hashing by pigeonhole: split the 64 bits into `m = d + j` bands. Two hashes
that differ in at most `d` bits leave at least `j` bands untouched, so they agree exactly
on some `j` of the bands. One *table* per choice of `j` bands: sort the hashes by those
bands (numpy), scan runs of equal keys and verify each candidate pair with a popcount.
`j = 1` is the textbook scheme (d + 1 bands); larger `j` means more tables but longer
keys and far fewer candidates, which is what a million hashes need. `choose_j` picks it
from a cost model measured on numpy: at d = 10 and 1,000,000 hashes, j = 4 (14 bands,
1,001 tables of 18-bit keys) takes 14-27 s on 2 cores, j = 3 47 s, j = 5 30 s; numpy
brute force would take about 8 minutes (benchmarks/bench_dedup.py). Large sets are grouped by the first band of each table so
that each sort fits the CPU cache, and the groups are spread over processes.

    index = HammingIndex(10)
    pairs = index.add(hashes)        # (i, j, distance) rows among `hashes`
    more = index.add(new_hashes)     # rows touching only the new hashes: new-old, new-new

    index = HammingIndex(10)
    index.load(known)                # no search: pairs among `known` are already known
    pairs = index.add(new_hashes)    # new-old and new-new pairs only

Positions are global: the first `add` (or `load`) gets 0..n-1, the next continues from n.

Each pair is reported by one table only (the first, in `_tables` order, whose bands it agrees
on), so the result is never larger than the pairs themselves (before, a pair 2 bits apart came
out of up to 1,287 tables at 14M hashes). Memory: the index holds 8 bytes per hash; during
`add`, forked workers read the hashes in place (copy-on-write) and each sorts one band's
grouping of them (about 24 bytes per hash per worker) plus one block at a time.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np

__all__ = ["HammingIndex", "to_unsigned", "to_signed", "bands", "choose_j"]

_SORT_COST = 20e-9  # seconds per hash per table: key, sort, gather, scan (measured, 1M hashes)
_PAIR_COST = 20e-9  # seconds per candidate pair: gather, xor, popcount (measured)
_MAX_TABLES = 4096
_MAX_CANDIDATES = 4_000_000  # pairs generated at once by one run scan
_BLOCK_FROM = 50_000  # hashes; below, one sort per table over all of them, in this process


def to_unsigned(values) -> np.ndarray:
    """Signed int64 values as stored in the database -> uint64 hashes."""
    return np.asarray(values, dtype=np.int64).view(np.uint64)


def to_signed(value: int) -> int:
    """A 64-bit unsigned hash -> the signed int64 the database column holds."""
    return value - (1 << 64) if value >= 1 << 63 else value


Band = tuple[int, int]  # (shift, size) of a run of bits


def bands(count: int) -> list[Band]:
    """`count` contiguous, nearly equal bands covering the 64 bits, as (shift, size)."""
    sizes = [64 // count + (1 if i < 64 % count else 0) for i in range(count)]
    return [(sum(sizes[:i]), size) for i, size in enumerate(sizes)]


def _tables(threshold: int, j: int) -> list[tuple[Band, ...]]:
    return list(itertools.combinations(bands(threshold + j), j))


def _key(hashes: np.ndarray, table: tuple[Band, ...]) -> np.ndarray:
    """The table's bands of each hash, packed into the low bits of one integer."""
    key = np.zeros(len(hashes), dtype=np.uint64)
    for shift, size in table:
        key = (key << np.uint64(size)) | ((hashes >> np.uint64(shift)) & np.uint64((1 << size) - 1))
    return key


def _sort(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted keys, their positions); packs both in one integer when they fit (3x faster)."""
    key_bits = int(keys.max()).bit_length() if len(keys) else 0
    index_bits = max(1, (len(keys) - 1).bit_length())
    if key_bits + index_bits > 64:
        order = np.argsort(keys)
        return keys[order], order
    packed = np.sort((keys << np.uint64(index_bits)) | np.arange(len(keys), dtype=np.uint64))
    return packed >> np.uint64(index_bits), (packed & np.uint64((1 << index_bits) - 1)).astype(np.int64)


def _cost(threshold: int, j: int, n: int, queries: int) -> float:
    m = threshold + j
    tables = math.comb(m, j)
    key_bits = 64 * j / m
    candidates = queries * (n - queries / 2) / 2 ** key_bits
    return tables * (n * _SORT_COST + candidates * _PAIR_COST)


def choose_j(threshold: int, n: int, queries: int | None = None) -> int:
    """How many bands must match exactly: the cheapest for `queries` new hashes among `n`."""
    queries = n if queries is None else queries
    options = [j for j in range(1, 9) if threshold + j <= 64 and math.comb(threshold + j, j) <= _MAX_TABLES]
    return min(options, key=lambda j: _cost(threshold, j, max(n, 1), max(queries, 1)))


def _pairs_in_runs(keys: np.ndarray, hashes: np.ndarray, threshold: int) -> tuple[np.ndarray, ...]:
    """(p, q, distance) for sorted `keys`: p < q, keys equal, popcount(xor) <= threshold."""
    if len(keys) < 2:
        return _concat([])
    same = keys[1:] == keys[:-1]
    neighbours = np.bitwise_count(hashes[1:] ^ hashes[:-1])  # adjacent pairs: slices, no gathers
    first = np.flatnonzero(same & (neighbours <= threshold))
    found = [(first, first + 1, neighbours[first])]
    starts = np.flatnonzero(np.r_[True, ~same])
    lengths = np.diff(np.r_[starts, len(keys)])
    starts, lengths = starts[lengths > 2], lengths[lengths > 2]  # runs with pairs further apart
    if len(starts) and int((lengths * (lengths - 1) // 2).sum()) > _MAX_CANDIDATES:
        return _pairs_by_offset(keys, hashes, threshold)
    if len(starts):
        position = _ranges(starts, lengths)
        partners = np.maximum(np.repeat(starts + lengths, lengths) - position - 2, 0)
        left = np.repeat(position, partners)
        right = left + 2 + _ranges(np.zeros(len(partners), dtype=np.int64), partners)
        distance = np.bitwise_count(hashes[left] ^ hashes[right])
        near = distance <= threshold
        found.append((left[near], right[near], distance[near]))
    return _concat(found)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """concatenate(arange(start, start + length) for each start, length), vectorized."""
    total = int(lengths.sum())
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + offsets


def _pairs_by_offset(keys: np.ndarray, hashes: np.ndarray, threshold: int) -> tuple[np.ndarray, ...]:
    """As `_pairs_in_runs`, one offset at a time: slower, but memory stays O(len(keys))."""
    found: list[tuple[np.ndarray, ...]] = []
    active = np.flatnonzero(keys[1:] == keys[:-1])
    offset = 1
    while True:
        if offset > 1:
            active = active[keys[active + offset] == keys[active]]
        if not active.size:
            break
        distance = np.bitwise_count(hashes[active] ^ hashes[active + offset])
        near = distance <= threshold
        found.append((active[near], active[near] + offset, distance[near]))
        offset += 1
        active = active[active + offset < len(keys)]
    return _concat(found)


def _concat(parts: Sequence[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not parts:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.uint8)
    return tuple(np.concatenate([part[i] for part in parts]) for i in range(3))  # type: ignore[return-value]


class HammingIndex:
    """All pairs within `threshold` bits among the hashes added so far, found incrementally.

    Large batches (50,000 hashes and more) are spread over `workers` processes."""

    def __init__(self, threshold: int, j: int | None = None, workers: int | None = None):
        if not 0 <= threshold < 32:
            raise ValueError(f"threshold must be between 0 and 31 bits, not {threshold}")
        self.threshold = threshold
        self.j = j
        self.workers = workers or os.cpu_count() or 1
        self.hashes = np.empty(0, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.hashes)

    def load(self, hashes) -> None:
        """Add hashes without searching pairs among them (the caller knows those pairs);
        later `add` calls check their hashes against these."""
        self.hashes = np.concatenate([self.hashes, _as_hashes(hashes)])

    def add(self, hashes) -> np.ndarray:
        """Add hashes (uint64, or int64 as stored); return an (k, 3) int64 array of
        (i, j, distance) with i < j, for every pair within the threshold that involves a new
        hash. Each pair appears once, sorted."""
        new = _as_hashes(hashes)
        old = self.hashes
        if not len(new):
            return np.empty((0, 3), dtype=np.int64)
        j = self.j or choose_j(self.threshold, len(old) + len(new), len(new))
        tables = _tables(self.threshold, j)
        if j > 1 and len(old) + len(new) >= _BLOCK_FROM:
            by_first = defaultdict(list)
            for table in tables:
                by_first[table[0]].append(table)
            groups = sorted(by_first.items(), key=lambda group: -len(group[1]))  # longest first
            parts = _in_processes(groups, old, new, self.threshold, self.workers)
        else:
            every = bands(self.threshold + j)
            parts = [_table_pairs(table, old, new, self.threshold, _earlier(table, every)) for table in tables]
        self.hashes = np.concatenate([old, new])
        return _sorted(_concat(parts))


def _in_processes(groups, old: np.ndarray, new: np.ndarray, threshold: int, workers: int) -> list:
    """`_block_pairs` of each group in `workers` processes. Forked workers read `old` and `new`
    from this process's memory (copy-on-write): the hashes are not copied per task."""
    global _SHARED
    context = _context()
    shared = context.get_start_method() == "fork"
    if shared:
        _SHARED = (old, new)
    try:
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            arrays = () if shared else (old, new)
            futures = [pool.submit(_block_pairs, band, group, threshold, *arrays) for band, group in groups]
            return [future.result() for future in futures]
    finally:
        _SHARED = None


_SHARED: tuple[np.ndarray, np.ndarray] | None = None  # (old, new) for forked workers, during `add` only


def _as_hashes(hashes) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(hashes).astype(np.int64, copy=False).view(np.uint64))


def _context():
    """fork where there is one: workers start at once and scripts need no __main__ guard
    (forkserver and spawn re-import the caller's main module)."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def _earlier(table: tuple[Band, ...], every: list[Band]) -> np.ndarray:
    """Bit masks of the bands before the table's last one that are not in it. A pair agrees
    on every j-subset of the bands it agrees on; it is reported by the first such table in
    `_tables`' (lexicographic) order only, the one of the first j bands it agrees on: so it
    agrees on none of these. Each pair is then found once, whatever j: without this a pair
    2 bits apart came out of up to 1,287 of 3,003 tables (j = 5), gigabytes at 14M hashes."""
    masks = [((1 << size) - 1) << shift for shift, size in every if shift < table[-1][0] and (shift, size) not in table]
    return np.array(masks, dtype=np.uint64)


def _first_table_only(parts: tuple[np.ndarray, ...], hashes: np.ndarray, earlier: np.ndarray) -> tuple[np.ndarray, ...]:
    p, q, distance = parts
    if not len(earlier) or not len(p):
        return parts
    differ = hashes[p] ^ hashes[q]
    keep = np.ones(len(p), dtype=bool)
    for mask in earlier:
        keep &= (differ & mask) != 0
    return p[keep], q[keep], distance[keep]


def _table_pairs(table: tuple[Band, ...], old: np.ndarray, new: np.ndarray, threshold: int,
                 earlier: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pairs agreeing on the table's bands and on none of the `earlier` ones: new-new and
    old-new, positions in old + new."""
    new_keys = _key(new, table)
    sorted_keys, order = _sort(new_keys)
    p, q, distance = _pairs_in_runs(sorted_keys, new[order], threshold)
    a, b = order[p] + len(old), order[q] + len(old)
    inner = (np.minimum(a, b), np.maximum(a, b), distance)
    if len(old):
        old_keys, old_order = _sort(_key(old, table))
        i, k, distance = _pairs_across(old_keys, old[old_order], new_keys, new, threshold)
        inner = _concat([inner, (old_order[i], k + len(old), distance)])
    both = np.concatenate([old, new]) if len(old) else new
    return _first_table_only(inner, both, earlier)


def _block_pairs(band: Band, tables: list[tuple[Band, ...]], threshold: int, old: np.ndarray | None = None,
                 new: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """The tables that start with `band`, one block of equal `band` values at a time: the
    same work as `_table_pairs`, on arrays small enough to stay in the CPU cache (3x faster).
    `old` and `new` default to the arrays a forked worker inherited (`_SHARED`)."""
    if old is None or new is None:
        assert _SHARED is not None
        old, new = _SHARED
    every = bands(threshold + len(tables[0]))  # m = d + j bands
    earlier = {table: _earlier(table, every) for table in tables}
    new_order, new_blocks = _blocks(new, band)
    old_order, old_blocks = _blocks(old, band)
    found = []
    for value, (start, stop) in new_blocks.items():
        ids = new_order[start:stop]
        old_ids = old_order[slice(*old_blocks[value])] if value in old_blocks else old_order[:0]
        block_old, block_new = old[old_ids], new[ids]
        to_global = np.concatenate([old_ids, ids + len(old)])
        for table in tables:
            i, k, distance = _table_pairs(table[1:], block_old, block_new, threshold, earlier[table])
            found.append((to_global[i], to_global[k], distance))
    parts = _concat(found)
    return np.minimum(parts[0], parts[1]), np.maximum(parts[0], parts[1]), parts[2]


def _blocks(hashes: np.ndarray, band: Band) -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    """(order, {band value: (start, stop) in order}) of the hashes grouped by one band."""
    shift, size = band
    values = (hashes >> np.uint64(shift)) & np.uint64((1 << size) - 1)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(ordered) else np.empty(0, dtype=int)
    stops = np.r_[starts[1:], len(ordered)]
    return order, {int(ordered[start]): (int(start), int(stop)) for start, stop in zip(starts, stops, strict=False)}


def _pairs_across(sorted_keys: np.ndarray, sorted_hashes: np.ndarray, keys: np.ndarray, hashes: np.ndarray,
                  threshold: int) -> tuple[np.ndarray, ...]:
    """(p, q, distance): position p in the sorted arrays, q in the query arrays."""
    low = np.searchsorted(sorted_keys, keys, "left")
    high = np.searchsorted(sorted_keys, keys, "right")
    active = np.flatnonzero(high > low)
    found: list[tuple[np.ndarray, ...]] = []
    offset = 0
    while active.size:
        position = low[active] + offset
        distance = np.bitwise_count(sorted_hashes[position] ^ hashes[active])
        near = distance <= threshold
        found.append((position[near], active[near], distance[near]))
        offset += 1
        active = active[low[active] + offset < high[active]]
    return _concat(found)


def _sorted(parts: tuple[np.ndarray, ...]) -> np.ndarray:
    """The pairs as (i, k, distance) rows sorted by i then k (each pair is found once)."""
    i, k, distance = parts
    order = np.lexsort((k, i))
    return np.stack([i[order].astype(np.int64), k[order].astype(np.int64), distance[order].astype(np.int64)], axis=1)
