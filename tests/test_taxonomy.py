"""The imageability rule and the category tree, on the real WordNet 3.0."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import func, select

from imgnet_build import taxonomy
from imgnet_build.errors import NotImageable
from imgnet_build.store import Candidate, Category, CategoryEdge
from imgnet_build.taxonomy import TreeOptions, select_categories
from imgnet_build.wordnet import resolve_synset

ILSVRC_SAMPLE = {
    "n01440764": "tench", "n01443537": "goldfish", "n06794110": "street sign", "n06874185": "traffic light",
    "n09229709": "bubble", "n03590841": "jack-o'-lantern", "n09472597": "volcano", "n10565667": "scuba diver",
    "n02776631": "bakery",  # an artifact WordNet files below location.n.01
}
NEVER = ["truth.n.01", "happiness.n.01", "monday.n.01", "canis.n.01"]


@pytest.fixture(scope="module")
def whole_tree():
    return select_categories(TreeOptions())


@pytest.fixture(scope="module")
def whole_tree_with_people():
    return select_categories(TreeOptions(include_people=True))


@pytest.mark.parametrize("name, reason", [
    ("whippet.n.01", None),
    ("guacamole.n.01", None),
    ("street_sign.n.01", None),
    ("truth.n.01", "WordNet files it as an abstraction (noun.cognition)"),
    ("monday.n.01", "WordNet files it as an abstraction (noun.time)"),
    ("canis.n.01", "it is not below any visible root (object.n.01, food.n.01, food.n.02, sign.n.02, "
                   "visual_signal.n.01, globule.n.01, paper.n.01)"),
    ("wight.n.02", "it is an instance (a named individual), not a category"),
    ("scuba_diver.n.01", "people are left out by default; add --include-people"),
    ("region.n.03", "WordNet files it as an abstraction (noun.location)"),
])
def test_why_not_imageable(name, reason):
    assert taxonomy.why_not_imageable(resolve_synset(name)) == reason


def test_dog_subtree():
    selection = select_categories(TreeOptions(roots=("dog.n.01",)))
    assert len(selection.synsets) == 190
    assert selection.depth["n02084071"] == 0
    assert selection.depth["n02091244"] == 3  # Ibizan hound < hound < hunting dog < dog
    assert ("n02084071", "n02087122") in selection.edges  # dog -> hunting dog
    assert all(s.lexname() == "noun.animal" for s in selection.synsets.values())


def test_musical_instruments_and_max_depth():
    selection = select_categories(TreeOptions(roots=("musical_instrument.n.01",)))
    names = {s.name() for s in selection.synsets.values()}
    assert {"piano.n.01", "violin.n.01", "drum.n.01", "harmonica.n.01"} <= names
    shallow = select_categories(TreeOptions(roots=("musical_instrument.n.01",), max_depth=1))
    assert set(shallow.depth.values()) == {0, 1}
    assert set(shallow.synsets) < set(selection.synsets)


def test_exclude_removes_a_subtree():
    selection = select_categories(TreeOptions(roots=("dog.n.01",), excludes=("hunting_dog.n.01",)))
    assert "n02087122" not in selection.synsets  # hunting dog
    assert "n02091244" not in selection.synsets  # Ibizan hound, below it
    assert len(selection.synsets) == 190 - 102


def test_a_dag_keeps_every_edge():
    selection = select_categories(TreeOptions(roots=("food.n.02", "food.n.01")))
    parents = Counter(child for _, child in selection.edges)
    assert max(parents.values()) >= 2


@pytest.mark.slow
def test_whole_wordnet_is_imageable_only(whole_tree):
    assert 20_000 < len(whole_tree.synsets) < 30_000
    names = {s.name() for s in whole_tree.synsets.values()}
    assert not names & set(NEVER)
    lexfiles = Counter(s.lexname() for s in whole_tree.synsets.values())
    abstract = {"noun.act", "noun.attribute", "noun.cognition", "noun.feeling", "noun.state", "noun.time",
                "noun.event", "noun.quantity", "noun.relation", "noun.group", "noun.person"}
    assert not abstract & set(lexfiles)
    assert all(not s.instance_hypernyms() for s in whole_tree.synsets.values())
    assert "n10565667" not in whole_tree.synsets  # scuba diver: no people by default


@pytest.mark.slow
def test_with_people_every_sampled_ilsvrc_class_is_in(whole_tree_with_people):
    assert set(ILSVRC_SAMPLE) <= set(whole_tree_with_people.synsets)
    names = {s.name() for s in whole_tree_with_people.synsets.values()}
    assert not names & set(NEVER)


@pytest.mark.parametrize("root, message", [
    ("truth.n.01", "truth.n.01 (n05819453) is not imageable: WordNet files it as an abstraction (noun.cognition)"),
    ("person.n.01", "person.n.01 (n00007846) is not imageable: people are left out by default; "
                    "add --include-people"),
])
def test_roots_the_filter_excludes(root, message):
    with pytest.raises(NotImageable) as error:
        select_categories(TreeOptions(roots=(root,)))
    assert str(error.value) == message


def test_build_and_rebuild_keeps_categories_with_candidates(any_workspace):
    with any_workspace.session() as session:
        result = taxonomy.build_tree(any_workspace, TreeOptions(roots=("dog.n.01",)))
        assert (result.categories, result.edges, result.added) == (190, 189, 190)
        whippet = session.scalar(select(Category).where(Category.synset == "whippet.n.01"))
        session.add(Candidate(category_id=whippet.id, source="urls", url="http://example.test/w.jpg"))
    with any_workspace.session() as session:
        result = taxonomy.build_tree(any_workspace, TreeOptions(roots=("domestic_cat.n.01",)))
        assert result.kept == ("n02091134",)
        assert result.removed == 189
        wnids = set(session.scalars(select(Category.wnid)))
        assert "n02091134" in wnids and "n02123045" in wnids  # whippet kept, tabby added
        assert session.scalar(select(func.count()).select_from(Candidate)) == 1
    with any_workspace.session() as session:  # the same build again changes nothing
        again = taxonomy.build_tree(any_workspace, TreeOptions(roots=("domestic_cat.n.01",)))
        assert (again.added, again.removed, again.categories) == (0, 0, result.categories)
        assert session.scalar(select(func.count()).select_from(CategoryEdge)) == again.edges


def test_tree_rendering_counts_descendants(workspace):
    taxonomy.build_tree(workspace, TreeOptions(roots=("corgi.n.01",)))
    with workspace.session() as session:
        nodes = taxonomy.load_tree(session)
    assert list(taxonomy.render_tree(nodes, taxonomy.tree_tops(nodes), None)) == [
        "corgi (n02112826): 2 below",
        "  Pembroke (n02113023): 0 below",
        "  Cardigan (n02113186): 0 below",
    ]


def test_image_counts_count_a_duplicate_cluster_once_per_category(any_workspace):
    """`tree show`'s counts from two aggregates (before: each ok candidate looked its image and
    cluster up, 46 s at a million images): a cluster's members count once in each category they
    were gathered for, an image fetched twice once, an image not clustered yet alone."""
    from imgnet_build.store import Cluster, Image

    taxonomy.build_tree(any_workspace, TreeOptions(roots=("corgi.n.01",)))
    with any_workspace.session() as session:
        ids = {category.wnid: category.id for category in session.scalars(select(Category))}
        clusters = [Cluster(key=sha * 64, representative=sha * 64) for sha in "abd"]
        session.add_all(clusters)
        session.flush()
        member = {"a": clusters[0].id, "b": clusters[0].id, "c": None, "d": clusters[2].id, "e": clusters[2].id,
                  "f": clusters[1].id}
        for sha, cluster_id in member.items():
            session.add(Image(sha256=sha * 64, width=64, height=64, format="JPEG", bytes=10, blob_key=f"{sha}.jpg",
                              cluster_id=cluster_id))
        session.flush()
        gathered = [("n02113186", "a"), ("n02113186", "b"), ("n02113186", "c"), ("n02113186", "c"),
                    ("n02113023", "a"), ("n02113023", "d"), ("n02113023", "e"), ("n02113023", "f"),
                    ("n02112826", "e")]
        for n, (wnid, sha) in enumerate(gathered):
            session.add(Candidate(category_id=ids[wnid], source="test", url=f"https://example.org/{n}.jpg",
                                  status="ok", image_sha256=sha * 64, rank=1))
        session.add(Candidate(category_id=ids["n02112826"], source="test", url="https://example.org/x.jpg",
                              status="failed", rank=1))
    with any_workspace.session() as session:
        assert taxonomy.image_counts(session) == {"n02113186": 2, "n02113023": 3, "n02112826": 1}
