"""The labeling rounds in memory: the same process `imgnet label run --backend simulated`
drives through the database, simulated with numpy over the same consensus code.

    sim = Simulation(world, crowd, settings)
    outcome = sim.run()                  # dynamic, as label run does it
    outcome = sim.run(oracle=True)       # the oracle: true coins, same thresholds and cap
    outcome = sim.run(told=True)         # dynamic, told up front whom the oracle sets aside

What it keeps from `labeling.rounds`: three votes for a new pair, `seed_votes` for each
category's seed sample (its first `seed_images` pairs in a fixed order), one more per
round while a pair stays undecided, up to `max_votes` votes that count (a blocked
worker's votes stop counting); tasks of `images_per_task` images, `controls` of them
controls (up to half positives: the category's most confident accepted pairs, then its
pairs with AGREED counted yes votes and no no; the rest
negatives: other categories' most confident accepted pairs), shuffled; each task answered
by distinct workers who are not blocked and never voted on any of its pairs (pairs with the
same voters grouped where the crowd would otherwise have nobody for a task, as label run does;
a task the crowd cannot fill gets what it can); a worker's second vote on a pair is dropped; after
each round `decide` (fit, block, fit again once). What it leaves out: the database, gold,
dedup clusters (every pair is its own cluster).
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np

from imgnet_build.labeling.consensus import METHODS, ConsensusSettings, VoteTable
from imgnet_build.labeling.quality import to_block
from imgnet_build.labeling.rounds import takeable_chunks

CONTROL_CONFIDENCE = 0.99
CONTROL_POOL = 200
AGREED = 3


@dataclasses.dataclass(frozen=True)
class SimSettings:
    votes: int = 3
    max_votes: int = 12
    seed_images: int = 10
    seed_votes: int = 10
    images_per_task: int = 48
    controls: int = 6
    accept: float = 0.99
    reject: float = 0.01
    block_below: float = 0.6
    prefer_above: float = 0.75
    method: str = "dynamic"


@dataclasses.dataclass
class Outcome:
    precision: float
    recall: float
    votes_per_pair: float  # candidate votes asked (controls not counted), blocked workers' included
    undecided: int
    accepted: int
    blocked: int
    blocked_honest: int  # blocked workers whose true balanced accuracy is at least 0.6
    rounds: int


def score(accepted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    hits = np.sum(accepted & truth)
    return float(hits / max(accepted.sum(), 1)), float(hits / max(truth.sum(), 1))


class Simulation:
    def __init__(self, truth: np.ndarray, category: np.ndarray, sensitivity: np.ndarray, specificity: np.ndarray,
                 settings: SimSettings = SimSettings(), seed: int = 0) -> None:
        self.truth, self.category = truth.astype(bool), category.astype(np.int64)
        self.se, self.sp = sensitivity, specificity
        self.settings = settings
        self.seed = seed
        self.categories = int(category.max()) + 1

    def run(self, oracle: bool = False, max_rounds: int = 100, told: bool = False) -> Outcome:
        """`told`: dynamic as usual, but the workers the oracle sets aside are blocked before the
        first round: what is left of the gap to the oracle is not the cost of learning who is weak."""
        s = self.settings
        rng = random.Random(self.seed)
        n = len(self.truth)
        workers = len(self.se)
        self.pair_cat = list(self.category)  # per pair (candidates first, then control pairs)
        self.known = [-1] * n
        control_pairs: dict[tuple[int, int], int] = {}
        voters: list[set[int]] = [set() for _ in range(n)]
        vote_p: list[int] = []
        vote_w: list[int] = []
        vote_a: list[bool] = []
        blocked = np.zeros(workers, bool)
        if oracle or told:  # it knows every worker's coins: block as dynamic would with no doubt about them
            true = (self.se + self.sp) / 2
            blocked = to_block(true, true, blocked, s.block_below, s.prefer_above, 2 * s.max_votes)
        status = np.full(n, "", dtype=object)
        posterior = np.full(n, 0.5)
        order = [list(rng.sample(range(c_start, c_end), c_end - c_start)) for c_start, c_end in self._ranges()]
        asked = 0
        rounds = 0
        per_task = s.images_per_task - (0 if oracle else s.controls)
        for number in range(1, max_rounds + 1):
            counted = np.zeros(n, np.int64)
            said_no = np.zeros(n, np.int64)
            ok = ~blocked[np.asarray(vote_w, np.int64)] if vote_w else np.zeros(0, bool)
            cand = np.asarray(vote_p, np.int64) < n if vote_p else np.zeros(0, bool)
            if vote_p:
                np.add.at(counted, np.asarray(vote_p, np.int64)[ok & cand], 1)
                np.add.at(said_no, np.asarray(vote_p, np.int64)[ok & cand & ~np.asarray(vote_a, bool)], 1)
            agreed = (counted >= AGREED) & (said_no == 0)
            tasks = []
            gone = set(np.flatnonzero(blocked).tolist())
            crew = workers - len(gone)  # who may still answer: a pair asks for no more than those who did not vote on it
            for c, (start, end) in enumerate(self._ranges()):
                seed = set() if oracle else self._seed(order[c], counted, status)
                need: dict[int, int] = {}
                for p in range(start, end):
                    if status[p] in ("accepted", "rejected"):
                        continue
                    target = s.seed_votes if p in seed else s.votes
                    total = counted[p]
                    wanted = target - total if total < target else (1 if status[p] == "undecided" else 0)
                    wanted = min(wanted, s.max_votes - total, crew - len(voters[p] - gone))
                    if wanted > 0:
                        need[p] = int(wanted)
                if not need:
                    continue
                pool = ([], []) if oracle or not s.controls else self._control_pool(c, posterior, status, need, agreed)
                by_votes: dict[int, list[int]] = {}
                for p, wanted in sorted(need.items()):
                    by_votes.setdefault(wanted, []).append(p)
                active = {p: voters[p] - gone for p in need}
                for wanted, pairs in sorted(by_votes.items()):
                    for chunk in takeable_chunks(pairs, per_task, active, crew - wanted):
                        positives, negatives = pool
                        chosen = rng.sample(positives, min(s.controls // 2, len(positives)))
                        chosen += rng.sample(negatives, min(s.controls - len(chosen), len(negatives)))
                        tasks.append((c, wanted, chunk, chosen))
            if not tasks:
                break
            rounds = number
            answered = 0
            for c, wanted, chunk, chosen in tasks:
                busy = set().union(*(voters[p] for p in chunk))
                free = [w for w in range(workers) if not blocked[w] and w not in busy]
                for w in rng.sample(free, min(wanted, len(free))):
                    answered += 1
                    for p in chunk:
                        self._vote(p, w, self.truth[p], rng, voters, vote_p, vote_w, vote_a)
                        asked += 1
                    for kind, p in chosen:
                        if kind == "positive":  # an accepted pair, as label run: not clamped, answered from its truth
                            self._vote(p, w, self.truth[p], rng, voters, vote_p, vote_w, vote_a)
                        else:
                            key = (p, c)
                            if key not in control_pairs:
                                control_pairs[key] = len(self.pair_cat)
                                self.pair_cat.append(c)
                                self.known.append(0)
                                voters.append(set())
                            self._vote(control_pairs[key], w, False, rng, voters, vote_p, vote_w, vote_a)
            if answered == 0:
                break
            posterior, status, blocked = self._decide(oracle, vote_p, vote_w, vote_a, blocked, n)
        accepted = status == "accepted"
        precision, recall = score(accepted, self.truth)
        honest = (self.se + self.sp) / 2 >= 0.6
        undecided = int(np.sum((status != "accepted") & (status != "rejected")))
        return Outcome(precision, recall, asked / n, undecided, int(accepted.sum()), int(blocked.sum()),
                       int(np.sum(blocked & honest)), rounds)

    def _ranges(self) -> list[tuple[int, int]]:
        bounds = np.searchsorted(self.category, np.arange(self.categories + 1))
        return [(int(bounds[c]), int(bounds[c + 1])) for c in range(self.categories)]

    def _seed(self, order: list[int], counted: np.ndarray, status: np.ndarray) -> set[int]:
        s = self.settings
        seed = {p for p in order if counted[p] >= s.seed_votes}
        for p in order:
            if len(seed) >= s.seed_images:
                break
            if status[p] not in ("accepted", "rejected"):
                seed.add(p)
        return seed

    def _control_pool(self, c: int, posterior: np.ndarray, status: np.ndarray, need: dict[int, int],
                      agreed: np.ndarray):
        sure = (status == "accepted") & (posterior >= CONTROL_CONFIDENCE)
        mine = sure & (self.category == c)
        mine_ids = np.flatnonzero(mine)
        mine_ids = [p for p in mine_ids[np.lexsort((mine_ids, -posterior[mine_ids]))][:CONTROL_POOL]
                    if p not in need]
        seeded = np.flatnonzero(agreed & (self.category == c) & (status != "accepted") & (status != "rejected"))
        mine_ids += [p for p in seeded[:CONTROL_POOL] if p not in need]
        other = np.flatnonzero(sure & (self.category != c))
        other = other[np.lexsort((other, -posterior[other]))][:CONTROL_POOL]
        return [("positive", int(p)) for p in mine_ids], [("negative", int(p)) for p in other]

    def _vote(self, p: int, w: int, good: bool, rng: random.Random, voters, vote_p, vote_w, vote_a) -> None:
        answer = rng.random() < self.se[w] if good else rng.random() >= self.sp[w]
        if w in voters[p]:
            return  # a pair this worker already voted on keeps its first vote
        voters[p].add(w)
        vote_p.append(p)
        vote_w.append(w)
        vote_a.append(answer)

    def _decide(self, oracle: bool, vote_p, vote_w, vote_a, blocked, n):
        s = self.settings
        p_all = np.asarray(vote_p, np.int64)
        w_all = np.asarray(vote_w, np.int64)
        a_all = np.asarray(vote_a, bool)
        if oracle:
            return self._oracle(p_all, w_all, a_all, blocked, n)
        method = METHODS[s.method](ConsensusSettings(s.votes, s.accept, s.reject, s.seed_votes))
        for _ in range(2):
            keep = ~blocked[w_all]
            p, w, a = p_all[keep], w_all[keep], a_all[keep]
            pairs = len(self.pair_cat)
            counts = np.bincount(p, minlength=pairs)
            seed = (np.arange(pairs) < n) & (counts >= s.seed_votes)
            table = VoteTable.build(p, w, a, self.pair_cat, self.known, seed, len(self.se), np.arange(pairs) < n)
            result = method.fit(table)
            new = to_block(result.workers.accuracy, result.workers.high, blocked, s.block_below, s.prefer_above,
                           2 * s.max_votes)
            if not new.any():
                break
            blocked = blocked | new
        status = np.where(counts[:n] > 0, result.status[:n], "").astype(object)
        return result.posterior[:n], status, blocked

    def _oracle(self, p, w, a, blocked, n):
        s = self.settings
        keep = (~blocked[w]) & (p < n)
        p, w, a = p[keep], w[keep], a[keep]
        se, sp = np.clip(self.se, 1e-3, 1 - 1e-3), np.clip(self.sp, 1e-3, 1 - 1e-3)
        yes = np.log(se / (1 - sp))
        no = np.log((1 - se) / sp)
        rate = np.bincount(self.category, weights=self.truth, minlength=self.categories) / np.bincount(
            self.category, minlength=self.categories)
        rate = np.clip(rate, 1e-3, 1 - 1e-3)
        log_odds = np.log(rate / (1 - rate))[self.category] + np.bincount(
            p, weights=np.where(a, yes[w], no[w]), minlength=n)
        posterior = 1 / (1 + np.exp(-log_odds))
        counts = np.bincount(p, minlength=n)
        status = np.full(n, "", dtype=object)
        voted = counts > 0
        status[voted] = "undecided"
        enough = counts >= s.votes
        status[voted & enough & (posterior >= s.accept)] = "accepted"
        status[voted & enough & (posterior <= s.reject)] = "rejected"
        return posterior, status, blocked
