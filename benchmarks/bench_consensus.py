"""Consensus quality and cost: our dynamic consensus against fixed-vote baselines and crowd-kit.

    python benchmarks/bench_consensus.py [--categories 20] [--pairs 500] [--positives 0.3] [--seed 0]

One run, one simulated crowd (imgnet's default: 60 workers, accuracy uniform in
0.6-0.95, 10% spammers): precision and recall of the accepted labels against the truth,
and votes per pair, for 3- and 5-vote majority, crowd-kit's Dawid-Skene and GLAD on 5
and 7 fixed votes (`pip install '.[bench]'`), and our `dynamic` driven through the real
labeling rounds (`imgnet label run --backend simulated`) on a workspace in a temporary
folder. Targets for dynamic: precision >= 0.99, recall >= 0.95, <= 6 votes per pair.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time

import numpy as np
from sqlalchemy import select

from imgnet_build import dedup
from imgnet_build.labeling import rounds
from imgnet_build.labeling.consensus import Majority, VoteTable
from imgnet_build.labeling.simulated import Crowd
from imgnet_build.store import Candidate, Category, CategoryEdge, Cluster, Image, Label, Vote
from imgnet_build.workspace import Workspace


def build(workspace: Workspace, categories: int, pairs: int, positives: float, rng: np.random.Generator) -> dict:
    """Categories with `pairs` candidates each; the images are rows only (consensus never opens them)."""
    truth = {}
    with workspace.session() as session:
        root = Category(wnid="n00000000", synset="root.n.01", name="root", lemmas=[], gloss="", lexname="noun.artifact",
                        depth=0)
        session.add(root)
        session.flush()
        rows = []
        for number in range(1, categories + 1):
            category = Category(wnid=f"n{number:08d}", synset=f"c{number}.n.01", name=f"c{number}", lemmas=[],
                                gloss="", lexname="noun.artifact", depth=1)
            session.add(category)
            session.flush()
            session.add(CategoryEdge(parent_id=root.id, child_id=category.id))
            images, candidates = [], []
            for index in range(pairs):
                sha = hashlib.sha256(f"{number}/{index}".encode()).hexdigest()
                good = bool(rng.random() < positives)
                truth[sha] = good
                images.append({"sha256": sha, "width": 64, "height": 64, "format": "JPEG", "bytes": 1,
                               "blob_key": sha, "phash": 0})
                candidates.append({"category_id": category.id, "source": "bench", "url": sha, "rank": index,
                                   "status": "ok", "image_sha256": sha, "truth": good, "attempts": 1})
            session.execute(Image.__table__.insert(), images)
            session.execute(Candidate.__table__.insert(), candidates)
            rows += [type("Row", (), {"sha256": image["sha256"], "cluster_id": None}) for image in images]
        dedup.assign_clusters(session, rows, {})
    return truth


def score(accepted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    hits = np.sum(accepted & truth)
    return hits / max(accepted.sum(), 1), hits / max(truth.sum(), 1)


def fixed_votes(truth: np.ndarray, category: np.ndarray, votes: int, crowd: Crowd, rng) -> VoteTable:
    accuracy, spammer = crowd.profiles()
    pairs = len(truth)
    workers = np.stack([rng.choice(crowd.workers, votes, replace=False) for _ in range(pairs)])
    pair = np.repeat(np.arange(pairs), votes)
    worker = workers.ravel()
    right = rng.random(len(pair)) < accuracy[worker]
    answer = np.where(right, truth[pair], ~truth[pair])
    answer = np.where(spammer[worker], rng.random(len(pair)) < 0.5, answer)
    return VoteTable.build(pair, worker, answer, category[: pairs], workers=crowd.workers)


def crowd_kit(table: VoteTable, truth: np.ndarray, name: str):
    try:
        import pandas as pd
        from crowdkit.aggregation import GLAD, DawidSkene
    except ImportError:
        return None
    frame = pd.DataFrame({"task": table.pair, "worker": table.worker, "label": table.answer.astype(int)})
    model = DawidSkene(n_iter=100) if name == "ds" else GLAD(n_iter=100)
    labels = model.fit_predict(frame).sort_index()
    return score(labels.to_numpy() == 1, truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--positives", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    crowd = Crowd(seed=args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        workspace = Workspace.init(folder + "/ws")
        truth_by_sha = build(workspace, args.categories, args.pairs, args.positives, rng)
        started = time.perf_counter()
        result = rounds.run(workspace, "simulated", options={"sim_seed": args.seed})
        seconds = time.perf_counter() - started
        with workspace.session() as session:
            accepted = set(session.scalars(select(Cluster.representative).join(Label, Label.cluster_id == Cluster.id)
                                           .where(Label.status == "accepted")))
            votes = session.query(Vote).filter(Vote.control.is_(False)).count()
            control_votes = session.query(Vote).filter(Vote.control.is_(True)).count()
        workspace.close()
    shas = sorted(truth_by_sha)
    truth = np.array([truth_by_sha[sha] for sha in shas])
    category = np.repeat(np.arange(args.categories), args.pairs)
    ours = score(np.array([sha in accepted for sha in shas]), truth)
    for votes_each in (3, 5):
        table = fixed_votes(truth, category, votes_each, crowd, rng)
        rows.append((f"majority, {votes_each} votes", *score(Majority().fit(table).status == "accepted", truth),
                     votes_each))
    for votes_each in (5, 7):
        table = fixed_votes(truth, category, votes_each, crowd, rng)
        for name, label in (("ds", "crowd-kit Dawid-Skene"), ("glad", "crowd-kit GLAD")):
            measured = crowd_kit(table, truth, name)
            if measured is None:
                print(f"({label}: crowd-kit is not installed; pip install '.[bench]')", file=sys.stderr)
                continue
            rows.append((f"{label}, {votes_each} votes", *measured, votes_each))
    pairs = len(truth)
    rows.append(("imgnet dynamic (label run)", *ours, votes / pairs))
    print(f"{args.categories} categories x {args.pairs} pairs, {args.positives:.0%} true; crowd: {crowd.workers} "
          f"workers, accuracy {crowd.accuracy[0]}-{crowd.accuracy[1]}, {crowd.spammers:.0%} spammers")
    print(f"{'method':<32} {'precision':>9} {'recall':>7} {'votes/pair':>10}")
    for name, precision, recall, per_pair in rows:
        print(f"{name:<32} {precision:>9.4f} {recall:>7.4f} {per_pair:>10.2f}")
    print(f"dynamic: {result['rounds']} rounds, {result['undecided']} pairs left undecided, "
          f"{control_votes / pairs:.2f} control votes per pair on top, {seconds:.0f} s through SQLite")


if __name__ == "__main__":
    main()
