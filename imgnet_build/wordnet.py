"""WordNet 3.0 through nltk, and getting its data onto the machine.

Where the data comes from, in order:
1. nltk's usual places (`nltk.data.path`, e.g. after `nltk.download('wordnet')`);
2. `nltk.download('wordnet')` when the machine is online;
3. Debian's `wordnet-base` + `wordnet-sense-index` (`/usr/share/wordnet`), copied into
   an nltk-readable folder under the first writable directory on `nltk.data.path`, with
   the `lexnames` file that Debian lacks.
"""

from __future__ import annotations

import os
import re
import shutil
from functools import lru_cache
from pathlib import Path

from imgnet_build.errors import NotImageable, UnknownSynset, WordNetMissing

__all__ = ["load_wordnet", "ensure_wordnet", "resolve_synset", "wnid", "DEBIAN_WORDNET"]

DEBIAN_WORDNET = Path(os.environ.get("IMGNET_DEBIAN_WORDNET", "/usr/share/wordnet"))

# WordNet 3.0's lexicographer files, numbered as in its lexnames file.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant "
    "noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_LEX_POS = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
_DEBIAN_FILES = [f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")] + [
    f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")
] + ["index.sense"]

SETUP_HINT = (
    "WordNet 3.0 data not found. Run one of:\n"
    "  python -c \"import nltk; nltk.download('wordnet')\"      (a machine with internet)\n"
    "  sudo apt-get install wordnet-base wordnet-sense-index   (Debian/Ubuntu, offline mirrors)\n"
    "then: imgnet wordnet"
)


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{_LEX_POS[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def _nltk_has_wordnet() -> bool:
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
        return True
    except LookupError:
        try:
            nltk.data.find("corpora/wordnet.zip")
            return True
        except LookupError:
            return False


def _try_download() -> bool:
    """nltk.download('wordnet') from nltk's server, or from NLTK_DOWNLOAD_URL (an index.xml) when set."""
    if os.environ.get("IMGNET_NO_DOWNLOAD"):
        return False
    import contextlib
    import io

    from nltk.downloader import Downloader

    try:
        downloader = Downloader(server_index_url=os.environ.get("NLTK_DOWNLOAD_URL") or None)
        with contextlib.redirect_stdout(io.StringIO()):
            downloaded = downloader.download("wordnet", quiet=True, raise_on_error=True, print_error_to=io.StringIO())
        return bool(downloaded) and _nltk_has_wordnet()
    except Exception:  # offline, proxy, HTTP error: fall back to Debian's files
        return False


def _writable_data_dir() -> Path | None:
    import nltk

    for entry in nltk.data.path:
        path = Path(entry)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".imgnet-write-test"
            probe.touch()
            probe.unlink()
            return path
        except OSError:
            continue
    return None


def build_from_debian(source: Path = DEBIAN_WORDNET) -> Path:
    """Copy Debian's WordNet files into an nltk corpus folder and add `lexnames`."""
    missing = [name for name in _DEBIAN_FILES if not (source / name).is_file()]
    if missing:
        raise WordNetMissing(f"{source} lacks {', '.join(missing)}.\n{SETUP_HINT}")
    data_dir = _writable_data_dir()
    if data_dir is None:
        raise WordNetMissing("no writable folder on nltk's data path (set NLTK_DATA to one).\n" + SETUP_HINT)
    target = data_dir / "corpora" / "wordnet"
    staging = target.with_name("wordnet.imgnet-tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in _DEBIAN_FILES:
        shutil.copyfile(source / name, staging / name)
    (staging / "lexnames").write_text(lexnames_text())
    (staging / "LICENSE").write_text("WordNet 3.0 license: https://wordnet.princeton.edu/license-and-commercial-use\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def ensure_wordnet() -> str:
    """Make sure nltk can read WordNet; return where it came from."""
    if _nltk_has_wordnet():
        return "nltk data"
    if _try_download():
        return "downloaded with nltk.download('wordnet')"
    if DEBIAN_WORDNET.is_dir() and (DEBIAN_WORDNET / "data.noun").is_file():
        return f"built from {DEBIAN_WORDNET} at {build_from_debian()}"
    raise WordNetMissing(SETUP_HINT)


@lru_cache(maxsize=1)
def load_wordnet():
    """The nltk WordNet corpus reader, loaded once per process."""
    ensure_wordnet()
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
    except (LookupError, OSError) as exc:
        raise WordNetMissing(f"nltk could not read WordNet: {exc}\n{SETUP_HINT}") from exc
    if wordnet.get_version() != "3.0":
        raise WordNetMissing(f"found WordNet {wordnet.get_version()}, need 3.0 (wnids are WordNet 3.0 offsets)")
    return wordnet


def wnid(synset) -> str:
    """ImageNet's id for a synset: part of speech letter and the 8-digit offset, e.g. n02084071."""
    return f"{synset.pos()}{synset.offset():08d}"


_WNID = re.compile(r"^([nvasr])(\d{8})$")
WNID = re.compile(r"n\d{8}")  # a noun's wnid, as categories have
_NAME = re.compile(r"^.+\.([nvasr])\.\d{2}$")


def resolve_synset(spec: str):
    """A noun synset from a wnid (`n02084071`) or an nltk name (`dog.n.01`)."""
    import warnings

    from nltk.corpus.reader.wordnet import WordNetError

    wn = load_wordnet()
    spec = spec.strip()
    match = _WNID.match(spec)
    if not match and not _NAME.match(spec):
        nouns = wn.synsets(spec.replace(" ", "_"), pos="n") if spec else []
        hint = f"did you mean {', '.join(s.name() for s in nouns[:5])}?" if nouns else \
            "give a wnid like n02084071 or a name like dog.n.01"
        raise UnknownSynset(f"{spec!r} is not a synset; {hint}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nltk warns, then returns None, for an unknown offset
            synset = (wn.synset_from_pos_and_offset(match.group(1), int(match.group(2))) if match
                      else wn.synset(spec))
        if synset is None:
            raise LookupError(spec)
    except (LookupError, ValueError, WordNetError):
        hint = ""
        if not match:
            lemma = spec.split(".")[0]
            nouns = wn.synsets(lemma, pos="n")
            if nouns:
                hint = "; did you mean " + ", ".join(s.name() for s in nouns[:5]) + "?"
        raise UnknownSynset(f"unknown synset {spec!r}{hint}") from None
    if synset.pos() != "n":
        kind = {"v": "a verb", "a": "an adjective", "s": "an adjective", "r": "an adverb"}[synset.pos()]
        raise NotImageable(f"{spec} is {kind} synset; categories are noun synsets (e.g. dog.n.01)")
    return synset
