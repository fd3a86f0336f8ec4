"""A small labeled world for labeling tests: categories under one parent, generated
images, ok candidates with a known truth, clustered by the real dedup."""

from __future__ import annotations

import hashlib
import io
import random

import imagegen as gen

from imgnet_build import dedup
from imgnet_build.blobs import blob_key
from imgnet_build.store import Candidate, Category, CategoryEdge, Image

__all__ = ["build_world", "store_picture"]


def store_picture(workspace, picture) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=85)
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    key = blob_key(sha, "jpeg")
    workspace.blob_store.put(key, data)
    with workspace.session() as session:
        if session.get(Image, sha) is None:
            session.add(Image(sha256=sha, width=picture.width, height=picture.height, format="JPEG",
                              bytes=len(data), blob_key=key))
    return sha


def build_world(workspace, categories: int = 3, images: int = 30, positives: float = 0.4, seed: int = 0,
                gloss: str = "a thing you can see") -> dict[str, dict[str, bool]]:
    """{wnid: {sha256: truth}}; categories n1, n2, … are siblings under n0."""
    rng = random.Random(seed)
    world = {}
    with workspace.session() as session:
        root = Category(wnid="n00000000", synset="root.n.01", name="root", lemmas=["root"], gloss="root",
                        lexname="noun.artifact", depth=0)
        session.add(root)
        session.flush()
        ids = []
        for number in range(1, categories + 1):
            category = Category(wnid=f"n{number:08d}", synset=f"thing{number}.n.01", name=f"thing {number}",
                                lemmas=[f"thing {number}", f"object {number}"], gloss=gloss,
                                lexname="noun.artifact", depth=1)
            session.add(category)
            session.flush()
            session.add(CategoryEdge(parent_id=root.id, child_id=category.id))
            ids.append((category.wnid, category.id))
    picture = seed * 100_000
    for wnid, category_id in ids:
        world[wnid] = {}
        for rank in range(images):
            picture += 1
            sha = store_picture(workspace, gen.photo(picture, size=(64, 48)))
            truth = rng.random() < positives
            world[wnid][sha] = truth
            with workspace.session() as session:
                session.add(Candidate(category_id=category_id, source="test", url=f"https://example.org/{sha}.jpg",
                                      rank=rank, status="ok", image_sha256=sha, truth=truth))
    dedup.run(workspace)
    return world
