"""Which sense of a word a task asks about, said so that a worker cannot take the wrong one.

    sense = category_sense(session, category)   # Sense(name="Cardigan", kinds=("corgi", "dog"), ...)
    sense.heading        # "Cardigan — a corgi, a kind of dog"
    sense.search         # "Cardigan corgi": what the Wikipedia link searches for

"Cardigan" alone is a sweater; "Cardigan, a corgi" is the dog. The parent comes from the
workspace's category tree (the nearest selected ancestor); a category at the top of the
tree takes its WordNet hypernym, read straight from WordNet's data file by the wnid's
offset (no WordNet load), so the page costs two small queries.
"""

from __future__ import annotations

import dataclasses
import re
from functools import lru_cache
from urllib.parse import quote, urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from imgnet_build.store import Category, CategoryEdge

__all__ = ["Sense", "category_sense", "wordnet_hypernyms", "WIKIPEDIA_SEARCH"]

WIKIPEDIA_SEARCH = "https://en.wikipedia.org/w/index.php"
_WNID = re.compile(r"^n(\d{8})$")


@dataclasses.dataclass(frozen=True)
class Sense:
    """A category's name, the names of what it is a kind of (nearest first, at most two),
    its other names and its gloss."""

    name: str
    kinds: tuple[str, ...]
    other_names: tuple[str, ...]
    gloss: str

    @property
    def heading(self) -> str:
        """"Cardigan — a corgi, a kind of dog"; "Dog — a kind of canine"; the bare name without parents."""
        if not self.kinds:
            return _capitalized(self.name)
        if len(self.kinds) == 1:
            return f"{_capitalized(self.name)} — a kind of {self.kinds[0]}"
        return f"{_capitalized(self.name)} — {_article(self.kinds[0])} {self.kinds[0]}, a kind of {self.kinds[1]}"

    @property
    def search(self) -> str:
        """The name with its parent's head word, unless the name already has it ("Ibizan hound")."""
        if not self.kinds:
            return self.name
        word = self.kinds[0].split()[-1]
        return self.name if word.lower() in self.name.lower().split() else f"{self.name} {word}"

    @property
    def wikipedia_url(self) -> str:
        return f"{WIKIPEDIA_SEARCH}?{urlencode({'search': self.search}, quote_via=quote)}"


def _capitalized(name: str) -> str:
    return name[:1].upper() + name[1:]


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


def category_sense(session: Session, category: Category) -> Sense:
    """The sense of `category`: parents from the tree (else WordNet), other names without the name itself."""
    kinds = _tree_parents(session, category.id)
    if not kinds:
        kinds = wordnet_hypernyms(category.wnid)
    name = category.name
    others = tuple(dict.fromkeys(lemma for lemma in (category.lemmas or ()) if lemma.lower() != name.lower()))
    return Sense(name=name, kinds=kinds, other_names=others, gloss=category.gloss or "")


def _tree_parents(session: Session, category_id: int) -> tuple[str, ...]:
    """The nearest selected parent's name and its own parent's name (the deepest, where there are several)."""
    names: list[str] = []
    current = category_id
    for _ in range(2):
        parent = aliased(Category)
        row = session.execute(select(parent.id, parent.name).join(CategoryEdge, CategoryEdge.parent_id == parent.id)
                              .where(CategoryEdge.child_id == current)
                              .order_by(parent.depth.desc(), parent.wnid).limit(1)).first()
        if row is None:
            break
        names.append(row.name)
        current = row.id
    return tuple(names)


@lru_cache(maxsize=4096)
def wordnet_hypernyms(wnid: str) -> tuple[str, ...]:
    """The first names of a noun synset's hypernym and that one's hypernym, read from WordNet's
    data.noun at the wnid's offset; () when the wnid is not WordNet's or the data is not there."""
    chain: list[str] = []
    match = _WNID.match(wnid)
    offset = int(match.group(1)) if match else None
    for _ in range(2):
        if offset is None:
            break
        line = _data_line(offset)
        fields = line.split() if line else []
        if len(fields) < 5 or fields[0] != f"{offset:08d}":
            break
        words = int(fields[3], 16)
        pointers_at = 4 + 2 * words
        pointers = int(fields[pointers_at])
        parents = [int(fields[at + 1]) for at in range(pointers_at + 1, pointers_at + 1 + 4 * pointers, 4)
                   if fields[at] in ("@", "@i") and fields[at + 2] == "n"]
        if not parents:
            break
        offset = parents[0]
        parent_line = _data_line(offset)
        if not parent_line:
            break
        parent_fields = parent_line.split()
        chain.append(parent_fields[4].replace("_", " ") if len(parent_fields) > 4 else "")
        if chain[-1] in ("", "entity"):
            chain.pop()
            break
    return tuple(chain)


def _data_line(offset: int) -> str | None:
    try:
        import nltk

        with nltk.data.find("corpora/wordnet/data.noun").open() as data:
            data.seek(offset)
            return data.readline().decode("utf-8", "replace")
    except (ImportError, LookupError, OSError, ValueError):
        return None
