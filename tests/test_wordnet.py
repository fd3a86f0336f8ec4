"""WordNet access and provisioning: real WordNet 3.0 data, a real nltk reader."""

from __future__ import annotations

import nltk
import pytest
from nltk.corpus.reader.wordnet import WordNetCorpusReader

from imgnet_build import wordnet
from imgnet_build.errors import NotImageable, UnknownSynset, WordNetMissing


def test_resolve_by_wnid_and_by_name():
    assert wordnet.resolve_synset("n02084071").name() == "dog.n.01"
    assert wordnet.wnid(wordnet.resolve_synset("dog.n.01")) == "n02084071"
    assert wordnet.wnid(wordnet.resolve_synset("tench.n.01")) == "n01440764"


@pytest.mark.parametrize("spec, message", [
    ("xyz.n.01", "unknown synset 'xyz.n.01'"),
    ("n99999999", "unknown synset 'n99999999'"),
    ("dog", "'dog' is not a synset; did you mean dog.n.01, frump.n.01, dog.n.03, cad.n.01, frank.n.02?"),
    ("guitar", "'guitar' is not a synset; did you mean guitar.n.01?"),  # issue 14 item 17
    ("xyzzy", "'xyzzy' is not a synset; give a wnid like n02084071 or a name like dog.n.01"),
    ("dog.n.99", "unknown synset 'dog.n.99'; did you mean dog.n.01, frump.n.01, dog.n.03, cad.n.01, frank.n.02?"),
])
def test_unknown_synsets(spec, message):
    with pytest.raises(UnknownSynset) as error:
        wordnet.resolve_synset(spec)
    assert str(error.value) == message


def test_verbs_and_adjectives_are_refused():
    with pytest.raises(NotImageable, match=r"run.v.01 is a verb synset"):
        wordnet.resolve_synset("run.v.01")
    with pytest.raises(NotImageable, match="is an adjective synset"):
        wordnet.resolve_synset("red.s.01")


def test_lexnames_has_the_45_files_in_order():
    lines = wordnet.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3"
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[44] == "44\tadj.ppl\t3"


@pytest.fixture
def fresh_nltk_path(tmp_path, monkeypatch):
    """An nltk data path with no WordNet on it."""
    data = tmp_path / "nltk_data"
    monkeypatch.setattr(nltk.data, "path", [str(data)])
    return data


def test_builds_a_readable_corpus_from_debian_files(fresh_nltk_path):
    target = wordnet.build_from_debian()
    assert target == fresh_nltk_path / "corpora" / "wordnet"
    reader = WordNetCorpusReader(str(target), None)
    assert reader.get_version() == "3.0"
    assert reader.synset("whippet.n.01").lexname() == "noun.animal"
    assert sum(1 for _ in reader.all_synsets("n")) == 82115


def test_missing_everything_gives_one_clear_error(fresh_nltk_path, tmp_path, monkeypatch):
    monkeypatch.setattr(wordnet, "DEBIAN_WORDNET", tmp_path / "no-such-folder")
    # nltk.download is really tried: against port 9 (nothing listens) it fails like an offline machine
    monkeypatch.setenv("NLTK_DOWNLOAD_URL", "http://127.0.0.1:9/index.xml")
    with pytest.raises(WordNetMissing) as error:
        wordnet.ensure_wordnet()
    assert "nltk.download('wordnet')" in str(error.value)
    assert "apt-get install wordnet-base wordnet-sense-index" in str(error.value)
