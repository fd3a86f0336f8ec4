"""Labeled workspaces for export tests, built through the ORM with real generated images.

    data = LabeledData(workspace)
    sha = data.accepted("n02084071", seed=1)          # image + cluster + ok candidate + accepted label
    data.duplicate(of=sha, seed=1)                     # another image in the same cluster
"""

from __future__ import annotations

import hashlib

import imagegen as gen
from sqlalchemy import select

from imgnet_build.blobs import blob_key
from imgnet_build.store import Candidate, Category, Cluster, Image, Label

NAMES = {"n02084071": ("dog", ["dog", "domestic_dog"]), "n02121808": ("domestic cat", ["domestic_cat", "house_cat"]),
         "n02374451": ("horse", ["horse", "Equus_caballus"]), "n01503061": ("bird", ["bird"])}


class LabeledData:
    def __init__(self, workspace, size: tuple[int, int] = (96, 72)):
        self.workspace, self.size = workspace, size
        self.category_ids: dict[str, int] = {}

    def category(self, wnid: str) -> int:
        if wnid not in self.category_ids:
            name, lemmas = NAMES.get(wnid, (wnid, [wnid]))
            with self.workspace.session() as session:
                category = Category(wnid=wnid, synset=f"{lemmas[0].lower()}.n.01", name=name, lemmas=lemmas,
                                    gloss="test", lexname="noun.animal", depth=1)
                session.add(category)
                session.flush()
                self.category_ids[wnid] = category.id
        return self.category_ids[wnid]

    def image(self, seed: int, fmt: str = "JPEG", size: tuple[int, int] | None = None, variant: str = "") -> str:
        """Store a generated photo; `variant` makes other bytes of the same picture (a JPEG comment)."""
        size = size or self.size
        picture = gen.photo(seed, size=size)
        data = gen.png(picture) if fmt == "PNG" else gen.jpeg(picture)
        if variant:
            data = gen.with_comment(data, variant)
        sha = hashlib.sha256(data).hexdigest()
        key = blob_key(sha, "png" if fmt == "PNG" else "jpg")
        self.workspace.blob_store.put(key, data)
        with self.workspace.session() as session:
            if session.get(Image, sha) is None:
                session.add(Image(sha256=sha, width=size[0], height=size[1], format=fmt, bytes=len(data), blob_key=key))
        return sha

    def cluster(self, *shas: str) -> int:
        """A cluster of these images, founded (and represented) by the first."""
        with self.workspace.session() as session:
            cluster = Cluster(key=shas[0], representative=shas[0])
            session.add(cluster)
            session.flush()
            for sha in shas:
                session.get(Image, sha).cluster_id = cluster.id
            return cluster.id

    def candidate(self, sha: str, wnid: str, license: str | None = "CC BY 4.0", rank: int | None = 1,
                  url: str | None = None, status: str = "ok") -> None:
        with self.workspace.session() as session:
            session.add(Candidate(category_id=self.category(wnid), source="urls", url=url or f"https://example.org/{wnid}/{sha[:12]}.jpg",
                                  rank=rank, license=license, attribution=f"photographer {sha[:6]}", status=status,
                                  image_sha256=sha))

    def label(self, cluster_id: int, wnid: str, status: str = "accepted", simulated: bool = False) -> None:
        with self.workspace.session() as session:
            session.add(Label(cluster_id=cluster_id, category_id=self.category(wnid), status=status, confidence=0.99,
                              yes_votes=3, no_votes=0, method="dynamic", round=1, simulated=simulated))

    def accepted(self, wnid: str, seed: int, *, fmt: str = "JPEG", license: str | None = "CC BY 4.0",
                 simulated: bool = False, status: str = "accepted", size: tuple[int, int] | None = None) -> str:
        """One new picture with an ok candidate for `wnid`, its own cluster and a label on it."""
        sha = self.image(seed, fmt, size)
        self.candidate(sha, wnid, license=license)
        self.label(self.cluster(sha), wnid, status=status, simulated=simulated)
        return sha

    def cluster_of(self, sha: str) -> int:
        with self.workspace.session() as session:
            return session.scalar(select(Image.cluster_id).where(Image.sha256 == sha))
