"""Query expansion: the search strings for each category, as ImageNet made them.

For a category (a WordNet noun synset), best first:

- `lemma` — every lemma of the synset, underscores made spaces ("tabby", "tabby cat");
- `parent_word` — a lemma followed by the word of an ancestor (hypernym, at any distance)
  when that word appears in the category's gloss, nearest ancestor first. whippet's gloss
  is "small slender dog of greyhound type developed in England", so "whippet greyhound"
  (its parent) and "whippet dog" (four levels up). The most general synsets (`entity` …
  `artifact`, `person`, `food`: WordNet depth under `MIN_PARENT_DEPTH`) are never appended,
  nor a word the lemma already holds (no "tabby cat cat", no "goldfish fish");
- `omw` — the synset's lemmas in other languages from the Open Multilingual WordNet
  (nltk's `omw` data), for each language asked for besides English.

    expand_queries(session, categories, languages=("en", "zh", "es", "nl", "it"))
    -> {category.id: [Query(text="whippet", language="en", method="lemma"), ...]}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imgnet_build import store
from imgnet_build.dbutil import batched
from imgnet_build.errors import BadInput, LanguageDataMissing
from imgnet_build.wordnet import load_wordnet, resolve_synset

__all__ = ["expand_queries", "category_queries", "OMW_CODES", "MIN_PARENT_DEPTH"]

# --languages codes -> the Open Multilingual WordNet's ISO 639-3 codes (ImageNet's four first).
OMW_CODES = {"zh": "cmn", "es": "spa", "nl": "nld", "it": "ita", "fr": "fra", "ja": "jpn", "pt": "por",
             "pl": "pol", "fi": "fin", "sv": "swe", "da": "dan", "ca": "cat", "id": "ind", "he": "heb"}
MIN_PARENT_DEPTH = 5  # entity 0, object 2, whole 3, artifact/food/living thing 4: too general to append
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_Plan = list[tuple[str, str, str]]  # (text, language, method), best first


def expand_queries(session: Session, categories: Sequence[store.Category],
                   languages: Iterable[str] = ("en",)) -> dict[int, list[store.Query]]:
    """Make (or find) the Query rows of each category; {category id: [Query, ...] best first}.

    English queries (lemma, parent_word) are made when "en" is among `languages`; every
    other code (zh, es, nl, it, … or an OMW code like fra) adds that language's OMW lemmas.
    Idempotent: rows that exist are reused (unique per category, text and language); new
    rows are flushed, not committed. Raises `LanguageDataMissing` when a language other
    than English is asked for and the Open Multilingual WordNet data is not installed.
    """
    languages = list(dict.fromkeys(code.strip().lower() for code in languages if code.strip()))
    omw = {code: _omw_code(code) for code in languages if code != "en"}
    plans = {category.id: category_queries(category, "en" in languages, omw) for category in categories}
    existing = _existing(session, list(plans))
    result: dict[int, list[store.Query]] = {}
    for category_id, plan in plans.items():
        new = [store.Query(category_id=category_id, text=text, language=language, method=method)
               for text, language, method in plan if (category_id, text, language) not in existing]
        for row in _insert(session, new):
            existing[(row.category_id, row.text, row.language)] = row
        result[category_id] = [existing[(category_id, text, language)] for text, language, _ in plan]
    return result


def category_queries(category: store.Category, english: bool = True, omw: dict[str, str] | None = None) -> _Plan:
    """(text, language, method) for one category, best first, without touching the database."""
    synset = resolve_synset(category.wnid)
    lemmas = [name.replace("_", " ") for name in (category.lemmas or synset.lemma_names())]
    plan: _Plan = []
    if english:
        plan += [(lemma, "en", "lemma") for lemma in lemmas]
        for word in parent_words(synset, category.gloss or synset.definition()):
            plan += [(f"{lemma} {word}", "en", "parent_word") for lemma in lemmas if word not in lemma.lower()]
    for language, code in (omw or {}).items():
        plan += [(name.replace("_", " "), language, "omw") for name in synset.lemma_names(lang=code)]
    seen: set[tuple[str, str]] = set()
    unique = []
    for text, language, method in plan:
        if (text.casefold(), language) not in seen:
            seen.add((text.casefold(), language))
            unique.append((text, language, method))
    return unique


def parent_words(synset, gloss: str) -> list[str]:
    """Words of the synset's ancestors that its gloss uses (plurals too), nearest ancestor first."""
    wn = load_wordnet()
    tokens = _WORD.findall(gloss.lower())
    words = set(tokens) | {wn.morphy(token, "n") or token for token in tokens}
    text = f" {' '.join(tokens)} "
    found: list[str] = []
    for ancestor in _ancestors(synset):
        if ancestor.min_depth() < MIN_PARENT_DEPTH:
            continue
        for name in ancestor.lemma_names():
            word = name.replace("_", " ").lower()
            if word not in found and (f" {word} " in text if " " in word else word in words):
                found.append(word)
    return found


def _ancestors(synset) -> list:
    """Hypernyms and instance hypernyms at every distance, breadth first (nearest first)."""
    order, frontier, seen = [], [synset], {synset}
    while frontier:
        level = []
        for node in frontier:
            for parent in sorted(node.hypernyms() + node.instance_hypernyms(), key=lambda s: s.name()):
                if parent not in seen:
                    seen.add(parent)
                    level.append(parent)
        order += level
        frontier = level
    return order


def _omw_code(language: str) -> str:
    """The OMW code nltk knows for a --languages code; raises when the data or language is missing."""
    code = OMW_CODES.get(language, language)
    if not re.fullmatch(r"[a-z]{3}(_[a-z]+)?", code):
        raise BadInput(f"unknown language {language!r}; use en, {', '.join(OMW_CODES)} or an OMW code such as fra")
    wn = load_wordnet()
    package = getattr(wn._omw_reader, "__name__", "omw-1.4")  # the folder this nltk reads (omw-1.4, omw-2.0)
    if not wn.omw_langs:
        try:
            if wn._omw_reader is None:  # a reader built without multilingual support
                raise LookupError(package)
            wn.add_omw()
        except (LookupError, OSError):
            raise LanguageDataMissing(
                f"queries in {language!r} need the Open Multilingual WordNet (nltk's {package} data), which is not "
                f"installed. On a machine with internet run:  python -c \"import nltk; nltk.download('{package}')\"  "
                f"(or copy nltk_data/corpora/{package} onto nltk's data path), or leave {language} out of --languages"
            ) from None
    if code not in wn.langs():
        known = ", ".join(sorted(lang for lang in wn.langs() if lang != "eng"))
        raise LanguageDataMissing(f"the installed {package} data has no {code!r} ({language}); it has: {known}")
    return code


def _existing(session: Session, category_ids: list[int]) -> dict[tuple[int, str, str], store.Query]:
    rows: dict[tuple[int, str, str], store.Query] = {}
    for chunk in batched(category_ids, 500):
        for row in session.scalars(select(store.Query).where(store.Query.category_id.in_(chunk))):
            rows[(row.category_id, row.text, row.language)] = row
    return rows


def _insert(session: Session, rows: list[store.Query]) -> list[store.Query]:
    """Add rows in one savepoint; where another writer added the same meanwhile, use theirs."""
    if not rows:
        return []
    try:
        with session.begin_nested():
            session.add_all(rows)
        return rows
    except IntegrityError:
        if len(rows) > 1:
            return [row for one in rows for row in _insert(session, [one])]
        row = rows[0]
        return [session.scalars(select(store.Query).where(
            store.Query.category_id == row.category_id, store.Query.text == row.text,
            store.Query.language == row.language)).one()]
