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
from collections.abc import Callable, Iterable
from typing import ClassVar, Protocol

import numpy as np

from imgnet_build.errors import BadInput
from imgnet_build.registry import Registry

__all__ = ["ConsensusSettings", "VoteTable", "Result", "WorkerQuality", "Method", "Majority", "DawidSkene", "Dynamic",
           "METHODS", "seed_table", "seed_tables", "worker_quality", "balanced_interval"]

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
        controls borrowed from other categories and do not count towards its prior."""
        pair_category = np.asarray(pair_category, dtype=np.int64)
        n = len(pair_category)
        worker = np.asarray(worker, dtype=np.int64)
        return cls(np.asarray(pair, dtype=np.int64), worker, np.asarray(answer, dtype=bool), pair_category,
                   np.full(n, -1, np.int8) if known is None else np.asarray(known, dtype=np.int8),
                   np.zeros(n, bool) if seed is None else np.asarray(seed, dtype=bool),
                   workers if workers is not None else int(worker.max(initial=-1)) + 1,
                   None if candidate is None else np.asarray(candidate, dtype=bool))

    @property
    def pairs(self) -> int:
        return len(self.pair_category)

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(yes votes, no votes) per pair."""
        yes = np.bincount(self.pair, weights=self.answer, minlength=self.pairs).astype(np.int64)
        return yes, np.bincount(self.pair, minlength=self.pairs) - yes


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
    return 1 / (1 + np.exp(-np.clip(x, -50, 50)))


def _majority_share(votes: VoteTable) -> np.ndarray:
    yes, no = votes.counts()
    return _clamp_known((yes + 0.5) / (yes + no + 1.0), votes)


def _category_prior(votes: VoteTable, truth: np.ndarray) -> np.ndarray:
    categories = int(votes.pair_category.max(initial=-1)) + 1
    voted = np.bincount(votes.pair, minlength=votes.pairs) > 0
    if votes.candidate is not None:
        voted &= votes.candidate
    good = np.bincount(votes.pair_category, weights=truth * voted, minlength=categories)
    total = np.bincount(votes.pair_category, weights=voted, minlength=categories)
    return np.clip((good + 1) / (total + 2), 0.02, 0.98)


def _coins(votes: VoteTable, good: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(yes on good, good, no on bad, bad) per worker, soft: `good` is P(good) per vote."""
    said_yes = votes.answer.astype(float)
    n = votes.workers
    return (np.bincount(votes.worker, weights=said_yes * good, minlength=n),
            np.bincount(votes.worker, weights=good, minlength=n),
            np.bincount(votes.worker, weights=(1 - said_yes) * (1 - good), minlength=n),
            np.bincount(votes.worker, weights=1 - good, minlength=n))


def _coin_estimates(votes: VoteTable, good: np.ndarray, others: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(sensitivity, specificity) per worker: Beta-smoothed soft counts, clipped to COIN_RANGE.

    The prior trusts a worker at 0.8 on each coin, as much as five answers (ACCURACY_PRIOR). Negative
    controls alone say nothing of how a worker sees a positive (one who says no to everything passes
    them all), so a coin their known answers never tested while they tested the other is held to
    their answers on the pairs the *other* voters (`others`, P(good) per vote without it) are sure
    of: once those show the worker wrong on most (two or more seen, the same trust worth one answer,
    UNTESTED_PRIOR), the coin gets no more than they give."""
    yes_good, goods, no_bad, bads = _coins(votes, good)
    known = votes.known[votes.pair]
    positives = np.bincount(votes.worker, weights=known == 1, minlength=votes.workers)
    negatives = np.bincount(votes.worker, weights=known == 0, minlength=votes.workers)
    sure_yes, sure_goods, sure_no, sure_bads = _hard_coins(votes, good if others is None else others)
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


def _hard_coins(votes: VoteTable, good: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`_coins` on the votes whose pair `good` makes sure (at least CLEAR either way), counted as certain."""
    sure = (good >= CLEAR) | (good <= 1 - CLEAR)
    return _coins(dataclasses.replace(votes, pair=votes.pair[sure], worker=votes.worker[sure],
                                      answer=votes.answer[sure]), np.round(good[sure]))


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


def worker_quality(votes: VoteTable, good: np.ndarray, posterior: np.ndarray | None = None) -> WorkerQuality:
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
    low, high = balanced_interval(*_hard_coins(votes, good))
    known = votes.known[votes.pair]
    n = votes.workers
    count = np.bincount(votes.worker, minlength=n)
    has = count > 0
    return WorkerQuality(
        np.where(has, sensitivity, np.nan), np.where(has, specificity, np.nan),
        np.where(has, (sensitivity + specificity) / 2, np.nan),
        np.where(has, low, np.nan), np.where(has, high, np.nan),
        np.bincount(votes.worker, weights=known == 1, minlength=n).astype(np.int64),
        np.bincount(votes.worker, weights=(known == 1) & votes.answer, minlength=n).astype(np.int64),
        np.bincount(votes.worker, weights=known == 0, minlength=n).astype(np.int64),
        np.bincount(votes.worker, weights=(known == 0) & ~votes.answer, minlength=n).astype(np.int64),
        count.astype(np.int64))


@dataclasses.dataclass
class TwoCoinEM:
    """EM with two coins per worker (Dawid and Skene's) and one prior per category; known
    answers clamped. Also returns, per vote, the posterior of its pair without that vote:
    the evidence `worker_quality` judges the voter by, so no one confirms themselves."""

    iterations: int = 50
    category_weight: np.ndarray | None = None  # per category: scales every worker's evidence

    def run(self, votes: VoteTable, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(posterior per pair, P(good) per vote without that vote, category prior)."""
        known = votes.known[votes.pair]
        others = truth[votes.pair]
        prior = _category_prior(votes, truth)
        for _ in range(self.iterations):
            sensitivity, specificity = _coin_estimates(votes, np.where(known >= 0, known, truth[votes.pair]), others)
            prior = _category_prior(votes, truth)
            yes_weight, no_weight = _coin_weights(sensitivity, specificity)
            evidence = np.where(votes.answer, yes_weight[votes.worker], no_weight[votes.worker])
            if self.category_weight is not None:
                evidence = evidence * self.category_weight[votes.pair_category[votes.pair]]
            log_odds = np.log(prior / (1 - prior))[votes.pair_category] + np.bincount(
                votes.pair, weights=evidence, minlength=votes.pairs)
            new = _clamp_known(_sigmoid(log_odds), votes)
            others = np.where(known >= 0, known, _sigmoid(log_odds[votes.pair] - evidence))
            converged = np.max(np.abs(new - truth), initial=0) < 1e-6
            truth = new
            if converged:
                break
        return truth, others, prior


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
        workers = worker_quality(votes, truth[votes.pair])
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
        workers = worker_quality(votes, truth[votes.pair])
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
            truth, others, prior = TwoCoinEM(category_weight=weight).run(votes, truth)
        workers = worker_quality(votes, others, truth[votes.pair])
        return Result(truth, _decide(truth, votes, self.settings), workers.accuracy, prior, hard, workers)

    def _difficulty(self, votes: VoteTable, truth: np.ndarray, others: np.ndarray):
        """Per category: how much of the workers' usual evidence its seed votes carry (at
        most 1: a category as easy as the rest), and whether it is hard to illustrate."""
        categories = int(votes.pair_category.max(initial=-1)) + 1
        seeded = votes.seed[votes.pair] & (np.bincount(votes.pair, minlength=votes.pairs)[votes.pair]
                                          >= self.settings.seed_votes)
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
