"""Consensus: votes in, labels and worker quality out.

    table = VoteTable.build(pair_of_vote, worker_of_vote, answers, pair_category, known)
    result = METHODS["dynamic"](ConsensusSettings()).fit(table)
    result.status[p], result.posterior[p], result.worker_accuracy[w]

One small interface (crowd-kit's shape: `fit` on a vote table, results as arrays), three
methods:

- `majority`: accepted when more than half of at least `min_votes` votes say yes,
  rejected when more than half say no; ties and shortfalls stay undecided.
- `dawid-skene`: Dawid and Skene's EM with two coins per worker (P(yes | good),
  P(no | bad)) and a class prior per category; controls and gold are known answers that
  the E-step does not move. A pair is decided when its posterior passes the thresholds.
- `dynamic` (default): ImageNet's dynamic consensus. A seed sample of each category gets at
  least `seed_votes` votes per image; from it come the category's table
  P(good | yes, no) and its difficulty. Every pair's posterior folds in each voter's
  two coins (sensitivity P(yes | good) and specificity P(no | bad), EM over all
  categories with controls as known answers, each worker measured against the consensus
  of the *other* voters so no one confirms themselves), scaled by how hard the
  category's seed showed it to be, on top of the category's prior. Two coins, because one
  hides a constant answerer: a worker who says "no" to everything agrees with most pairs,
  yet their "no" carries nothing (sensitivity 0). A pair is decided once the posterior passes `accept` or `reject`;
  otherwise it asks for one more vote, up to `max_votes`. A category whose seed images
  mostly never reach a clear majority (70% of their votes) is flagged hard to illustrate.

Every method also returns `Result.workers` (`WorkerQuality`): per worker both coins, the
balanced accuracy (sensitivity + specificity) / 2 with a 95% interval, and the evidence
behind it (known-answer votes on positives and negatives, all votes). A worker whose
interval lies under a bar (`quality.update_workers`) carries no information or points the
wrong way, with confidence; everyone else is weighted by their coins.

Posteriors are P(the image shows the category). Indices are positions in the caller's
lists of pairs and workers; the caller keeps the mapping to database ids.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from typing import ClassVar, Protocol

import numpy as np

from imgnet_build.errors import BadInput
from imgnet_build.registry import Registry

__all__ = ["ConsensusSettings", "VoteTable", "PerPair", "Result", "WorkerQuality", "Method", "Majority", "DawidSkene",
           "Dynamic", "METHODS", "seed_table", "seed_tables", "tally", "worker_quality", "balanced_interval"]

ACCURACY_PRIOR = (4.0, 1.0)  # Beta pseudo-counts (right, wrong) for a worker: a new worker is trusted at 0.8
UNTESTED_PRIOR = (0.8, 0.2)  # the same trust, worth one answer: a coin the known answers never tested (the other was)
COIN_RANGE = (0.02, 0.98)  # nobody is certain either way on one side
INTERVAL = 0.95  # central interval of each coin (balanced accuracy: both ends of both coins)
CLEAR = 0.95  # a pair the other voters are this sure of is hard evidence about a worker
HARDER = 0.6  # a category's seed carries less than this share of the usual evidence: scale it down
CLEAR_MAJORITY = 0.7  # a seed image "reaches a majority" when this share of its votes agrees


@dataclasses.dataclass(frozen=True)
class ConsensusSettings:
    min_votes: int = 3
    accept: float = 0.99
    reject: float = 0.01
    seed_votes: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.reject < 0.5 < self.accept < 1:
            raise BadInput(f"thresholds must satisfy 0 < reject < 0.5 < accept < 1, not {self.reject} / {self.accept}")


@dataclasses.dataclass(frozen=True)
class VoteTable:
    """Votes as parallel arrays, plus per pair its category and its known answer."""

    pair: np.ndarray  # int, index of the voted pair
    worker: np.ndarray  # int, index of the worker
    answer: np.ndarray  # bool
    pair_category: np.ndarray  # int per pair
    known: np.ndarray  # int8 per pair: -1 unknown, 0 known no (control/gold), 1 known yes
    seed: np.ndarray  # bool per pair: in its category's seed sample
    workers: int
    candidate: np.ndarray | None = None  # bool per pair: one of its category's candidates (None: all are)

    @classmethod
    def build(cls, pair, worker, answer, pair_category, known=None, seed=None, workers: int | None = None,
              candidate=None) -> VoteTable:
        """`candidate` marks the pairs that are candidates of their category; the others are
        controls borrowed from other categories and do not count towards its prior. The vote
        indices are int32 when they fit (`_index`): half the memory of int64 per vote."""
        pair_category = np.asarray(pair_category, dtype=np.int64)
        n = len(pair_category)
        worker = _index(worker)
        return cls(_index(pair), worker, np.asarray(answer, dtype=bool), pair_category,
                   np.full(n, -1, np.int8) if known is None else np.asarray(known, dtype=np.int8),
                   np.zeros(n, bool) if seed is None else np.asarray(seed, dtype=bool),
                   workers if workers is not None else int(worker.max(initial=-1)) + 1,
                   None if candidate is None else np.asarray(candidate, dtype=bool))

    @property
    def pairs(self) -> int:
        return len(self.pair_category)

    @functools.cached_property
    def votes_per_pair(self) -> np.ndarray:
        """int64 per pair: its votes (counted once, a chunk of votes at a time)."""
        return tally(self.pair, self.pairs)

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(yes votes, no votes) per pair."""
        yes = tally(self.pair, self.pairs, self.answer)
        return yes, self.votes_per_pair - yes


@dataclasses.dataclass(frozen=True)
class PerPair:
    """A per-vote quantity that is its pair's value (`values[votes.pair]`), looked up a chunk of
    votes at a time instead of held as one float64 per vote."""

    values: np.ndarray


PerVote = np.ndarray | PerPair  # float per vote, or per pair for each vote of the pair

CHUNK = 1 << 16  # votes per step of every per-vote computation: its temporaries are a few MB, not per vote


def _index(values) -> np.ndarray:
    """Indices as int32 when they fit (no copy of an int32 array), else int64."""
    values = np.asarray(values)
    if values.dtype == np.int32:
        return values
    values = values.astype(np.int64, copy=False)
    fits = not len(values) or (int(values.min()) >= 0 and int(values.max()) < 2 ** 31)
    return values.astype(np.int32) if fits else values


def _chunks(length: int) -> Iterable[slice]:
    return (slice(start, start + CHUNK) for start in range(0, length, CHUNK))


def _at(quantity: PerVote, votes: VoteTable, chunk: slice) -> np.ndarray:
    """A chunk of a per-vote quantity, float."""
    if isinstance(quantity, PerPair):
        return quantity.values[votes.pair[chunk]].astype(float, copy=False)
    return quantity[chunk].astype(float, copy=False)


def tally(index: np.ndarray, length: int, where: np.ndarray | None = None) -> np.ndarray:
    """int64 per bin: how many of `index` (where `where`) fall in it; one chunk at a time
    (np.bincount copies a whole int32 index to int64 first)."""
    total = np.zeros(length, np.int64)
    for chunk in _chunks(len(index)):
        total += np.bincount(index[chunk] if where is None else index[chunk][where[chunk]], minlength=length)
    return total


@dataclasses.dataclass
class WorkerQuality:
    """Per worker (nan where a worker has no votes on that side)."""

    sensitivity: np.ndarray  # P(yes | the image shows the category), with the prior
    specificity: np.ndarray  # P(no | it does not)
    accuracy: np.ndarray  # balanced: (sensitivity + specificity) / 2
    low: np.ndarray  # 95% interval of the balanced accuracy (from both coins' intervals)
    high: np.ndarray
    positives: np.ndarray  # votes on known-yes pairs (positive controls, gold yes)
    positives_right: np.ndarray
    negatives: np.ndarray  # votes on known-no pairs
    negatives_right: np.ndarray
    votes: np.ndarray  # all votes


@dataclasses.dataclass
class Result:
    posterior: np.ndarray  # P(good) per pair
    status: np.ndarray  # per pair: "accepted", "rejected", "undecided"
    worker_accuracy: np.ndarray  # per worker (nan: no votes); balanced accuracy, as workers.accuracy
    category_prior: np.ndarray | None = None
    hard: np.ndarray | None = None  # per category (dynamic only)
    workers: WorkerQuality | None = None


class Method(Protocol):
    name: ClassVar[str]

    def __init__(self, settings: ConsensusSettings = ...) -> None: ...

    def fit(self, votes: VoteTable) -> Result: ...


def _decide(posterior: np.ndarray, votes: VoteTable, settings: ConsensusSettings) -> np.ndarray:
    yes, no = votes.counts()
    enough = (yes + no) >= np.where(votes.seed, settings.seed_votes, settings.min_votes)
    status = np.full(votes.pairs, "undecided", dtype=object)
    status[enough & (posterior >= settings.accept)] = "accepted"
    status[enough & (posterior <= settings.reject)] = "rejected"
    return status


def _clamp_known(posterior: np.ndarray, votes: VoteTable) -> np.ndarray:
    return np.where(votes.known >= 0, votes.known.astype(float), posterior)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), x clipped to [-50, 50]; in one new array (the same floats as the
    expression's temporaries give)."""
    y = np.clip(x, -50, 50)
    np.negative(y, out=y)
    np.exp(y, out=y)
    y += 1
    return np.divide(1, y, out=y)


def _majority_share(votes: VoteTable) -> np.ndarray:
    yes, no = votes.counts()
    return _clamp_known((yes + 0.5) / (yes + no + 1.0), votes)


def _category_prior(votes: VoteTable, truth: np.ndarray) -> np.ndarray:
    categories = int(votes.pair_category.max(initial=-1)) + 1
    voted = votes.votes_per_pair > 0
    if votes.candidate is not None:
        voted &= votes.candidate
    good = np.bincount(votes.pair_category, weights=truth * voted, minlength=categories)
    total = np.bincount(votes.pair_category, weights=voted, minlength=categories)
    return np.clip((good + 1) / (total + 2), 0.02, 0.98)


def _coins(votes: VoteTable, good: PerVote, hard: bool = False
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(yes on good, good, no on bad, bad) per worker, soft: `good` is P(good) per vote. `hard`:
    only the votes whose pair `good` makes sure (at least CLEAR either way), counted as certain.

    A chunk of votes at a time; np.add.at adds each worker's votes in vote order from zero, as
    np.bincount with weights does over all of them at once: the same floats."""
    sums = np.zeros((4, votes.workers))
    for chunk in _chunks(len(votes.pair)):
        worker, said_yes, g = votes.worker[chunk], votes.answer[chunk].astype(float), _at(good, votes, chunk)
        if hard:
            sure = (g >= CLEAR) | (g <= 1 - CLEAR)
            worker, said_yes, g = worker[sure], said_yes[sure], np.round(g[sure])
        np.add.at(sums[0], worker, said_yes * g)
        np.add.at(sums[1], worker, g)
        np.add.at(sums[2], worker, (1 - said_yes) * (1 - g))
        np.add.at(sums[3], worker, 1 - g)
    return sums[0], sums[1], sums[2], sums[3]


def _known_counts(votes: VoteTable) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """int64 per worker: votes on known-yes pairs, right ones among them, votes on known-no
    pairs, right ones among them."""
    counts = np.zeros((4, votes.workers), np.int64)
    for chunk in _chunks(len(votes.pair)):
        known, worker, answer = votes.known[votes.pair[chunk]], votes.worker[chunk], votes.answer[chunk]
        for row, chosen in enumerate((known == 1, (known == 1) & answer, known == 0, (known == 0) & ~answer)):
            counts[row] += np.bincount(worker[chosen], minlength=votes.workers)
    return counts[0], counts[1], counts[2], counts[3]


def _coin_estimates(votes: VoteTable, good: PerVote, others: PerVote | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(sensitivity, specificity) per worker: Beta-smoothed soft counts, clipped to COIN_RANGE.

    The prior trusts a worker at 0.8 on each coin, as much as five answers (ACCURACY_PRIOR). Negative
    controls alone say nothing of how a worker sees a positive (one who says no to everything passes
    them all), so a coin their known answers never tested while they tested the other is held to
    their answers on the pairs the *other* voters (`others`, P(good) per vote without it) are sure
    of: once those show the worker wrong on most (two or more seen, the same trust worth one answer,
    UNTESTED_PRIOR), the coin gets no more than they give."""
    yes_good, goods, no_bad, bads = _coins(votes, good)
    positives, _, negatives, _ = _known_counts(votes)
    sure_yes, sure_goods, sure_no, sure_bads = _coins(votes, good if others is None else others, hard=True)
    coins = []
    for right, seen, sure_right, sure_seen, untested in (
            (yes_good, goods, sure_yes, sure_goods, (positives == 0) & (negatives > 0)),
            (no_bad, bads, sure_no, sure_bads, (negatives == 0) & (positives > 0))):
        trusted = _smoothed(right, seen, ACCURACY_PRIOR)
        sure = _smoothed(sure_right, sure_seen, UNTESTED_PRIOR)
        failed = untested & (sure_seen >= 2) & (sure < 0.5)  # wrong on most of the sure pairs of that side
        coins.append(np.clip(np.where(failed, np.minimum(trusted, sure), trusted), *COIN_RANGE))
    return coins[0], coins[1]


def _smoothed(right: np.ndarray, seen: np.ndarray, prior: tuple[float, float]) -> np.ndarray:
    return (right + prior[0]) / (seen + prior[0] + prior[1])


def _coin_weights(sensitivity: np.ndarray, specificity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood ratios of a yes and of a no per worker; zero for a worker at or under
    chance (se + sp <= 1): their answers are not taken as inverted evidence."""
    informative = sensitivity + specificity > 1
    yes = np.where(informative, np.log(sensitivity / (1 - specificity)), 0.0)
    no = np.where(informative, np.log((1 - sensitivity) / specificity), 0.0)
    return yes, no


def balanced_interval(yes_good, goods, no_bad, bads) -> tuple[np.ndarray, np.ndarray]:
    """The interval of (sensitivity + specificity) / 2 from hard evidence (right answers and
    answers per side): the mean of the ends of each coin's INTERVAL central interval,
    Beta(right + 1, wrong + 1)."""
    # Beta's quantile is scipy.special's inverse incomplete beta (what scipy.stats.beta.ppf calls,
    # the same floats); scipy.stats is not imported: 45 MB more resident and a second of start-up
    from scipy.special import betaincinv

    yes_good, goods, no_bad, bads = (np.asarray(x, dtype=float) for x in (yes_good, goods, no_bad, bads))
    tail = (1 - INTERVAL) / 2
    se_low = betaincinv(yes_good + 1, goods - yes_good + 1, tail)
    se_high = betaincinv(yes_good + 1, goods - yes_good + 1, 1 - tail)
    sp_low = betaincinv(no_bad + 1, bads - no_bad + 1, tail)
    sp_high = betaincinv(no_bad + 1, bads - no_bad + 1, 1 - tail)
    return (se_low + sp_low) / 2, (se_high + sp_high) / 2


def worker_quality(votes: VoteTable, good: PerVote, posterior: PerVote | None = None) -> WorkerQuality:
    """Both coins per worker with intervals, measured against `good` (P(good) per *vote*:
    the pair's posterior, ideally without that vote) and the known answers.

    The estimates use every vote, softly: the coins EM weighs the votes by, from `posterior`
    (P(good) per vote, the pair's posterior with that vote; `good` when not given). Soft
    counts against the posterior *without* the vote pull every estimate towards one half
    where pairs have few votes (after a first round of three, a 0.9 worker measured 0.67,
    benchmarks/crowdsim.py); with the vote, EM's fixed point is the likelihood's maximum.
    The intervals count only hard evidence: known answers and pairs the other voters made
    sure of (P(good) at least CLEAR or at most 1 - CLEAR). A vote on a pair nobody else is
    sure about says little about its voter, and counting it as a full answer would make a
    weak crowd look sure of its own uselessness."""
    sensitivity, specificity = _coin_estimates(votes, good if posterior is None else posterior, good)
    low, high = balanced_interval(*_coins(votes, good, hard=True))
    count = tally(votes.worker, votes.workers)
    has = count > 0
    return WorkerQuality(
        np.where(has, sensitivity, np.nan), np.where(has, specificity, np.nan),
        np.where(has, (sensitivity + specificity) / 2, np.nan),
        np.where(has, low, np.nan), np.where(has, high, np.nan), *_known_counts(votes), count)


@dataclasses.dataclass
class TwoCoinEM:
    """EM with two coins per worker (Dawid and Skene's) and one prior per category; known
    answers clamped. Also returns, per vote, the posterior of its pair without that vote:
    the evidence `worker_quality` judges the voter by, so no one confirms themselves."""

    iterations: int = 50
    category_weight: np.ndarray | None = None  # per category: scales every worker's evidence

    def run(self, votes: VoteTable, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(posterior per pair, P(good) per vote without that vote, category prior).

        The one float64 per vote it keeps is that last array; every other per-vote quantity
        (a vote's evidence, its pair's P(good)) is computed a chunk of votes at a time."""
        others = truth[votes.pair]
        prior = _category_prior(votes, truth)
        for _ in range(self.iterations):
            good = PerPair(np.where(votes.known >= 0, votes.known, truth))
            sensitivity, specificity = _coin_estimates(votes, good, others)
            prior = _category_prior(votes, truth)
            yes_weight, no_weight = _coin_weights(sensitivity, specificity)
            log_odds = np.zeros(votes.pairs)
            for chunk in _chunks(len(votes.pair)):
                np.add.at(log_odds, votes.pair[chunk], self._evidence(votes, chunk, yes_weight, no_weight))
            log_odds = np.log(prior / (1 - prior))[votes.pair_category] + log_odds
            new = _clamp_known(_sigmoid(log_odds), votes)
            for chunk in _chunks(len(votes.pair)):
                pair = votes.pair[chunk]
                known = votes.known[pair]
                without = _sigmoid(log_odds[pair] - self._evidence(votes, chunk, yes_weight, no_weight))
                others[chunk] = np.where(known >= 0, known, without)
            converged = np.max(np.abs(new - truth), initial=0) < 1e-6
            truth = new
            if converged:
                break
        return truth, others, prior

    def _evidence(self, votes: VoteTable, chunk: slice, yes_weight: np.ndarray, no_weight: np.ndarray) -> np.ndarray:
        """Per vote of `chunk`: the log-likelihood ratio its answer carries."""
        worker = votes.worker[chunk]
        evidence = np.where(votes.answer[chunk], yes_weight[worker], no_weight[worker])
        if self.category_weight is not None:
            evidence = evidence * self.category_weight[votes.pair_category[votes.pair[chunk]]]
        return evidence


@dataclasses.dataclass
class Majority:
    settings: ConsensusSettings = dataclasses.field(default_factory=ConsensusSettings)
    name: ClassVar[str] = "majority"

    def fit(self, votes: VoteTable) -> Result:
        yes, no = votes.counts()
        enough = (yes + no) >= self.settings.min_votes
        status = np.full(votes.pairs, "undecided", dtype=object)
        status[enough & (yes > no)] = "accepted"
        status[enough & (no > yes)] = "rejected"
        share = np.where(yes + no > 0, yes / np.maximum(yes + no, 1), 0.5)
        truth = _clamp_known(np.where(status == "accepted", 1.0, np.where(status == "rejected", 0.0, share)), votes)
        workers = worker_quality(votes, PerPair(truth))
        return Result(share, status, workers.accuracy, workers=workers)


@dataclasses.dataclass
class DawidSkene:
    settings: ConsensusSettings = dataclasses.field(default_factory=ConsensusSettings)
    iterations: int = 50
    name: ClassVar[str] = "dawid-skene"

    def fit(self, votes: VoteTable) -> Result:
        truth = _majority_share(votes)
        a, b = ACCURACY_PRIOR
        for _ in range(self.iterations):
            good, bad = truth[votes.pair], 1 - truth[votes.pair]
            said_yes = votes.answer.astype(float)
            sensitivity = ((np.bincount(votes.worker, weights=said_yes * good, minlength=votes.workers) + a)
                           / (np.bincount(votes.worker, weights=good, minlength=votes.workers) + a + b))
            specificity = ((np.bincount(votes.worker, weights=(1 - said_yes) * bad, minlength=votes.workers) + a)
                           / (np.bincount(votes.worker, weights=bad, minlength=votes.workers) + a + b))
            sensitivity, specificity = (np.clip(x, 0.02, 0.98) for x in (sensitivity, specificity))
            prior = _category_prior(votes, truth)
            yes_weight = np.log(sensitivity / (1 - specificity))
            no_weight = np.log((1 - sensitivity) / specificity)
            evidence = np.where(votes.answer, yes_weight[votes.worker], no_weight[votes.worker])
            log_odds = np.log(prior / (1 - prior))[votes.pair_category] + np.bincount(
                votes.pair, weights=evidence, minlength=votes.pairs)
            new = _clamp_known(_sigmoid(log_odds), votes)
            converged = np.max(np.abs(new - truth), initial=0) < 1e-6
            truth = new
            if converged:
                break
        workers = worker_quality(votes, PerPair(truth))
        return Result(truth, _decide(truth, votes, self.settings), workers.accuracy, prior, workers=workers)


def seed_table(votes: VoteTable, truth: np.ndarray, category: int, max_votes: int = 5) -> dict[str, float]:
    """ImageNet's table P(good | yes, no) for one category, from its seed images: the share
    of yes votes among good and among bad seed images, then Bayes with the seed's prior."""
    return seed_tables(votes, truth, [category], max_votes)[category]


def seed_tables(votes: VoteTable, truth: np.ndarray, categories: Iterable[int],
                max_votes: int = 5) -> dict[int, dict[str, float]]:
    """`seed_table` of each of `categories` (indices), {category: table}: the seed votes are
    grouped by category once (a stable sort keeps each category's votes, and seed pairs, in
    their order, so every sum is the one a single category's scan gives), not scanned once
    per category."""
    seed_votes = np.flatnonzero(votes.seed[votes.pair])
    votes_of = _by_category(seed_votes, votes.pair_category[votes.pair[seed_votes]])
    seed_pairs = np.flatnonzero(votes.seed)
    pairs_of = _by_category(seed_pairs, votes.pair_category[seed_pairs])
    tables = {}
    for category in categories:
        in_seed, pairs = votes_of(category), pairs_of(category)
        good = truth[votes.pair[in_seed]]
        said_yes = votes.answer[in_seed]
        prior = np.clip((truth[pairs].sum() + 1) / (len(pairs) + 2), 0.02, 0.98)
        p_yes_good = (np.sum(said_yes * good) + 1) / (np.sum(good) + 2)
        p_yes_bad = (np.sum(said_yes * (1 - good)) + 1) / (np.sum(1 - good) + 2)
        table = {}
        for n in range(1, max_votes + 1):
            for yes in range(n + 1):
                no = n - yes
                a = prior * p_yes_good ** yes * (1 - p_yes_good) ** no
                b = (1 - prior) * p_yes_bad ** yes * (1 - p_yes_bad) ** no
                table[f"{yes},{no}"] = round(float(a / (a + b)), 4)
        tables[int(category)] = table
    return tables


def _by_category(rows: np.ndarray, category_of: np.ndarray) -> Callable[[int], np.ndarray]:
    """`rows` grouped by their categories (`category_of`, one per row) with a stable sort: a
    function from a category to its rows, in their order."""
    order = np.argsort(category_of, kind="stable")
    rows, bounds = rows[order], category_of[order]
    return lambda category: rows[np.searchsorted(bounds, category):np.searchsorted(bounds, category, "right")]


@dataclasses.dataclass
class Dynamic:
    settings: ConsensusSettings = dataclasses.field(default_factory=ConsensusSettings)
    name: ClassVar[str] = "dynamic"

    def fit(self, votes: VoteTable) -> Result:
        truth, others, prior = TwoCoinEM().run(votes, _majority_share(votes))
        weight, hard = self._difficulty(votes, truth, others)
        if not np.all(weight == 1):
            del others  # before the second fit makes its own
            truth, others, prior = TwoCoinEM(category_weight=weight).run(votes, truth)
        workers = worker_quality(votes, others, PerPair(truth))
        return Result(truth, _decide(truth, votes, self.settings), workers.accuracy, prior, hard, workers)

    def _difficulty(self, votes: VoteTable, truth: np.ndarray, others: np.ndarray):
        """Per category: how much of the workers' usual evidence its seed votes carry (at
        most 1: a category as easy as the rest), and whether it is hard to illustrate."""
        categories = int(votes.pair_category.max(initial=-1)) + 1
        seeded = (votes.seed & (votes.votes_per_pair >= self.settings.seed_votes))[votes.pair]
        weight, hard = np.ones(categories), np.zeros(categories, bool)
        if not seeded.any():
            return weight, hard
        category = votes.pair_category[votes.pair[seeded]]
        agree = np.where(votes.answer[seeded], truth[votes.pair[seeded]], 1 - truth[votes.pair[seeded]])
        sensitivity, specificity = _coin_estimates(votes, others)
        good = truth[votes.pair[seeded]]
        expected = (good * sensitivity[votes.worker[seeded]] + (1 - good) * specificity[votes.worker[seeded]])
        observed_sum = np.bincount(category, weights=agree, minlength=categories)
        expected_sum = np.bincount(category, weights=expected, minlength=categories)
        has_seed = np.bincount(category, minlength=categories) > 0
        # evidence scales with (accuracy - 1/2): the seed's observed margin over the expected one
        ratio = (observed_sum - 0.5 * np.bincount(category, minlength=categories) + 1) / np.maximum(
            expected_sum - 0.5 * np.bincount(category, minlength=categories) + 1, 1e-9)
        harder = has_seed & (ratio < HARDER)  # a 10-image seed is noisy: only a clear gap counts
        weight[harder] = np.clip(ratio[harder], 0.25, 1.0)
        yes, no = votes.counts()
        seed_pairs = votes.seed & ((yes + no) >= self.settings.seed_votes)
        clear = np.maximum(yes, no) >= CLEAR_MAJORITY * (yes + no)
        seed_count = np.bincount(votes.pair_category, weights=seed_pairs, minlength=categories)
        clear_count = np.bincount(votes.pair_category, weights=seed_pairs & clear, minlength=categories)
        hard = (seed_count > 0) & (clear_count < 0.5 * seed_count)
        return weight, hard


METHODS: Registry[type[Method]] = Registry("consensus method")
for _method in (Dynamic, DawidSkene, Majority):
    METHODS.add(_method)
