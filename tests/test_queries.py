"""Query expansion on real WordNet 3.0, and other languages through a small OMW fixture."""

from __future__ import annotations

from collections import defaultdict

import nltk
import pytest
from sqlalchemy import func, select

import imgnet_build.queries
from imgnet_build import store
from imgnet_build.errors import BadInput, LanguageDataMissing
from imgnet_build.queries import expand_queries
from imgnet_build.wordnet import load_wordnet, resolve_synset, wnid


def add_categories(session, *names: str) -> list[store.Category]:
    rows = []
    for name in names:
        synset = resolve_synset(name)
        rows.append(store.Category(wnid=wnid(synset), synset=synset.name(), name=synset.lemma_names()[0].replace("_", " "),
                                   lemmas=synset.lemma_names(), gloss=synset.definition(), lexname=synset.lexname(), depth=0))
    session.add_all(rows)
    session.flush()
    return rows


def texts(queries: list[store.Query]) -> list[tuple[str, str, str]]:
    return [(q.text, q.language, q.method) for q in queries]


def test_whippet_gets_imagenet_parent_words(workspace):
    with workspace.session() as session:
        [whippet] = add_categories(session, "whippet.n.01")
        queries = expand_queries(session, [whippet])[whippet.id]
        # gloss: "small slender dog of greyhound type developed in England";
        # greyhound is its parent, dog four levels up; England is no ancestor.
        assert texts(queries) == [("whippet", "en", "lemma"),
                                  ("whippet greyhound", "en", "parent_word"),
                                  ("whippet dog", "en", "parent_word")]


def test_lemmas_and_parent_words_of_hand_checked_synsets(workspace):
    with workspace.session() as session:
        tabby, elephant, espresso, dog, shark = add_categories(
            session, "tabby.n.01", "african_elephant.n.01", "espresso.n.01", "dog.n.01", "great_white_shark.n.01")
        result = expand_queries(session, [tabby, elephant, espresso, dog, shark])
    # "a cat with a grey or tawny coat…": "tabby cat" is already a lemma, nothing is doubled.
    assert texts(result[tabby.id]) == [("tabby", "en", "lemma"), ("tabby cat", "en", "lemma")]
    # "an elephant native to Africa…": elephant is the parent; capitals are kept.
    assert texts(result[elephant.id]) == [("African elephant", "en", "lemma"), ("Loxodonta africana", "en", "lemma"),
                                          ("Loxodonta africana elephant", "en", "parent_word")]
    # "strong black coffee brewed…": coffee is the parent.
    assert texts(result[espresso.id]) == [("espresso", "en", "lemma"), ("espresso coffee", "en", "parent_word")]
    # dog's gloss names "man", "wolf", "breeds": no ancestor of dog.
    assert [q.text for q in result[dog.id]] == ["dog", "domestic dog", "Canis familiaris"]
    # "large aggressive shark…": appended only to lemmas without "shark".
    assert [q.text for q in result[shark.id] if q.method == "parent_word"] == ["man-eater shark",
                                                                               "Carcharodon carcharias shark"]


def test_plural_in_gloss_and_no_word_inside_a_lemma(workspace):
    with workspace.session() as session:
        goldfish, tench = add_categories(session, "goldfish.n.01", "tench.n.01")
        result = expand_queries(session, [goldfish, tench])
    # goldfish: "small golden or orange-red freshwater fishes…": "fishes" matches fish, "goldfish fish" is silly.
    assert [q.text for q in result[goldfish.id]] == ["goldfish", "Carassius auratus", "Carassius auratus fish"]
    assert [q.text for q in result[tench.id]] == ["tench", "Tinca tinca", "tench fish", "Tinca tinca fish"]


def test_general_ancestors_are_not_appended(workspace):
    with workspace.session() as session:
        [hammer] = add_categories(session, "hammer.n.02")
        assert [q.text for q in expand_queries(session, [hammer])[hammer.id]] == ["hammer", "hammer hand tool", "hammer tool"]
        # ancestors: … implement 6, instrumentality 5, artifact 4, whole 3, object 2, entity 0
        hammer.gloss = "an entity, an artifact, a whole object: an instrumentality"
        assert [q.text for q in expand_queries(session, [hammer])[hammer.id]] == ["hammer", "hammer instrumentality"]


def test_rerun_is_idempotent(any_workspace):
    with any_workspace.session() as session:
        categories = add_categories(session, "whippet.n.01", "tabby.n.01")
        first = expand_queries(session, categories)
    with any_workspace.session() as session:
        categories = list(session.scalars(select(store.Category).order_by(store.Category.id)))
        again = expand_queries(session, categories)
        assert session.scalar(select(func.count()).select_from(store.Query)) == 5
    assert {key: [q.id for q in rows] for key, rows in again.items()} == {key: [q.id for q in rows] for key, rows in first.items()}


# -- other languages -----------------------------------------------------------------------

OMW_FILES = {  # provenance folder -> (language, lines), in the layout of nltk's omw data
    "mcr": ("spa", ["02091134-n\tspa:lemma\twhippet", "02123045-n\tspa:lemma\tgato_atigrado"]),
    "iwn": ("ita", ["02091134-n\tita:lemma\twhippet", "02123045-n\tita:lemma\tgatto soriano",
                    "02123045-n\tita:def\tun gatto dal mantello grigio"]),
    "nld": ("nld", ["02091134-n\tnld:lemma\twhippet", "02123045-n\tnld:lemma\tcyperse_kat"]),
    "cmn": ("cmn", ["02091134-n\tcmn:lemma\t惠比特犬", "02091134-n\tcmn:lemma\t小灵狗", "02123045-n\tcmn:lemma\t虎斑猫"]),
}


def _forget_omw(wn) -> None:
    if hasattr(wn._omw_reader, "_unload"):  # a loaded reader: back to a lazy one that looks again
        wn._omw_reader._unload()


@pytest.fixture
def fresh_omw(monkeypatch):
    """nltk's WordNet with no OMW data loaded yet, and restored afterwards."""
    wn = load_wordnet()
    _forget_omw(wn)
    monkeypatch.setattr(wn, "provenances", defaultdict(str, eng=""))
    monkeypatch.setattr(wn, "omw_langs", set())
    monkeypatch.setattr(wn, "_lang_data", defaultdict(list))
    yield wn
    _forget_omw(wn)


@pytest.fixture
def omw_fixture(tmp_path, monkeypatch, fresh_omw):
    """A tiny omw folder (whippet and tabby in es/it/nl/zh) on nltk's data path."""
    package = fresh_omw._omw_reader.__name__  # omw-1.4 or omw-2.0, whichever this nltk reads
    root = tmp_path / "nltk_data"
    for provenance, (language, lines) in OMW_FILES.items():
        folder = root / "corpora" / package / provenance
        folder.mkdir(parents=True)
        (folder / f"wn-data-{language}.tab").write_text(f"# test\t{language}\thttp://example.test\tCC BY\n"
                                                       + "\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(nltk.data, "path", [str(root), *list(nltk.data.path)])
    return fresh_omw


def test_other_languages_through_omw(workspace, omw_fixture):
    with workspace.session() as session:
        whippet, tabby = add_categories(session, "whippet.n.01", "tabby.n.01")
        result = expand_queries(session, [whippet, tabby], languages=("en", "zh", "es", "nl", "it"))
    assert texts(result[whippet.id]) == [
        ("whippet", "en", "lemma"), ("whippet greyhound", "en", "parent_word"), ("whippet dog", "en", "parent_word"),
        ("惠比特犬", "zh", "omw"), ("小灵狗", "zh", "omw"),
        ("whippet", "es", "omw"), ("whippet", "nl", "omw"), ("whippet", "it", "omw")]
    assert texts(result[tabby.id])[2:] == [("虎斑猫", "zh", "omw"), ("gato atigrado", "es", "omw"),
                                           ("cyperse kat", "nl", "omw"), ("gatto soriano", "it", "omw")]
    assert omw_fixture.synset("tabby.n.01").lemma_names(lang="cmn") == ["虎斑猫"]  # nltk's own path agrees


def test_languages_without_english(workspace, omw_fixture):
    with workspace.session() as session:
        [tabby] = add_categories(session, "tabby.n.01")
        assert texts(expand_queries(session, [tabby], languages=["es"])[tabby.id]) == [("gato atigrado", "es", "omw")]


def test_language_omw_lacks(workspace, omw_fixture):
    with workspace.session() as session:
        [tabby] = add_categories(session, "tabby.n.01")
        with pytest.raises(LanguageDataMissing, match=r"has no 'fra' \(fr\); it has: cmn, ita, nld, spa"):
            expand_queries(session, [tabby], languages=["en", "fr"])
        with pytest.raises(BadInput, match="unknown language 'klingon'"):
            expand_queries(session, [tabby], languages=["klingon"])


def test_missing_omw_names_the_fix(workspace, tmp_path, monkeypatch, fresh_omw):
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])
    package = fresh_omw._omw_reader.__name__
    with workspace.session() as session:
        [whippet] = add_categories(session, "whippet.n.01")
        with pytest.raises(LanguageDataMissing) as caught:
            expand_queries(session, [whippet], languages=("en", "es"))
        assert expand_queries(session, [whippet])[whippet.id][0].text == "whippet"  # English still works
    message = str(caught.value)
    assert message.startswith(f"queries in 'es' need the Open Multilingual WordNet (nltk's {package} data)")
    assert f"python -c \"import nltk; nltk.download('{package}')\"" in message
    assert "leave es out of --languages" in message


def test_rows_another_writer_added_meanwhile_are_reused(any_workspace, monkeypatch):
    with any_workspace.session() as session:
        categories = add_categories(session, "whippet.n.01")
        first = [q.id for q in expand_queries(session, categories)[categories[0].id]]
    monkeypatch.setattr(imgnet_build.queries, "_existing", lambda session, ids: {})  # as if read before the other commit
    with any_workspace.session() as session:
        categories = list(session.scalars(select(store.Category)))
        again = [q.id for q in expand_queries(session, categories)[categories[0].id]]
        assert session.scalar(select(func.count()).select_from(store.Query)) == 3
    assert again == first
