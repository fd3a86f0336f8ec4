"""The category tree: which WordNet noun synsets a camera can see, and how they nest.

The rule (data in `imgnet_build/data/taxonomy.toml`): a noun synset is imageable when it
is not an instance, lies below one of the visible roots, has no cut-off among its
ancestors, and is not filed in an abstract lexicographer file. The tree is a DAG: a
category keeps an edge to every selected hypernym.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import tomllib
import typing
from collections import deque
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import resources

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from imgnet_build.dbutil import batched
from imgnet_build.errors import BadInput, NotImageable, UnknownSynset
from imgnet_build.store import Candidate, Category, CategoryEdge
from imgnet_build.wordnet import WNID, load_wordnet, resolve_synset, wnid
from imgnet_build.workspace import Workspace

__all__ = ["Rule", "TreeOptions", "Selection", "BuildResult", "TreeNode", "TreeView", "TreeExport", "load_rule",
           "select_categories", "build_tree", "show_tree", "export_tree", "why_not_imageable", "load_tree",
           "descendant_counts", "image_counts", "tree_tops", "render_tree", "tree_rows", "subtree_totals",
           "export_rows", "find_category", "show_roots", "write_rows", "TREE_FORMATS"]


BATCH = 5000  # rows per statement when writing the tree
Synset = typing.Any  # nltk's WordNet synset (nltk publishes no types)


@dataclasses.dataclass(frozen=True)
class Rule:
    roots: tuple[str, ...]
    cutoffs: tuple[str, ...]
    skip: tuple[str, ...]
    people: str
    people_lexfile: str
    abstract_lexfiles: frozenset[str]


@lru_cache(maxsize=1)
def load_rule() -> Rule:
    data = tomllib.loads(resources.files("imgnet_build.data").joinpath("taxonomy.toml").read_text())
    return Rule(roots=tuple(data["roots"]), cutoffs=tuple(data["cutoffs"]), skip=tuple(data["skip"]),
                people=data["people"], people_lexfile=data["people_lexfile"],
                abstract_lexfiles=frozenset(data["abstract_lexfiles"]))


def _excluded_lexfiles(rule: Rule, include_people: bool) -> frozenset[str]:
    return rule.abstract_lexfiles if include_people else rule.abstract_lexfiles | {rule.people_lexfile}


@dataclasses.dataclass(frozen=True)
class TreeOptions:
    roots: tuple[str, ...] = ()  # wnids or nltk names; empty means all of WordNet
    excludes: tuple[str, ...] = ()
    max_depth: int | None = None
    include_people: bool = False


@dataclasses.dataclass
class Selection:
    """Selected synsets by wnid, their depth, and parent -> child edges among them."""

    synsets: dict[str, object]
    depth: dict[str, int]
    edges: list[tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class BuildResult:
    categories: int
    edges: int
    added: int
    removed: int
    kept: tuple[str, ...]  # wnids outside the new selection kept because candidates hang on them

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self) | {"kept": list(self.kept)}

    def summary(self) -> str:
        return (f"tree: {self.categories} categories, {self.edges} edges "
                f"({self.added} added, {self.removed} removed, {len(self.kept)} kept)")

    def warnings(self) -> list[str]:
        if not self.kept:
            return []
        shown = ", ".join(self.kept[:10]) + (" …" if len(self.kept) > 10 else "")
        return [f"kept {len(self.kept)} categories outside the new selection because they have candidates: {shown}"]


def _below(starts: Iterable, blocked: set | frozenset = frozenset()) -> set:
    """The synsets reachable from `starts` through hyponym links, not entering `blocked`."""
    seen = {s for s in starts if s not in blocked}
    queue = deque(seen)
    while queue:
        for child in queue.popleft().hyponyms():
            if child not in seen and child not in blocked:
                seen.add(child)
                queue.append(child)
    return seen


def _resolve_all(names: Iterable[str]) -> list:
    return [resolve_synset(name) for name in names]


def _imageable_below(starts: list, rule: Rule, include_people: bool, excludes: Iterable = ()) -> set:
    """The imageable synsets at or below `starts`, which may lie above, at or below the visible roots."""
    visible_roots = _resolve_all(rule.roots)
    blocked = set(_resolve_all(rule.cutoffs)) | set(excludes)
    if not include_people:
        blocked.add(resolve_synset(rule.people))
    entries = []
    for start in starts:
        ancestors = _ancestors(start)
        if ancestors & blocked:
            continue
        if ancestors & set(visible_roots):
            entries.append(start)
        else:  # a start above the visible roots (entity.n.01): enter at the visible roots below it
            entries.extend(root for root in visible_roots if start in _ancestors(root))
    skipped = set(_resolve_all(rule.skip))
    lexfiles = _excluded_lexfiles(rule, include_people)
    return {s for s in _below(entries, blocked)
            if s not in skipped and s.lexname() not in lexfiles and not s.instance_hypernyms()}


def _ancestors(synset: Synset) -> set:
    """The synset and everything above it through hypernym links."""
    return set(synset.closure(lambda s: s.hypernyms())) | {synset}


def why_not_imageable(synset: Synset, rule: Rule | None = None, include_people: bool = False) -> str | None:
    """Why one synset is not imageable, or None when it is (checks its hypernym paths)."""
    rule = rule or load_rule()
    if synset.instance_hypernyms():
        return "it is an instance (a named individual), not a category"
    ancestors = _ancestors(synset)
    if not include_people and (synset.lexname() == rule.people_lexfile or resolve_synset(rule.people) in ancestors):
        return "people are left out by default; add --include-people"
    if synset.lexname() in rule.abstract_lexfiles:
        return f"WordNet files it as an abstraction ({synset.lexname()})"
    if synset in _resolve_all(rule.skip):
        return "it is a place or region, not a thing"
    for cutoff in _resolve_all(rule.cutoffs):
        if cutoff in ancestors:
            return f"it lies below {cutoff.name()}, which the filter cuts off"
    if not ancestors & set(_resolve_all(rule.roots)):
        return "it is not below any visible root (" + ", ".join(rule.roots) + ")"
    return None


def select_categories(options: TreeOptions, rule: Rule | None = None) -> Selection:
    """The imageable synsets under the chosen roots, minus the excluded subtrees."""
    rule = rule or load_rule()
    wn = load_wordnet()
    excludes = _resolve_all(options.excludes)
    roots = _resolve_all(options.roots) or [wn.synset("entity.n.01")]
    chosen: set = set()
    for root in roots:
        below = _imageable_below([root], rule, options.include_people, excludes)
        if not below:
            reason = why_not_imageable(root, rule, options.include_people)
            if reason is None and root in excludes:
                reason = "it is excluded with --exclude"
            raise NotImageable(f"{root.name()} ({wnid(root)}) is not imageable: {reason or 'nothing below it is'}")
        chosen |= below
    edges = [(parent, child) for child in chosen for parent in _nearest_chosen_parents(child, chosen)]
    depth = _depths(chosen, edges)
    if options.max_depth is not None:
        chosen = {s for s in chosen if depth[s] <= options.max_depth}
        edges = [(p, c) for p, c in edges if p in chosen and c in chosen]
    return Selection(
        synsets={wnid(s): s for s in chosen},
        depth={wnid(s): depth[s] for s in chosen},
        edges=[(wnid(p), wnid(c)) for p, c in edges],
    )


def _nearest_chosen_parents(synset: Synset, chosen: set) -> set:
    """The closest chosen synsets up each hypernym path (skipping unchosen ones like location.n.01)."""
    found, seen, queue = set(), set(), deque(synset.hypernyms())
    while queue:
        parent = queue.popleft()
        if parent in seen:
            continue
        seen.add(parent)
        if parent in chosen:
            found.add(parent)
        else:
            queue.extend(parent.hypernyms())
    return found


def _depths(chosen: set, edges: list) -> dict:
    """Shortest distance from a top (a chosen synset with no chosen parent)."""
    children: dict = {}
    has_parent = set()
    for parent, child in edges:
        children.setdefault(parent, []).append(child)
        has_parent.add(child)
    depth = {s: 0 for s in chosen if s not in has_parent}
    queue = deque(depth)
    while queue:
        node = queue.popleft()
        for child in children.get(node, ()):
            if child not in depth:
                depth[child] = depth[node] + 1
                queue.append(child)
    return depth


def _row(synset: Synset, depth: int) -> dict[str, object]:
    lemmas = [name.replace("_", " ") for name in synset.lemma_names()]
    return {"wnid": wnid(synset), "synset": synset.name(), "name": lemmas[0], "lemmas": lemmas,
            "gloss": synset.definition(), "lexname": synset.lexname(), "depth": depth}


def build_tree(workspace: Workspace, options: TreeOptions = TreeOptions()) -> BuildResult:
    """Replace the workspace's category tree with a new selection, in one transaction.

    Categories that fall out of the selection are deleted, unless candidates hang on
    them: those are kept (and reported) so no gathered work is lost.
    """
    with workspace.session() as session:
        return _replace_tree(session, options)


def _replace_tree(session: Session, options: TreeOptions) -> BuildResult:
    selection = select_categories(options)
    existing = dict(session.execute(select(Category.wnid, Category.id)).all())
    with_candidates = set(session.scalars(
        select(Category.wnid).join(Candidate, Candidate.category_id == Category.id).group_by(Category.wnid)))
    dropped = set(existing) - set(selection.synsets)
    kept = tuple(sorted(dropped & with_candidates))
    removed = dropped - with_candidates
    session.execute(delete(CategoryEdge))
    for batch in batched(sorted(removed), BATCH):
        session.execute(delete(Category).where(Category.wnid.in_(batch)))

    new_rows = [_row(s, selection.depth[w]) for w, s in sorted(selection.synsets.items()) if w not in existing]  # ids in wnid order: reproducible
    for batch in batched(new_rows, BATCH):
        session.execute(insert(Category), batch)
    depth_updates = [{"id": existing[w], "depth": d} for w, d in selection.depth.items() if w in existing]
    for batch in batched(depth_updates, BATCH):
        session.execute(update(Category), batch)

    ids = dict(session.execute(select(Category.wnid, Category.id)).all())
    edges = set(selection.edges)
    if kept:  # kept categories stay attached to whatever of their parents is still there
        wn = load_wordnet()
        for kept_wnid in kept:
            synset = wn.synset_from_pos_and_offset("n", int(kept_wnid[1:]))
            parents = _nearest_chosen_parents(synset, set(selection.synsets.values()))
            edges.update((wnid(p), kept_wnid) for p in parents)
    edge_rows = [{"parent_id": ids[p], "child_id": ids[c]} for p, c in sorted(edges)]
    for batch in batched(edge_rows, BATCH):
        session.execute(insert(CategoryEdge), batch)
    total = session.scalar(select(func.count()).select_from(Category)) or 0
    return BuildResult(categories=total, edges=len(edge_rows), added=len(new_rows), removed=len(removed), kept=kept)


@dataclasses.dataclass(frozen=True)
class TreeNode:
    wnid: str
    name: str
    lemmas: tuple[str, ...]
    gloss: str
    depth: int
    parents: tuple[str, ...]
    children: tuple[str, ...]


def load_tree(session: Session) -> dict[str, TreeNode]:
    """Every category of the workspace by wnid, with parents and children (sorted by wnid)."""
    rows = session.execute(select(Category.id, Category.wnid, Category.name, Category.lemmas, Category.gloss,
                                  Category.depth)).all()
    by_id = {row.id: row.wnid for row in rows}
    parents: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    for parent_id, child_id in session.execute(select(CategoryEdge.parent_id, CategoryEdge.child_id)):
        parents.setdefault(by_id[child_id], []).append(by_id[parent_id])
        children.setdefault(by_id[parent_id], []).append(by_id[child_id])
    return {row.wnid: TreeNode(row.wnid, row.name, tuple(row.lemmas), row.gloss, row.depth,
                               tuple(sorted(parents.get(row.wnid, ()))), tuple(sorted(children.get(row.wnid, ()))))
            for row in sorted(rows, key=lambda r: r.wnid)}


def descendant_counts(tree: dict[str, TreeNode]) -> dict[str, int]:
    """How many distinct categories lie below each category (a DAG: shared ones count once)."""
    order = {w: i for i, w in enumerate(tree)}
    below: dict[str, int] = {}  # wnid -> bitset of descendants

    def bits(node: str) -> int:
        stack = [node]
        while stack:  # iterative post-order, the tree can be deep
            current = stack[-1]
            pending = [c for c in tree[current].children if c not in below]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            if current not in below:
                value = 0
                for child in tree[current].children:
                    value |= below[child] | (1 << order[child])
                below[current] = value
        return below[node]

    return {w: bits(w).bit_count() for w in tree}


def image_counts(session: Session) -> dict[str, int]:
    """Distinct valid images gathered for each category (duplicates of one another count once).

    Two aggregates, no per-candidate lookup of its image: the distinct images of each category's
    ok candidates (read on ix_candidate_category alone), less, for the images that share a cluster
    with another, the members beyond one per cluster and category (ix_image_cluster, then those
    few images' candidates). Before, every ok candidate looked its image and cluster up and the
    counts were grouped by wnid in a temporary B-tree: 46 s (6 s CPU) at a million images."""
    from imgnet_build.store import CandidateStatus, Image

    ok = (Candidate.status == CandidateStatus.OK) & Candidate.image_sha256.is_not(None)
    unindexed = Candidate.status.concat("") == CandidateStatus.OK.value  # SQLite: walk ix_candidate_category, not _status
    per_category = (select(Candidate.category_id.label("id"), func.count(func.distinct(Candidate.image_sha256)).label("n"))
                    .where(unindexed, Candidate.image_sha256.is_not(None)).group_by(Candidate.category_id).subquery())
    counts: dict[str, int] = dict(session.execute(select(Category.wnid, per_category.c.n)
                                  .join(per_category, per_category.c.id == Category.id)).all())
    shared = (select(Image.cluster_id).where(Image.cluster_id.is_not(None)).group_by(Image.cluster_id)
              .having(func.count() > 1))
    extra = (select(Candidate.category_id.label("id"),
                    (func.count(func.distinct(Candidate.image_sha256)) - func.count(func.distinct(Image.cluster_id)))
                    .label("n"))
             .join(Image, Image.sha256 == Candidate.image_sha256).where(ok, Image.cluster_id.in_(shared))
             .group_by(Candidate.category_id).subquery())
    for wnid_, n in session.execute(select(Category.wnid, extra.c.n).join(extra, extra.c.id == Category.id)):
        counts[wnid_] -= n
    return counts


def tree_tops(tree: dict[str, TreeNode]) -> list[str]:
    return [w for w, node in tree.items() if not node.parents]


def subtree_totals(tree: dict[str, TreeNode], counts: dict[str, int], nodes: Iterable[str]) -> dict[str, int]:
    """For each of `nodes`: the images of its category and of every distinct category below it
    (a category reached by two paths counts once; an image gathered for two categories counts twice)."""
    totals = {}
    for node in nodes:
        seen = {node}
        stack = [node]
        while stack:
            for child in tree[stack.pop()].children:
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        totals[node] = sum(counts.get(wnid, 0) for wnid in seen)
    return totals


def tree_rows(tree: dict[str, TreeNode], roots: list[str], max_depth: int | None,
              image_counts: dict[str, int] | None = None) -> list[dict[str, object]]:
    """What `imgnet tree show` prints, as documents in display order: {wnid, name, level, below}
    and, once images are gathered, `images` (at the node) and `subtree_images` (with all below)."""
    counts = descendant_counts(tree)
    shown: list[tuple[str, int]] = []
    stack = [(root, 0) for root in reversed(roots)]
    while stack:
        node, level = stack.pop()
        shown.append((node, level))
        if max_depth is None or level < max_depth:
            stack.extend((child, level + 1) for child in reversed(tree[node].children))
    totals = subtree_totals(tree, image_counts, {node for node, _ in shown}) if image_counts is not None else {}
    rows: list[dict[str, object]] = []
    for node, level in shown:
        row: dict[str, object] = {"wnid": node, "name": tree[node].name, "level": level, "below": counts[node]}
        if image_counts is not None:
            row |= {"images": image_counts.get(node, 0), "subtree_images": totals[node]}
        rows.append(row)
    return rows


def render_tree(tree: dict[str, TreeNode], roots: list[str], max_depth: int | None,
                image_counts: dict[str, int] | None = None) -> Iterator[str]:
    """Indented lines `name (wnid): N below[, M images here, T in the subtree]`; a category with
    several parents shows under each."""
    yield from TreeView(tree_rows(tree, roots, max_depth, image_counts)).lines()


def find_category(session: Session, spec: str) -> Category:
    """The workspace's category named by SYNSET: a wnid (`n02084071`) or an nltk name (`dog.n.01`).

    The one way every command resolves a SYNSET argument. UnknownSynset otherwise, with
    the synsets a bare word (`guitar`) or a wrong sense number could mean."""
    spec = spec.strip()
    category = session.scalar(select(Category).where((Category.wnid == spec) | (Category.synset == spec)))
    if category is not None:
        return category
    try:
        synset = resolve_synset(spec)
    except UnknownSynset:
        if WNID.fullmatch(spec):
            raise UnknownSynset(f"{spec}: not in this workspace's tree (see imgnet tree show)") from None
        raise
    category = session.scalar(select(Category).where(Category.wnid == wnid(synset)))
    if category is None:
        raise UnknownSynset(f"{spec} ({wnid(synset)}): not in this workspace's tree (see imgnet tree show)")
    return category


def show_roots(session: Session, tree: dict[str, TreeNode], root: str | None) -> list[str]:
    """The wnids `imgnet tree show` starts from: the category named `root`, else the tree's tops."""
    if root:
        return [find_category(session, root).wnid]
    return tree_tops(tree)


def export_rows(tree: dict[str, TreeNode]) -> list[dict[str, object]]:
    """The documents of `imgnet tree export`: [{wnid, name, lemmas, gloss, parents, depth}]."""
    return [{"wnid": n.wnid, "name": n.name, "lemmas": list(n.lemmas), "gloss": n.gloss,
             "parents": list(n.parents), "depth": n.depth} for n in tree.values()]


def write_rows(rows: list[dict[str, object]], fmt: str, output: typing.TextIO) -> None:
    """`export_rows` as `fmt`: json (a list of documents), csv (the same columns, lists joined
    with "|") or txt (ILSVRC's LOC_synset_mapping.txt: wnid and lemmas)."""
    if fmt == "json":
        json.dump(rows, output, indent=1, ensure_ascii=False)
        output.write("\n")
    elif fmt == "csv":
        writer = csv.writer(output, lineterminator="\n")
        writer.writerow(["wnid", "name", "lemmas", "gloss", "parents", "depth"])
        for row in rows:
            writer.writerow([row["wnid"], row["name"], "|".join(typing.cast(list, row["lemmas"])), row["gloss"],
                             "|".join(typing.cast(list, row["parents"])), row["depth"]])
    elif fmt == "txt":
        for row in rows:
            output.write(f"{row['wnid']} {', '.join(typing.cast(list, row['lemmas']))}\n")
    else:
        raise BadInput(f"unknown tree format {fmt!r}; use json, csv or txt")


@dataclasses.dataclass(frozen=True)
class TreeView:
    """What `imgnet tree show` prints: `rows` as `tree_rows` makes them, in display order."""

    rows: list[dict[str, object]]

    def as_dict(self) -> list[dict[str, object]]:
        return self.rows

    def lines(self) -> Iterator[str]:
        """Indented lines `name (wnid): N below[, M images here, T in the subtree]`."""
        for row in self.rows:
            line = f"{'  ' * typing.cast(int, row['level'])}{row['name']} ({row['wnid']}): {row['below']} below"
            if "images" in row:
                line += f", {row['images']} images here, {row['subtree_images']} in the subtree"
            yield line

    def summary(self) -> str:
        return "\n".join(self.lines())


def show_tree(workspace: Workspace, root: str | None = None, depth: int | None = 2) -> TreeView:
    """The tree below `root` (a SYNSET; default: from the tops) to `depth` levels, with image
    counts once images are gathered. BadInput when the tree is empty."""
    with workspace.session() as session:
        nodes = load_tree(session)
        if not nodes:
            raise BadInput("the tree is empty; build it with: imgnet tree build")
        images = image_counts(session) or None
        roots = show_roots(session, nodes, root)
    return TreeView(tree_rows(nodes, roots, depth, images))


TREE_FORMATS = ("json", "csv", "txt")


@dataclasses.dataclass(frozen=True)
class TreeExport:
    """What `export_tree` wrote."""

    format: str
    categories: int

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return f"tree export: {self.categories} categories as {self.format}"


def export_tree(workspace: Workspace, fmt: str, output: typing.TextIO) -> TreeExport:
    """Write the category tree to `output` as `fmt` (see `write_rows`)."""
    with workspace.session() as session:
        rows = export_rows(load_tree(session))
    write_rows(rows, fmt, output)
    return TreeExport(fmt, len(rows))
