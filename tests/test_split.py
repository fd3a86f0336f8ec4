"""Split rules as properties (hypothesis), on the pure functions and on real exports."""

from __future__ import annotations

import hashlib
import json
import re

from exportdata import LabeledData
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgnet_build.errors import BadInput
from imgnet_build.split import ExportOptions, cap_per_class, choose_val, export, split_draw

WNIDS = [f"n{number:08d}" for number in range(1, 6)]
keys = st.integers(0, 10**6).map(lambda n: hashlib.sha256(str(n).encode()).hexdigest())
memberships = st.dictionaries(keys, st.sets(st.sampled_from(WNIDS), min_size=1, max_size=3), max_size=60)


def by_category(clusters: dict[str, set[str]]) -> dict[str, list[str]]:
    members: dict[str, list[str]] = {}
    for key, wnids in clusters.items():
        for wnid in wnids:
            members.setdefault(wnid, []).append(key)
    return members


def test_the_draw_is_uniform_and_keyed_by_the_seed():
    draws = [split_draw(0, f"{n:064x}") for n in range(20000)]
    assert all(0 <= draw < 1 for draw in draws)
    assert abs(sum(draw < 0.1 for draw in draws) / len(draws) - 0.1) < 0.01
    assert split_draw(1, "a" * 64) != split_draw(0, "a" * 64) == split_draw(0, "a" * 64)


@given(memberships, st.integers(0, 3), st.floats(0, 0.99))
def test_a_fraction_split_is_the_draw_and_one_per_class(clusters, seed, fraction):
    """Val: every cluster under F, and in each class with none under F and two or more clusters, its smallest
    draw. Before, a class could get no val image at all (the demo's Cardigan), and then torchvision's
    ImageFolder numbered val's classes differently from train's."""
    members = by_category(clusters)
    val = choose_val(members, seed, val_fraction=fraction)
    ranked = {wnid: sorted(keys, key=lambda key: (split_draw(seed, key), key)) for wnid, keys in members.items()}
    under = {key for key in clusters if split_draw(seed, key) < fraction}
    keepers = {keys[-1] for keys in ranked.values() if fraction > 0 and len(keys) > 1 and set(keys) <= under}
    expected = under - keepers
    for keys in ranked.values():  # each class decides on the draws alone, not on the others' minimum
        if fraction > 0 and len(keys) > 1 and not (under - keepers) & set(keys):
            expected |= set([key for key in keys if key not in keepers][:1])
    assert val == expected
    if fraction > 0:  # both splits in every class of two or more clusters (shared clusters aside)
        alone = [keys for keys in members.values() if len(keys) > 1 and all(len(clusters[key]) == 1 for key in keys)]
        assert all(val & set(keys) and set(keys) - val for keys in alone)


@given(memberships, st.integers(0, 3), st.integers(0, 8))
def test_per_class_counts(clusters, seed, per_class):
    members = by_category(clusters)
    val = choose_val(members, seed, val_per_class=per_class)
    for cluster_keys in members.values():
        own = [key for key in cluster_keys if len(clusters[key]) == 1]
        in_val = sum(key in val for key in cluster_keys)
        assert in_val >= min(per_class, len(cluster_keys) - 1)
        if len(own) == len(cluster_keys):  # no shared clusters: exactly N, keeping one for train
            assert in_val == min(per_class, len(cluster_keys) - 1)
        chosen = sorted(cluster_keys, key=lambda key: split_draw(seed, key))[:min(per_class, len(cluster_keys) - 1)]
        assert set(chosen) <= val  # the smallest draws of every category


@given(memberships, memberships, st.integers(0, 3), st.integers(1, 5), st.floats(0.05, 0.5))
def test_growth_never_moves_a_train_cluster_to_val(old, new, seed, per_class, fraction):
    grown = {key: old.get(key, set()) | new.get(key, set()) for key in old.keys() | new.keys()}
    grown = {key: wnids if key not in old else old[key] for key, wnids in grown.items()}  # old clusters keep their categories
    before = choose_val(by_category(old), seed, val_fraction=fraction)
    after = choose_val(by_category(grown), seed, val_fraction=fraction)
    one_sided = {wnid for wnid, keys in by_category(old).items()
                 if len(keys) < 2 or len({split_draw(seed, key) < fraction for key in keys}) == 1}
    near = {wnid for wnids in old.values() if wnids & one_sided for wnid in wnids}  # sharing a cluster with one
    for key in (before ^ after) & old.keys():  # moves: only in a class that had < 2 clusters or all on one side of F
        assert old[key] & near
    before = choose_val(by_category(old), seed, val_per_class=per_class)
    after = choose_val(by_category(grown), seed, val_per_class=per_class)
    large = {wnid for wnid, members in by_category(old).items() if len(members) > per_class}
    for key in old:
        if key in after and key not in before:
            assert not old[key] <= large  # only a category that was still small can take a train cluster
    displaced = before - after
    added = len(grown) - len(old)
    assert len(displaced) <= added * max(len(w) for w in grown.values()) if grown else not displaced


@given(memberships, st.integers(0, 3), st.integers(1, 10))
def test_the_cap_keeps_at_most_the_limit_and_ignores_the_split_draw(clusters, seed, limit):
    members = by_category(clusters)
    kept = cap_per_class(members, seed, limit)
    assert all(len(kept[wnid]) == min(limit, len(keys)) for wnid, keys in members.items())
    assert all(kept[wnid] <= set(keys) for wnid, keys in members.items())


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(WNIDS[:3]), min_size=2, max_size=12), st.sets(st.integers(0, 2), max_size=3),
       st.integers(0, 2), st.sampled_from([None, 1, 2]))
def test_exports_never_leak_and_growth_only_adds(tmp_path_factory, categories, shared, seed, per_class):
    """Real exports: no image or cluster on both sides, clusters spanning categories, then growth."""
    from imgnet_build.workspace import Workspace

    workspace = Workspace.init(tmp_path_factory.mktemp("ws"))
    try:
        data = LabeledData(workspace, size=(32, 24))
        shas = [data.accepted(wnid, seed=n) for n, wnid in enumerate(categories)]
        for n in sorted(n for n in shared if n < len(shas)):  # the same picture accepted for another category too
            sha = shas[n]
            other = next(wnid for wnid in WNIDS[:3] if wnid != categories[n])
            data.candidate(sha, other)
            data.label(data.cluster_of(sha), other)
        options = ExportOptions(seed=seed, val_per_class=per_class, val_fraction=None if per_class else 0.5)
        out = tmp_path_factory.mktemp("out")
        try:
            first = export(workspace, out / "a", options)
        except BadInput as refused:  # no class of two images, or one whose clusters other classes put all in val
            assert re.match(r"nothing to export|cannot place \d+ classes in both train and val: n0", str(refused))
            return
        rows = manifest(out / "a")
        for field in ("sha256", "cluster"):
            splits: dict[str, set[str]] = {}
            for row in rows:
                splits.setdefault(row[field], set()).add(row["split"])
            assert all(len(where) == 1 for where in splits.values())
        assert all(c["train"] and c["val"] for c in json.loads((out / "a" / "dataset.json").read_text())["classes"])
        for n in range(3):
            data.accepted(categories[0], seed=100 + n)
        try:
            second = export(workspace, out / "b", options)
        except BadInput as refused:
            assert str(refused).startswith("cannot place")
            return
        before = {(row["sha256"], row["wnid"]): row["split"] for row in rows}
        after = {(row["sha256"], row["wnid"]): row["split"] for row in manifest(out / "b")}
        changed = {pair for pair in before if after[pair] != before[pair]}
        sizes = {wnid: sum(row["wnid"] == wnid for row in rows) for wnid in WNIDS}
        if per_class is not None:
            # train -> val only for a cluster one of whose categories had no more than N clusters (it still kept
            # one for train; a category left out under --min-per-class had none)
            wnids_of: dict[str, set[str]] = {}
            for row in manifest(out / "b"):
                wnids_of.setdefault(row["cluster"], set()).add(row["wnid"])
            cluster_of = {(row["sha256"], row["wnid"]): row["cluster"] for row in rows}
            assert all(before[pair] == "val" or any(sizes[wnid] <= per_class for wnid in wnids_of[cluster_of[pair]])
                       for pair in changed)
        assert len({row["cluster"] for row in rows if (row["sha256"], row["wnid"]) in changed}) == second.moved_count
        assert second.images == first.images + 3 + first.left_out_categories.get(categories[0], 0)
    finally:
        workspace.close()


def manifest(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
