"""Deduplication: hashes, known duplicate relations, clusters, policy, incremental runs, crashes, CLI."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import imagegen as gen
import imagehash
import jsonschema
import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import PngImagePlugin
from sqlalchemy import event, select, update

from imgnet_build import dedup, hamming
from imgnet_build.blobs import blob_key
from imgnet_build.cli.main import cli
from imgnet_build.hamming import HammingIndex, to_signed, to_unsigned
from imgnet_build.store import Candidate, Category, Cluster, Image, Label, stage_counts
from imgnet_build.workspace import Workspace

SCHEMA = json.loads((Path(__file__).parents[1] / "schemas" / "clusters.schema.json").read_text())
DOG, CAT = "n02084071", "n02121808"


def add_category(workspace, wnid: str) -> int:
    with workspace.session() as session:
        existing = session.scalar(select(Category.id).where(Category.wnid == wnid))
        if existing:
            return existing
        category = Category(wnid=wnid, synset=f"{wnid}.n.01", name=wnid, lemmas=[wnid], gloss="test",
                            lexname="noun.animal", depth=0)
        session.add(category)
        session.flush()
        return category.id


def add_image(workspace, data: bytes, wnid: str = DOG, rank: int | None = 1, url: str | None = None) -> str:
    """Store the bytes as an image fetched by one candidate of `wnid`; returns its sha256."""
    sha = hashlib.sha256(data).hexdigest()
    with PILImage.open(io.BytesIO(data)) as image:
        width, height, kind = image.width, image.height, image.format
    key = blob_key(sha, kind.lower())
    workspace.blob_store.put(key, data)
    category_id = add_category(workspace, wnid)
    with workspace.session() as session:
        if session.get(Image, sha) is None:
            session.add(Image(sha256=sha, width=width, height=height, format=kind, bytes=len(data), blob_key=key))
            session.flush()
        url = url or f"https://example.org/{wnid}/{sha[:12]}.jpg"
        session.add(Candidate(category_id=category_id, source="test", url=url,
                              rank=rank, status="ok", image_sha256=sha))
    return sha


def duplicate_of(workspace) -> dict[str, str | None]:
    """{sha256: its cluster's representative, None for a representative or an image not clustered}."""
    with workspace.session() as session:
        rows = session.execute(select(Image.sha256, Cluster.representative)
                               .outerjoin(Cluster, Cluster.id == Image.cluster_id)).all()
    return {sha: None if representative in (None, sha) else representative for sha, representative in rows}


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """An original photo, its duplicates as the web makes them, and look-alikes that are not."""
    original_image = gen.photo(1)
    original = gen.jpeg(original_image, 90)
    decoded = gen.decode(original)
    return {
        "original": original,
        "q70": gen.reencode(original, 70),
        "q40": gen.reencode(original, 40),
        "half": gen.jpeg(gen.resize(decoded, 0.5), 85),
        "crop5": gen.jpeg(gen.crop(decoded, 0.05), 90),
        "brighter": gen.jpeg(gen.brightness(decoded, 1.15), 90),
        "watermark": gen.jpeg(gen.watermark(decoded), 90),
        "png": gen.png(decoded),
        "comment": gen.with_comment(original, "re-uploaded by someone else"),
        **{f"lookalike{i}": gen.jpeg(gen.photo(100 + i, layout=1), 90) for i in range(3)},
        "other": gen.jpeg(gen.photo(2), 90),
        "other_q60": gen.reencode(gen.jpeg(gen.photo(2), 90), 60),
    }


DUPLICATES = ["q70", "q40", "half", "crop5", "brighter", "watermark", "png", "comment"]


def test_drafted_hash_is_close_to_full_decode(photos):
    for name in ("original", "crop5", "lookalike0"):
        phash, _ = dedup.hash_image(photos[name])
        full = int(str(imagehash.phash(gen.decode(photos[name]))), 16)
        assert (phash ^ full).bit_count() <= 2, name


def test_pixel_digest_ignores_metadata_and_format(photos):
    digest = dedup.pixel_digest(photos["original"])
    assert dedup.pixel_digest(photos["comment"]) == digest
    assert dedup.pixel_digest(photos["png"]) == digest
    assert dedup.pixel_digest(photos["q70"]) != digest


def test_exif_orientation_is_applied_before_hashing(photos):
    upright = gen.photo(5, size=(800, 600))
    tagged = io.BytesIO()
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the stored pixels lie on their side
    upright.transpose(PILImage.Transpose.ROTATE_90).save(tagged, "JPEG", quality=95, exif=exif)
    phash, _ = dedup.hash_image(gen.jpeg(upright, quality=95))
    tagged_phash, _ = dedup.hash_image(tagged.getvalue())
    assert bin(phash ^ tagged_phash).count("1") <= 2


def test_known_relations(any_workspace, photos):
    shas = {name: add_image(any_workspace, data, rank=1 if name == "original" else 5) for name, data in photos.items()}
    report = dedup.run(any_workspace)
    links = duplicate_of(any_workspace)
    for name in DUPLICATES:
        assert links[shas[name]] == shas["original"], name
    assert links[shas["original"]] is None
    for name in ("lookalike0", "lookalike1", "lookalike2"):
        assert links[shas[name]] is None, name
        assert shas[name] not in links.values(), name
    assert links[shas["other"]] is None and links[shas["other_q60"]] == shas["other"]
    assert report.as_dict() == {"threshold": 10, "images": 14, "hashed": 14, "unreadable": 0, "exact_files": 0,
                                "exact_pixels": 2, "near": 7, "clusters": 2, "conflicts": 0}
    assert report.summary() == "dedup: 14 images, 2 exact, 7 near duplicates in 2 clusters (0 cross-category conflicts)"
    with any_workspace.session() as session:
        groups = dedup.cluster_of(session)
        hashed = session.execute(select(Image.phash, Image.dhash)).all()
    assert {groups[shas[name]] for name in [*DUPLICATES, "original"]} == {shas["original"]}
    assert groups[shas["other"]] == shas["other"] == groups[shas["other_q60"]]
    assert all(phash is not None and dhash is not None for phash, dhash in hashed)


def test_rerun_is_idempotent(workspace, photos):
    for name in ("original", "q70", "png", "other"):
        add_image(workspace, photos[name])
    first = dedup.run(workspace)
    before = duplicate_of(workspace)
    second = dedup.run(workspace)
    assert duplicate_of(workspace) == before
    assert (first.hashed, second.hashed) == (4, 0)
    assert dataclass_counts(first) == dataclass_counts(second)


def dataclass_counts(report: dedup.DedupReport) -> dict[str, int]:
    return {key: value for key, value in report.as_dict().items() if key != "hashed"}


def test_conflicts_and_exact_files(any_workspace, photos, tmp_path):
    original = add_image(any_workspace, photos["original"], DOG, url="https://a.example/dog.jpg")
    add_image(any_workspace, photos["original"], DOG, url="https://mirror.example/dog.jpg")  # same bytes again
    copy = add_image(any_workspace, photos["q70"], CAT, url="https://b.example/cat.jpg")  # same picture, other category
    other = add_image(any_workspace, photos["other"], DOG)
    add_image(any_workspace, photos["other"], CAT)  # the same file gathered for two categories
    report = dedup.run(any_workspace)
    assert (report.exact_files, report.near, report.clusters, report.conflicts) == (2, 1, 2, 2)
    path = tmp_path / "clusters.json"
    assert dedup.write_clusters(any_workspace, path, report) == 2
    document = json.loads(path.read_text())
    jsonschema.validate(document, SCHEMA)
    first, second = sorted(document["clusters"], key=lambda cluster: cluster["representative"] != original)
    assert first["representative"] == original and first["conflict"] and first["categories"] == sorted([DOG, CAT])
    assert [member["sha256"] for member in first["members"]] == [original, copy]
    assert [c["url"] for c in first["members"][0]["candidates"]] == ["https://a.example/dog.jpg",
                                                                      "https://mirror.example/dog.jpg"]
    assert first["members"][1]["relation"] == "near" and first["members"][1]["distance"] <= 2
    assert second["representative"] == other and second["conflict"] and len(second["members"]) == 1
    with any_workspace.session() as session:
        dog, cat = (session.scalar(select(Category.id).where(Category.wnid == w)) for w in (DOG, CAT))
        assert dedup.candidacy(session) == {original: {dog, cat}, other: {dog, cat}}


def test_representative_policy(workspace, photos):
    big = add_image(workspace, photos["original"], rank=50)  # 1200x900, worst rank: still largest
    half = add_image(workspace, photos["half"], rank=1)
    dedup.run(workspace)
    assert duplicate_of(workspace)[half] == big
    same_size = [add_image(workspace, photos[name], rank=rank) for name, rank in (("q70", 3), ("q40", 2))]
    dedup.run(workspace)  # three at 1200x900: the best rank wins
    links = duplicate_of(workspace)
    assert links[same_size[1]] is None and links[big] == links[same_size[0]] == links[half] == same_size[1]
    with workspace.session() as session:  # equal size and rank: the smallest sha256 wins
        session.execute(Candidate.__table__.update().values(rank=7))
    dedup.run(workspace)  # a rank edited in place is not a change a rerun reads: nothing moves
    assert duplicate_of(workspace) == links
    dedup.run(workspace, threshold=9)  # another threshold groups everything again
    full_size = sorted([big, *same_size])
    assert all(duplicate_of(workspace)[sha] == full_size[0] for sha in [*full_size[1:], half])


def test_the_cluster_is_the_only_grouping(workspace, photos):
    """Before: image.duplicate_of, a copy of the representative written beside the cluster, was what
    cluster_of, candidacy and the counts read; a representative changed in the cluster alone was not seen."""
    big = add_image(workspace, photos["original"])
    half = add_image(workspace, photos["half"])
    dedup.run(workspace)
    with workspace.session() as session:
        cluster = session.get(Image, half).cluster_id
        session.execute(update(Cluster).where(Cluster.id == cluster).values(representative=half))
    with workspace.session() as session:
        assert dedup.cluster_of(session) == {big: half, half: half}
        assert list(dedup.candidacy(session)) == [half]
        assert [c.representative for c in dedup.clusters(session)] == [half]


def cluster_ids(workspace) -> dict[str, int | None]:
    with workspace.session() as session:
        return dict(session.execute(select(Image.sha256, Image.cluster_id)).all())


def test_clusters_keep_their_identity_when_the_representative_changes(any_workspace, photos):
    half = add_image(any_workspace, photos["half"])
    other = add_image(any_workspace, photos["other"])
    dedup.run(any_workspace)
    first = cluster_ids(any_workspace)
    assert first[half] != first[other] and None not in first.values()  # singletons have clusters too
    big = add_image(any_workspace, photos["original"])  # a larger copy arrives: it becomes the representative
    dedup.run(any_workspace)
    after = cluster_ids(any_workspace)
    assert duplicate_of(any_workspace)[half] == big
    assert after[half] == after[big] == first[half] and after[other] == first[other]
    with any_workspace.session() as session:
        cluster = session.get(Cluster, first[half])
        assert (cluster.key, cluster.representative, cluster.merged_into) == (half, big, None)


def test_merged_clusters_keep_the_older_identity_and_its_labels(workspace, photos):
    original = add_image(workspace, photos["original"])
    crop = add_image(workspace, photos["crop5"])
    other = add_image(workspace, photos["other"])
    dedup.run(workspace, threshold=0)  # at 0 bits the crop is a picture of its own
    before = cluster_ids(workspace)
    with workspace.session() as session:
        dog = session.scalar(select(Category.id).where(Category.wnid == DOG))
        session.add(Label(cluster_id=before[other], category_id=dog, status="accepted", confidence=0.999,
                          yes_votes=3, no_votes=0, method="majority", round=1))
    dedup.run(workspace, threshold=10)
    after = cluster_ids(workspace)
    assert before[original] != before[crop]
    assert after[original] == after[crop] == min(before[original], before[crop])
    assert after[other] == before[other]
    with workspace.session() as session:
        assert session.scalar(select(Label.cluster_id)) == before[other]


def test_incremental_run_takes_new_images_in(any_workspace, photos):
    original = add_image(any_workspace, photos["original"])
    add_image(any_workspace, photos["other"])
    first = dedup.run(any_workspace)
    assert (first.hashed, first.clusters) == (2, 0)
    new = [add_image(any_workspace, photos[name], rank=9) for name in ("watermark", "crop5", "other_q60")]
    second = dedup.run(any_workspace)
    links = duplicate_of(any_workspace)
    assert second.hashed == 3 and second.clusters == 2
    assert links[new[0]] == links[new[1]] == original and links[new[2]] is not None


def test_crash_mid_run_then_rerun_matches_clean_run(workspace, tmp_path, photos, monkeypatch):
    names = list(photos)
    for name in names:
        add_image(workspace, photos[name])
    real = dedup.hash_image
    calls = {"n": 0}

    def failing(source):
        calls["n"] += 1
        if calls["n"] > 7:
            raise RuntimeError("killed")
        return real(source)

    monkeypatch.setattr(dedup, "hash_image", failing)
    with pytest.raises(RuntimeError, match="killed"):
        dedup.run(workspace, batch_size=3, workers=1)
    assert hashed_count(workspace) == 6
    monkeypatch.setattr(dedup, "hash_image", real)
    resumed = dedup.run(workspace, batch_size=3)
    assert resumed.hashed == len(names) - 6
    assert_same_as_clean_run(workspace, resumed, photos, tmp_path)


def assert_same_as_clean_run(workspace, report: dedup.DedupReport, photos, tmp_path) -> None:
    clean = Workspace.init(tmp_path / "clean")
    for name in photos:
        add_image(clean, photos[name])
    clean_report = dedup.run(clean)
    assert duplicate_of(clean) == duplicate_of(workspace)
    assert dataclass_counts(clean_report) == dataclass_counts(report)
    clean.close()


def hashed_count(workspace) -> int:
    with workspace.session() as session:
        return len(session.scalars(select(Image.sha256).where(Image.phash.is_not(None))).all())


def test_kill_9_mid_run_then_rerun_matches_clean_run(workspace, photos, tmp_path):
    for name in photos:
        add_image(workspace, photos[name])
    script = textwrap.dedent(f"""
        import time
        from imgnet_build import dedup
        from imgnet_build.workspace import Workspace
        real = dedup.hash_image
        dedup.hash_image = lambda source: time.sleep(0.3) or real(source)
        dedup.run(Workspace.open({str(workspace.root)!r}), batch_size=2, workers=1)
    """)
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while process.poll() is None and hashed_count(workspace) < 4:
        assert time.monotonic() < deadline, "fewer than 4 images hashed within 120 s"
        time.sleep(0.02)
    process.kill()
    process.wait()
    killed_at = hashed_count(workspace)
    assert 4 <= killed_at < len(photos)
    resumed = dedup.run(workspace)
    assert resumed.hashed == len(photos) - killed_at
    assert_same_as_clean_run(workspace, resumed, photos, tmp_path)


def test_unreadable_image_is_counted_not_fatal(workspace, photos):
    add_image(workspace, photos["original"])
    sha = hashlib.sha256(b"not an image").hexdigest()
    key = blob_key(sha, "jpg")
    workspace.blob_store.put(key, b"not an image")
    with workspace.session() as session:
        session.add(Image(sha256=sha, width=10, height=10, format="JPEG", bytes=12, blob_key=key))
    report = dedup.run(workspace)
    assert (report.images, report.hashed, report.unreadable) == (2, 1, 1)
    assert report.summary().endswith("; 1 unreadable")


def test_threshold_zero_keeps_pixel_twins_only(workspace, photos):
    original = add_image(workspace, photos["original"])
    twins = [add_image(workspace, photos[name], rank=3) for name in ("png", "comment")]
    marked = add_image(workspace, photos["watermark"], rank=3)
    report = dedup.run(workspace, threshold=0)
    links = duplicate_of(workspace)
    with workspace.session() as session:
        phash = {image.sha256: image.phash for image in session.scalars(select(Image))}
    assert phash[twins[0]] != phash[original] and phash[marked] != phash[original]  # png: drafted vs full decode
    assert [links[sha] for sha in twins] == [original, original] and links[marked] is None
    assert (report.exact_pixels, report.near) == (2, 0)


def test_bad_threshold_names_the_fix(workspace):
    with pytest.raises(dedup.BadInput, match="between 0 and 20 bits, not 40; the default is 10"):
        dedup.run(workspace, threshold=40)


def test_cli_summary_json_and_clusters_file(runner, workspace, photos, tmp_path):
    for name in ("original", "q70", "comment", "other"):
        add_image(workspace, photos[name])
    result = runner.invoke(cli, ["-w", str(workspace.root), "dedup"])
    assert result.exit_code == 0, result.output
    assert result.output == "dedup: 4 images, 1 exact, 1 near duplicates in 1 clusters (0 cross-category conflicts)\n"
    path = tmp_path / "out.json"
    result = runner.invoke(cli, ["-w", str(workspace.root), "dedup", "--json", "--threshold", "4",
                                 "--clusters", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["threshold"] == 4 and json.loads(result.output)["clusters"] == 1
    jsonschema.validate(json.loads(path.read_text()), SCHEMA)


def test_cli_errors(runner, workspace, tmp_path):
    result = runner.invoke(cli, ["-w", str(workspace.root), "dedup", "--threshold", "33"])
    assert result.exit_code == 1
    assert result.output == "Error: --threshold must be between 0 and 20 bits, not 33; the default is 10\n"
    result = runner.invoke(cli, ["-w", str(workspace.root), "dedup", "--clusters", str(tmp_path / "no" / "c.json")])
    assert result.exit_code == 1
    assert re.match(r"Error: cannot write .*c\.json: folder .*no does not exist\n", result.output)
    result = runner.invoke(cli, ["-w", str(tmp_path / "nowhere"), "dedup"])
    assert result.exit_code == 1 and result.output.startswith("Error: workspace ")
    assert "Example:" in runner.invoke(cli, ["dedup", "--help"]).output


# The index on its own: every pair within the threshold, nothing else, however it is fed.

def brute_force(hashes: np.ndarray, threshold: int) -> set[tuple[int, int]]:
    distances = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    first, second = np.nonzero(np.triu(distances <= threshold, 1))
    return set(zip(first.tolist(), second.tolist(), strict=True))


@pytest.mark.parametrize("threshold", [0, 3, 10, 16])
@pytest.mark.parametrize("j", [None, 1, 2, 3])
@pytest.mark.parametrize("blocked", [False, True], ids=["one-sort-per-table", "blocked-in-processes"])
def test_index_finds_exactly_the_brute_force_pairs(threshold, j, blocked, monkeypatch):
    if blocked:  # the path taken from 50,000 hashes on
        monkeypatch.setattr(hamming, "_BLOCK_FROM", 0)
    rng = np.random.default_rng(threshold)
    hashes = rng.integers(0, 2**64 - 1, 1500, dtype=np.uint64, endpoint=True)
    for i in range(0, 1500, 3):  # plant neighbours at 0..threshold+2 bits, and exact copies
        flips = rng.choice(64, size=int(rng.integers(0, threshold + 3)), replace=False)
        hashes[i + 1] = hashes[i] ^ np.uint64(sum(1 << int(bit) for bit in flips))
    expected = brute_force(hashes, threshold)
    assert len(expected) > 100
    bulk = HammingIndex(threshold, j=j).add(hashes)
    assert {(a, b) for a, b, _ in bulk.tolist()} == expected
    assert all(d == (int(hashes[a]) ^ int(hashes[b])).bit_count() for a, b, d in bulk.tolist())
    index = HammingIndex(threshold, j=j)
    parts = [index.add(hashes[start:start + 400]) for start in range(0, 1500, 400)]
    assert {(a, b) for a, b, _ in np.concatenate(parts).tolist()} == expected
    assert len(index) == 1500


def test_signed_storage_round_trip():
    for value in (0, 1, 2**63 - 1, 2**63, 2**64 - 1):
        assert int(to_unsigned([to_signed(value)])[0]) == value


def test_many_copies_of_one_picture_make_one_cluster(workspace, photos):
    """A placeholder served under 25 URLs with other metadata: one cluster, all pixel twins."""
    copies = [add_image(workspace, gen.with_comment(photos["other"], f"copy {i}"), rank=i) for i in range(25)]
    add_image(workspace, photos["original"])
    report = dedup.run(workspace)
    links = duplicate_of(workspace)
    assert links[copies[0]] is None and all(links[sha] == copies[0] for sha in copies[1:])
    assert (report.clusters, report.exact_pixels, report.near) == (1, 24, 0)


# Incremental runs: only pairs that involve a new image are searched, a new image joins a
# cluster only when it is the same picture as the representative (no chains), and a run
# killed before its commit then resumed gives what an uninterrupted one gives. The pHashes
# are given (hash_image is replaced), so the relations are known: chains, a bridge between
# two clusters, exact hash copies, pixel twins.

def synthetic_images(seed: int, count: int = 60) -> list[tuple[str, bytes, int, int]]:
    """(name, PNG bytes, pHash, rank): random pictures, near copies 1-14 bits from an earlier
    one (chains), pixel twins (same pixels, other bytes, 0-2 bits) and a bridge `x` that is 6
    bits from both `c` and `d` (12 bits apart), larger than both: it joins one of them, not both."""
    rng = np.random.default_rng(seed)
    c = int(rng.integers(0, 2**64 - 1, dtype=np.uint64, endpoint=True))
    images = [("c", PILImage.new("RGB", (32, 24), (0, 0, 1)), c, None),
              ("d", PILImage.new("RGB", (32, 24), (0, 0, 2)), c ^ (0xFFF << 20), None),
              ("d1", PILImage.new("RGB", (48, 36), (0, 0, 3)), c ^ (0xFFF << 20) ^ 0b111 << 40, None),
              ("x", PILImage.new("RGB", (80, 60), (0, 0, 4)), c ^ (0x3F << 20), None)]
    for i in range(count):
        kind = rng.choice(["new", "near", "twin"], p=[0.3, 0.55, 0.15])
        parent = images[int(rng.integers(len(images)))]
        if kind == "new":
            size = [(32, 24), (48, 36), (40, 40)][int(rng.integers(3))]
            pixels, phash = PILImage.new("RGB", size, (i, 1, 0)), int(rng.integers(0, 2**64 - 1, dtype=np.uint64,
                                                                                     endpoint=True))
        else:
            flips = rng.choice(64, size=int(rng.integers(0, 3) if kind == "twin" else rng.integers(1, 15)),
                               replace=False)
            pixels = parent[1] if kind == "twin" else PILImage.new("RGB", parent[1].size, (i, 2, 0))
            phash = parent[2] ^ sum(1 << int(bit) for bit in flips)
        images.append((f"{kind}{i}", pixels, phash, f"copy {i}" if kind == "twin" else None))
    result = []
    for name, pixels, phash, note in images:
        info = PngImagePlugin.PngInfo()
        if note:
            info.add_text("note", note)
        data = io.BytesIO()
        pixels.save(data, "PNG", pnginfo=info)
        result.append((name, data.getvalue(), phash, int(rng.integers(1, 4))))
    return result


@pytest.fixture
def given_hashes(monkeypatch) -> dict[str, int]:
    """hash_image returns the pHash registered here for the file's sha256."""
    hashes: dict[str, int] = {}

    def fake(source: bytes | Path) -> tuple[int, int]:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        return hashes[hashlib.sha256(data).hexdigest()], 0

    monkeypatch.setattr(dedup, "hash_image", fake)
    return hashes


def add_synthetic(workspace, images, given_hashes) -> dict[str, str]:
    """Store the images; returns {name: sha256}."""
    shas = {}
    for name, data, phash, rank in images:
        shas[name] = add_image(workspace, data, rank=rank)
        given_hashes[shas[name]] = phash
    return shas


def one_run(tmp_path, name: str, images, given_hashes, threshold: int = 10) -> tuple[dict, dedup.DedupReport]:
    """duplicate_of and the report of a single run over all `images` in a new workspace."""
    clean = Workspace.init(tmp_path / name)
    add_synthetic(clean, images, given_hashes)
    report = dedup.run(clean, threshold)
    links = duplicate_of(clean)
    clean.close()
    return links, report


@pytest.fixture
def index_calls(monkeypatch) -> dict[str, list[int]]:
    """How many hashes each HammingIndex.load and .add call received."""
    calls: dict[str, list[int]] = {"load": [], "add": []}

    def recording(method: str):
        real = getattr(HammingIndex, method)

        def wrapper(self, hashes):
            calls[method].append(len(hashes))
            return real(self, hashes)
        return wrapper

    for method in calls:
        monkeypatch.setattr(HammingIndex, method, recording(method))
    return calls


def distinct(images) -> int:
    return len({phash for _, _, phash, _ in images})


def assert_no_chain(workspace, threshold: int = 10) -> None:
    """Every image is the same picture as its cluster's representative (no member joined
    through another member): pHash within the threshold and, past ALONE_RADIUS bits, dHash
    within SECOND_RADIUS; or identical pixels to the representative or to such a member."""
    with workspace.session() as session:
        images = {image.sha256: image for image in session.scalars(select(Image))}
    links = duplicate_of(workspace)

    def near(image, lead) -> bool:
        bits = int(np.bitwise_count(to_unsigned([image.phash ^ lead.phash]))[0])
        second = int(np.bitwise_count(to_unsigned([(image.dhash or 0) ^ (lead.dhash or 0)]))[0])
        return bits <= threshold and (bits <= dedup.ALONE_RADIUS or second <= dedup.SECOND_RADIUS)

    for image in images.values():
        if links[image.sha256] is None:
            continue
        lead = images[links[image.sha256]]
        twins = [other for other in [lead, *images.values()] if image.pixel_sha256 is not None
                 and other.pixel_sha256 == image.pixel_sha256 and other.cluster_id == image.cluster_id]
        assert near(image, lead) or any(other is lead or near(other, lead) for other in twins), image.sha256


def incremental(tmp_path, name: str, batches, given_hashes, threshold: int = 10) -> tuple[dict, dedup.DedupReport]:
    """duplicate_of and the last report after one run per batch in a new workspace."""
    clean = Workspace.init(tmp_path / name)
    for batch in batches:
        add_synthetic(clean, batch, given_hashes)
        report = dedup.run(clean, threshold)
    links = duplicate_of(clean)
    clean.close()
    return links, report


@pytest.mark.parametrize("seed", [1, 2])
def test_incremental_runs_do_not_chain(any_workspace, tmp_path, given_hashes, index_calls, seed):
    images = synthetic_images(seed)
    batches = [images[:3] + images[4:24], [images[3], *images[24:44]], images[44:]]  # x comes second
    shas = {}
    for number, batch in enumerate(batches):
        shas.update(add_synthetic(any_workspace, batch, given_hashes))
        index_calls["add"].clear()
        report = dedup.run(any_workspace)
        assert index_calls["add"] == [distinct(batch)]  # only the new hashes are searched
        assert_no_chain(any_workspace)
        links, again = incremental(tmp_path, f"again{number}", batches[:number + 1], given_hashes)
        assert duplicate_of(any_workspace) == links and dataclass_counts(report) == dataclass_counts(again)
    links = duplicate_of(any_workspace)
    assert (links[shas["c"]] or shas["c"]) != (links[shas["d"]] or shas["d"])  # x did not bridge them
    assert (links[shas["x"]] or shas["x"]) in (links[shas["c"]] or shas["c"], links[shas["d"]] or shas["d"])
    assert report.exact_pixels > 0 and report.near > 10


def test_a_chain_is_not_one_cluster(workspace, given_hashes):
    """a-b 8 bits, b-c 8 bits, a-c 16 bits: before, the connected component held all three."""
    a = 0x0123456789ABCDEF
    images = [("a", PILImage.new("RGB", (64, 48), (1, 0, 0)), a, 1), ("b", PILImage.new("RGB", (48, 36), (2, 0, 0)),
              a ^ 0xFF, 2), ("c", PILImage.new("RGB", (40, 30), (3, 0, 0)), a ^ 0xFFFF, 3)]
    shas = add_synthetic(workspace, [(name, png(pixels), phash, rank) for name, pixels, phash, rank in images],
                         given_hashes)
    report = dedup.run(workspace)
    links = duplicate_of(workspace)
    assert links[shas["b"]] == shas["a"] and links[shas["c"]] is None  # c is 16 bits from the representative
    assert (report.near, report.clusters) == (1, 1)
    assert_no_chain(workspace)


def png(pixels: PILImage.Image) -> bytes:
    data = io.BytesIO()
    pixels.save(data, "PNG")
    return data.getvalue()


def test_a_second_hash_must_agree_past_the_alone_radius(workspace, monkeypatch):
    """pHash 8 bits apart is a duplicate only when dHash agrees too; 3 bits apart is one alone.
    Before, pHash decided alone: the 8-bit pair with unrelated dHashes was merged."""
    base = 0x00FF00FF00FF00FF
    hashes = {}
    pictures = {"lead": (base, 0), "agrees": (base ^ 0xFF, 0b111), "disagrees": (base ^ (0xFF << 8), 2**40 - 1),
                "close": (base ^ 0b111 << 40, 2**50 - 1)}
    shas = {}
    for number, (name, pair) in enumerate(pictures.items()):
        shas[name] = add_image(workspace, png(PILImage.new("RGB", (64 - number, 48), (number, 9, 9))))
        hashes[shas[name]] = pair
    monkeypatch.setattr(dedup, "hash_image", lambda source: hashes[hashlib.sha256(
        source if isinstance(source, bytes) else Path(source).read_bytes()).hexdigest()])
    dedup.run(workspace)
    links = duplicate_of(workspace)
    assert links[shas["agrees"]] == shas["lead"] and links[shas["close"]] == shas["lead"]
    assert links[shas["disagrees"]] is None


def test_near_constant_pictures_are_only_pixel_duplicates(workspace):
    """Flat pictures of different greys share one pHash (0 bits apart): before, they made one
    cluster. Now a near-constant picture is a duplicate only of the same pixels."""
    greys = [add_image(workspace, gen.jpeg(PILImage.new("RGB", (120, 90), (grey, grey, grey))), rank=1)
             for grey in (40, 120, 200)]
    twin = add_image(workspace, png(PILImage.open(io.BytesIO(workspace.blob_store.get(
        blob_key(greys[0], "jpeg")))).convert("RGB")), rank=5)
    photo = add_image(workspace, gen.jpeg(gen.photo(3, size=(120, 90))))
    report = dedup.run(workspace)
    links = duplicate_of(workspace)
    with workspace.session() as session:
        detail = dict(session.execute(select(Image.sha256, Image.detail)).all())
        phash = dict(session.execute(select(Image.sha256, Image.phash)).all())
    assert len({phash[sha] for sha in greys}) == 1 and all(detail[sha] < dedup.LOW_DETAIL for sha in greys)
    assert detail[photo] > 20
    assert [links[sha] for sha in greys] == [None, None, None] and links[twin] == greys[0]
    assert (report.exact_pixels, report.near) == (1, 0)


def test_threshold_change_recomputes_everything(any_workspace, tmp_path, given_hashes, index_calls):
    images = synthetic_images(3)
    add_synthetic(any_workspace, images[:30], given_hashes)
    dedup.run(any_workspace, 10)
    stored = 30
    for threshold, seen, searched in ((0, images[:45], distinct(images[:45])),  # another threshold: all
                                      (0, images, distinct(images[45:])),  # then the new ones
                                      (10, images, distinct(images))):
        add_synthetic(any_workspace, seen[stored:], given_hashes)
        index_calls["add"].clear()
        report = dedup.run(any_workspace, threshold)
        assert index_calls["add"] == [searched]
        if searched == distinct(seen):  # everything grouped again: as one run over all of them
            links, clean_report = one_run(tmp_path, f"clean{threshold}-{len(seen)}", seen, given_hashes, threshold)
        else:
            links, clean_report = incremental(tmp_path, f"again{threshold}", [seen[:stored], seen[stored:]],
                                              given_hashes, threshold)
        stored = len(seen)
        assert duplicate_of(any_workspace) == links and dataclass_counts(report) == dataclass_counts(clean_report)
        assert_no_chain(any_workspace, threshold)
        if threshold == 0:
            assert report.exact_pixels > 0 and report.near == 0  # pixel twins only
            at_zero = links
    assert links != at_zero


def test_rerun_with_nothing_new_searches_no_pairs(any_workspace, given_hashes, index_calls):
    images = synthetic_images(4)
    add_synthetic(any_workspace, images, given_hashes)
    first = dedup.run(any_workspace)
    before = duplicate_of(any_workspace)
    index_calls["load"].clear()
    index_calls["add"].clear()
    second = dedup.run(any_workspace)
    assert index_calls == {"load": [], "add": []}  # before: every hash loaded and indexed again
    assert duplicate_of(any_workspace) == before and dataclass_counts(first) == dataclass_counts(second)
    with any_workspace.session() as session:
        assert set(session.scalars(select(Image.dedup_threshold))) == {10}


def test_rerun_with_nothing_new_reads_the_stored_counts(any_workspace, photos):
    """Before: every rerun counted the clusters again with aggregates over every image and
    candidate (28 s at a million images). A candidate or image added since is counted."""
    add_image(any_workspace, photos["original"], DOG, url="https://a.example/dog.jpg")
    add_image(any_workspace, photos["q70"], CAT)
    add_image(any_workspace, photos["other"], DOG)
    first = dedup.run(any_workspace)
    statements: list[str] = []
    record = lambda conn, cursor, statement, *args: statements.append(statement.upper())  # noqa: E731
    event.listen(any_workspace.engine, "before_cursor_execute", record)
    try:
        second = dedup.run(any_workspace)
    finally:
        event.remove(any_workspace.engine, "before_cursor_execute", record)
    with any_workspace.session() as session:
        status = stage_counts(session)
    assert dataclass_counts(second) == dataclass_counts(first) and (first.near, first.clusters) == (1, 1)
    assert (status["duplicates"], status["clusters"]) == (1, 1)
    assert statements and not [s for s in statements if "GROUP BY" in s or "DISTINCT" in s]
    add_image(any_workspace, photos["original"], CAT, url="https://b.example/cat.jpg")  # an ok candidate, no image
    with any_workspace.session() as session:
        assert dedup.duplicate_counts(session).exact_files == first.exact_files + 1
    third = dedup.run(any_workspace)
    assert (third.exact_files, third.conflicts) == (first.exact_files + 1, first.conflicts)
    add_image(any_workspace, photos["half"], DOG)  # a new image: grouped, and counted again
    fourth = dedup.run(any_workspace)
    assert (fourth.images, fourth.near) == (first.images + 1, first.near + 1)


@pytest.mark.parametrize("seed", [3, 11])
def test_a_first_run_groups_in_chunks_what_one_pass_groups(tmp_path, given_hashes, index_calls, monkeypatch, seed):
    """Before: the first run read every new image into memory at once (1.3 GB at a million).
    The pairs are searched once per run (before: once per chunk, every old hash sorted again
    for each, hours at 14 million); the chunks are grouped and stored one at a time."""
    images = synthetic_images(seed)
    links, report = one_run(tmp_path, "whole", images, given_hashes)
    monkeypatch.setattr(dedup, "GROUP_CHUNK", 7)
    index_calls["add"].clear()
    grouped: list[int] = []
    real_group = dedup._group
    monkeypatch.setattr(dedup, "_group", lambda workspace, threshold, rows, *args: grouped.append(len(rows))
                        or real_group(workspace, threshold, rows, *args))
    chunked_links, chunked = one_run(tmp_path, "chunked", images, given_hashes)
    assert index_calls["add"] == [distinct(images)]
    assert len(grouped) >= len(images) // 7 and max(grouped) <= 7
    assert chunked_links == links and dataclass_counts(chunked) == dataclass_counts(report)


def test_a_chunked_run_refreshes_the_statistics_its_later_lookups_plan_with(any_workspace, given_hashes, monkeypatch):
    """Before: a first run kept the statistics taken before it (no image grouped) to its end, so
    each later chunk's lookup of the images grouped so far (`dedup_threshold = 10 AND phash IN`)
    was planned for one matching row: PostgreSQL walked every grouped image per lookup (bench_scale
    1M workspace: 4.0 s a lookup, 33 ms once analyzed). Now a chunk that grows the grouped images
    by a tenth of the table refreshes them (`store.analyze_if_grown`) before the next chunk."""
    from imgnet_build import store

    add_synthetic(any_workspace, synthetic_images(5), given_hashes)
    store.analyze(any_workspace.engine)  # every image counted ungrouped, as after a gather
    monkeypatch.setattr(dedup, "GROUP_CHUNK", 20)
    monkeypatch.setattr(store, "ANALYZE_AT_LEAST", 10)  # 1,000 rows: a small table stands in for a large one
    seen: list[str] = []

    def record(connection, cursor, statement, *args):
        if statement.strip().upper() == "ANALYZE":
            seen.append("analyze")
        elif "image.dedup_threshold = " in statement and "image.phash IN" in statement:
            seen.append("lookup")

    event.listen(any_workspace.engine, "before_cursor_execute", record)
    try:
        report = dedup.run(any_workspace)
    finally:
        event.remove(any_workspace.engine, "before_cursor_execute", record)
    assert report.images == 64 and "lookup" in seen
    assert "analyze" in seen and "lookup" in seen[seen.index("analyze"):], seen  # a later chunk planned with them


def test_crash_before_the_marks_leaves_the_last_clusters_then_rerun_matches(any_workspace, tmp_path, given_hashes,
                                                                            monkeypatch):
    images = synthetic_images(5)
    first, second = images[:3] + images[4:30], [images[3], *images[30:]]
    shas = add_synthetic(any_workspace, first, given_hashes)
    dedup.run(any_workspace)
    before = duplicate_of(any_workspace)
    shas.update(add_synthetic(any_workspace, second, given_hashes))

    def killed(*args):
        raise RuntimeError("killed")

    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="killed"):
        patch.setattr(dedup, "_mark_clustered", killed)
        dedup.run(any_workspace)
    after = duplicate_of(any_workspace)
    assert after == {**before, **{shas[name]: None for name, *_ in second}}  # no link of the killed run stayed
    with any_workspace.session() as session:
        assert session.get(Image, shas["x"]).dedup_threshold is None
    report = dedup.run(any_workspace)
    links, clean_report = incremental(tmp_path, "clean", [first, second], given_hashes)
    assert duplicate_of(any_workspace) == links and dataclass_counts(report) == dataclass_counts(clean_report)
    assert any(links[sha] is not None for sha in links if sha not in before)  # the killed run had links to write


def test_incremental_photos_equal_one_full_run(workspace, photos, tmp_path):
    for name in ("original", "q70", "other", "lookalike0", "lookalike1"):
        add_image(workspace, photos[name])
    dedup.run(workspace)
    for name in photos.keys() - {"original", "q70", "other", "lookalike0", "lookalike1"}:
        add_image(workspace, photos[name])
    report = dedup.run(workspace)
    assert report.hashed == len(photos) - 5
    assert_same_as_clean_run(workspace, report, photos, tmp_path)


@pytest.mark.parametrize("blocked", [False, True], ids=["one-sort-per-table", "blocked-in-processes"])
def test_index_load_then_add_finds_only_pairs_with_the_new_hashes(blocked, monkeypatch):
    if blocked:
        monkeypatch.setattr(hamming, "_BLOCK_FROM", 0)
    rng = np.random.default_rng(7)
    hashes = rng.integers(0, 2**64 - 1, 1500, dtype=np.uint64, endpoint=True)
    for i in range(0, 1500, 2):
        flips = rng.choice(64, size=int(rng.integers(0, 12)), replace=False)
        hashes[(i + 1001) % 1500] = hashes[i] ^ np.uint64(sum(1 << int(bit) for bit in flips))
    expected = {(a, b) for a, b in brute_force(hashes, 10) if b >= 1000}
    assert len(expected) > 100 and len(brute_force(hashes, 10)) > len(expected)
    index = HammingIndex(10, j=2)
    index.load(hashes[:1000])
    assert {(a, b) for a, b, _ in index.add(hashes[1000:]).tolist()} == expected
    assert len(index) == 1500 and index.add([]).shape == (0, 3)


def test_hot_queries_use_their_indexes(any_workspace):
    """EXPLAIN of the lookups that must not walk a table at a million rows: what a dedup rerun
    reads to see what changed, the images still to hash, a category's ok pairs and its votes.
    On PostgreSQL, with sequential scans switched off, some index must serve each; which one
    the planner takes on an empty table is its choice."""
    from imgnet_build.store import Vote

    queries = {
        "ix_image_dedup_threshold": select(Image.sha256).where(Image.dedup_threshold.is_(None),
                                                               Image.phash.is_not(None)).limit(1),
        "ix_image_dedup_threshold (another threshold: two ranges)": select(Image.sha256).where(
            (Image.dedup_threshold < 10) | (Image.dedup_threshold > 10)).limit(1),
        "ix_image_unhashed": select(Image.sha256).where(Image.phash.is_(None), Image.sha256 > "").order_by(
            Image.sha256).limit(200),
        "ix_candidate_category": select(Candidate.image_sha256).where(Candidate.category_id == 1,
                                                                      Candidate.status == "ok"),
        "ix_vote_category": select(Vote.image_sha256).where(Vote.category_id == 1),
        "ix_image_phash": select(Image.sha256).where(Image.phash.in_([1, 2, 3])),
        # partial (pixel_sha256 IS NOT NULL): on a plain index SQLite scanned the image table for it
        "ix_image_pixel": dedup.exact_pixel_duplicates(),
    }
    with any_workspace.engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            connection.exec_driver_sql("SET enable_seqscan = off")
        for index, query in queries.items():
            sql = str(query.compile(connection, compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(row[-1]) for row in connection.exec_driver_sql(
                ("EXPLAIN " if postgres else "EXPLAIN QUERY PLAN ") + sql))
            assert "Seq Scan" not in plan and "TEMP B-TREE" not in plan, (index, plan)
            assert index.split()[0] in plan or (postgres and "Index" in plan), (index, plan)  # PostgreSQL: by its statistics
