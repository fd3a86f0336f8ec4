"""Exports read back by their users' readers, and what every export promises."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
from exportdata import LabeledData
from PIL import Image as PILImage
from sqlalchemy import select, update

from imgnet_build.cli.main import cli
from imgnet_build.errors import BadInput, ExportFailed, ExportTargetExists
from imgnet_build.schemas import load_schema
from imgnet_build.split import ExportOptions, export, verify_export
from imgnet_build.store import Cluster, Export, Image, Label

DOG, CAT, HORSE, BIRD = "n02084071", "n02121808", "n02374451", "n01503061"
# torchvision.datasets.folder.IMG_EXTENSIONS (torchvision has no CPU wheel here; its rules are re-stated)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def torchvision_image_folder(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """What torchvision's ImageFolder finds: sorted class folders, files with its extensions, walked sorted."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    samples = []
    for index, name in enumerate(classes):
        for folder, _, files in sorted(os.walk(root / name, followlinks=True)):
            samples += [(os.path.join(folder, file), index) for file in sorted(files)
                        if file.lower().endswith(IMG_EXTENSIONS)]
    return classes, samples


@pytest.fixture
def labeled(workspace) -> dict:
    return labeled_data(workspace)


@pytest.fixture
def labeled_anywhere(any_workspace) -> dict:
    return labeled_data(any_workspace)


def labeled_data(workspace) -> dict:
    """Three classes and the cases the export must handle."""
    data = LabeledData(workspace)
    shas = {"dogs": [data.accepted(DOG, seed=n) for n in range(8)],
            "cats": [data.accepted(CAT, seed=20 + n, fmt="PNG" if n == 0 else "JPEG") for n in range(6)],
            "horse": [data.accepted(HORSE, seed=40)]}
    duplicate = data.image(seed=0, variant="re-saved")  # other bytes of dog 0's picture, in its cluster
    data.candidate(duplicate, DOG, rank=2)
    with workspace.session() as session:
        session.get(Image, duplicate).cluster_id = data.cluster_of(shas["dogs"][0])
    shared = shas["dogs"][1]  # a picture accepted for dog and cat
    data.candidate(shared, CAT)
    data.label(data.cluster_of(shared), CAT)
    shas.update(duplicate=duplicate, shared=shared,
                rejected=data.accepted(DOG, seed=60, status="rejected"),
                simulated=data.accepted(DOG, seed=61, simulated=True),
                unlicensed=data.accepted(CAT, seed=62, license=None))
    return {"workspace": workspace, "data": data, "shas": shas}


def manifest(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def check_documents(folder: Path) -> list[dict]:
    rows = manifest(folder)
    for row in rows:
        jsonschema.validate(row, load_schema("manifest"))
    document = json.loads((folder / "dataset.json").read_text())
    jsonschema.validate(document, load_schema("dataset"))
    assert document["counts"]["images"] == len(rows)
    assert "## Known limits" in (folder / "README.md").read_text()
    return rows


def test_imagefolder_is_what_torchvision_reads(labeled_anywhere, tmp_path):
    workspace, shas = labeled_anywhere["workspace"], labeled_anywhere["shas"]
    result = export(workspace, tmp_path / "out", ExportOptions(val_per_class=2))
    rows = check_documents(tmp_path / "out")
    exported = {(row["sha256"], row["wnid"]) for row in rows}
    assert {sha for sha, _ in exported} == set(shas["dogs"] + shas["cats"] + [shas["unlicensed"]])
    assert (shas["shared"], CAT) in exported and (shas["shared"], DOG) in exported
    assert result.simulated_left_out == 1 and result.license_unknown == 1 and result.images == 16
    assert result.left_out_categories == {HORSE: 1}  # one image cannot be in train and val: under --min-per-class 2
    assert {wnid: sum(counts.values()) for wnid, counts in result.classes.items()} == {CAT: 8, DOG: 8}
    assert result.classes[DOG]["val"] >= 2 and result.classes[CAT]["val"] >= 2
    for split in ("train", "val"):
        classes, samples = torchvision_image_folder(tmp_path / "out" / split)
        expected = sorted({row["wnid"] for row in rows if row["split"] == split})
        assert classes == expected
        assert sorted((path, classes[index]) for path, index in samples) == sorted(
            (str(tmp_path / "out" / row["file"]), row["wnid"]) for row in rows if row["split"] == split)
        for path, _ in samples:
            with PILImage.open(path) as image:
                image.load()
    blob = workspace.blob_store.local_path(next(row for row in rows if row["sha256"] == shas["dogs"][2])["file"] and
                                           f"{shas['dogs'][2][:2]}/{shas['dogs'][2][2:4]}/{shas['dogs'][2]}.jpg")
    linked = tmp_path / "out" / next(row["file"] for row in rows if row["sha256"] == shas["dogs"][2])
    assert linked.stat().st_ino == blob.stat().st_ino and result.files["linked"] == 16
    umask = os.umask(0)
    os.umask(umask)
    assert linked.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by others when the umask says so


def test_the_split_is_recorded_and_the_export_remembered(labeled_anywhere, tmp_path):
    workspace = labeled_anywhere["workspace"]
    export(workspace, tmp_path / "out", ExportOptions(val_fraction=0.5, seed=3))
    rows = manifest(tmp_path / "out")
    with workspace.session() as session:
        recorded = dict(session.execute(select(Cluster.key, Cluster.split).where(Cluster.split.is_not(None))).all())
        exports = session.scalars(select(Export)).all()
    assert recorded == {row["cluster"]: row["split"] for row in rows}
    assert len(exports) == 1 and exports[0].format == "imagefolder" and exports[0].parameters["seed"] == 3


def test_same_workspace_and_seed_give_the_same_bytes(labeled, tmp_path):
    for name in ("a", "b"):
        export(labeled["workspace"], tmp_path / name, ExportOptions(format="webdataset", shard_size=4))
    for document in ("manifest.jsonl", "dataset.json", "README.md", "train-000000.tar", "train-000002.tar"):
        assert (tmp_path / "a" / document).read_bytes() == (tmp_path / "b" / document).read_bytes()


def test_ilsvrc_layout_and_ground_truth(labeled, tmp_path):
    export(labeled["workspace"], tmp_path / "out", ExportOptions(format="ilsvrc", val_per_class=2))
    out = tmp_path / "out"
    rows = check_documents(out)
    mapping = (out / "LOC_synset_mapping.txt").read_text().splitlines()
    assert mapping == [f"{DOG} dog, domestic dog", f"{CAT} domestic cat, house cat"]  # one horse: under --min-per-class
    val = sorted((row for row in rows if row["split"] == "val"), key=lambda row: row["file"])
    assert [row["file"] for row in val] == [f"val/ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, len(val) + 1)]
    truth = [int(line) for line in (out / "ILSVRC2012_validation_ground_truth.txt").read_text().split()]
    assert truth == [[line.split()[0] for line in mapping].index(row["wnid"]) + 1 for row in val]
    train = sorted(row["file"] for row in rows if row["split"] == "train" and row["wnid"] == DOG)
    assert train == sorted(f"train/{DOG}/{DOG}_{n}.JPEG" for n in range(1, len(train) + 1))
    for row in rows:  # every file is a JPEG, the PNG cat included
        with PILImage.open(out / row["file"]) as image:
            assert image.format == "JPEG"


def test_webdataset_read_by_webdataset(labeled, tmp_path):
    import webdataset as wds

    export(labeled["workspace"], tmp_path / "out", ExportOptions(format="webdataset", shard_size=5, val_per_class=2))
    out = tmp_path / "out"
    rows = check_documents(out)
    document = json.loads((out / "dataset.json").read_text())
    index = {c["wnid"]: c["index"] for c in document["classes"]}
    for split in ("train", "val"):
        shards = sorted(str(path) for path in out.glob(f"{split}-*.tar"))
        samples = list(wds.WebDataset(shards, shardshuffle=False).decode("pil"))
        expected = {(row["sha256"], row["wnid"]) for row in rows if row["split"] == split}
        assert {(s["json"]["sha256"], s["json"]["wnid"]) for s in samples} == expected
        for sample in samples:
            image = sample.get("jpg") or sample.get("png")
            assert isinstance(image, PILImage.Image) and image.size == (96, 72)
            assert sample["cls"] == index[sample["json"]["wnid"]]
    assert len(list(out.glob("train-*.tar"))) == 3  # 12 samples, 5 per shard


def test_hf_layout_loads_with_datasets_offline(labeled, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    import datasets

    export(labeled["workspace"], tmp_path / "out", ExportOptions(format="hf", val_per_class=2))
    rows = check_documents(tmp_path / "out")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded) == ["train", "validation"]
    for split, name in (("train", "train"), ("val", "validation")):
        got = sorted((record["sha256"], record["label"]) for record in loaded[name])
        assert got == sorted((row["sha256"], row["wnid"]) for row in rows if row["split"] == split)
        assert all(record["image"].size == (96, 72) for record in loaded[name])


def test_s3_blob_store_streams_into_webdataset(s3_workspace, tmp_path):
    import webdataset as wds

    data = LabeledData(s3_workspace)
    shas = {data.accepted(DOG, seed=n) for n in range(4)}
    result = export(s3_workspace, tmp_path / "out", ExportOptions(format="webdataset", val_fraction=0.0))
    samples = list(wds.WebDataset(str(tmp_path / "out" / "train-000000.tar"), shardshuffle=False).decode("pil"))
    assert {sample["json"]["sha256"] for sample in samples} == shas and result.files["copied"] == 4
    export(s3_workspace, tmp_path / "folder", ExportOptions(format="imagefolder"))
    assert len(list((tmp_path / "folder").rglob("*.jpg"))) == 4


@pytest.fixture
def s3_workspace(tmp_path, monkeypatch, s3_endpoint):
    """A workspace whose blob store is moto's S3 server on 127.0.0.1 (conftest's s3_endpoint)."""
    from imgnet_build.workspace import Workspace

    monkeypatch.setenv("IMGNET_S3_ENDPOINT_URL", s3_endpoint)
    workspace = Workspace.init(tmp_path / "ws", blobs="s3://imgs/ws")
    yield workspace
    workspace.close()


def test_resize_and_jpeg_reencode_only_when_asked(labeled, tmp_path):
    export(labeled["workspace"], tmp_path / "out", ExportOptions(resize=48, jpeg=True))
    for row in manifest(tmp_path / "out"):
        with PILImage.open(tmp_path / "out" / row["file"]) as image:
            assert image.format == "JPEG" and min(image.size) == 48 and row["file"].endswith(".jpg")
    result = export(labeled["workspace"], tmp_path / "big", ExportOptions(resize=500))
    assert result.files["reencoded"] == 0  # nothing is larger: files are linked as they are


def test_license_filter_and_class_limits(labeled, tmp_path):
    workspace, data = labeled["workspace"], labeled["data"]
    data.accepted(CAT, seed=70, license="CC BY-SA 2.0")
    data.accepted(CAT, seed=71, license="CC BY-SA 4.0")
    result = export(workspace, tmp_path / "a", ExportOptions(licenses="cc-by-sa"))
    assert sorted(row["license"] for row in manifest(tmp_path / "a")) == ["CC BY-SA 2.0", "CC BY-SA 4.0"]
    assert result.license_mismatch == 17 and result.license_unknown == 1
    result = export(workspace, tmp_path / "b", ExportOptions(min_per_class=2, max_per_class=5))
    assert result.left_out_categories == {HORSE: 1}
    assert {wnid: sum(c.values()) for wnid, c in result.classes.items()} == {CAT: 5, DOG: 5}
    assert result.capped == 3 + 5  # dogs 8, cats 10


def test_include_simulated(labeled, tmp_path):
    result = export(labeled["workspace"], tmp_path / "out", ExportOptions(include_simulated=True))
    simulated = [row for row in manifest(tmp_path / "out") if row["labeled_by"] == "simulated"]
    assert [row["sha256"] for row in simulated] == [labeled["shas"]["simulated"]] and result.simulated_left_out == 0
    assert "simulated crowd, not from people" in (tmp_path / "out" / "README.md").read_text()


def test_merged_clusters_follow_the_survivor_and_the_move_is_reported(any_workspace, tmp_path):
    data = LabeledData(any_workspace)
    shas = [data.accepted(DOG, seed=n) for n in range(12)]
    export(any_workspace, tmp_path / "a", ExportOptions(val_fraction=0.5))
    before = {row["sha256"]: row["split"] for row in manifest(tmp_path / "a")}
    train = next(sha for sha in shas if before[sha] == "train")
    val = next(sha for sha in shas if before[sha] == "val")
    survivor, merged = sorted([data.cluster_of(train), data.cluster_of(val)])
    with any_workspace.session() as session:  # what dedup does when new images join the two
        session.execute(update(Cluster).where(Cluster.id == merged).values(merged_into=survivor))
        session.execute(update(Image).where(Image.cluster_id == merged).values(cluster_id=survivor))
        session.execute(update(Label).where(Label.cluster_id == merged).values(status="rejected"))
        survivor_key = session.get(Cluster, survivor).key
        merged_key = session.get(Cluster, merged).key
    result = export(any_workspace, tmp_path / "b", ExportOptions(val_fraction=0.5))
    after = {row["sha256"]: row for row in manifest(tmp_path / "b")}
    assert before[merged_key] != before[survivor_key]
    assert result.moved == [{"cluster": merged_key, "from": before[merged_key], "to": before[survivor_key],
                             "merged_into": survivor_key}]
    assert {row["split"] for row in after.values() if row["cluster"] == survivor_key} == {before[survivor_key]}
    again = export(any_workspace, tmp_path / "c", ExportOptions(val_fraction=0.5))
    assert again.moved == []  # reported once


def test_out_is_refused_when_not_empty_and_replaced_with_overwrite(labeled, tmp_path, runner):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportTargetExists):
        export(labeled["workspace"], out, ExportOptions())
    assert (out / "keep.txt").read_text() == "mine"
    result = runner.invoke(cli, ["-w", str(labeled["workspace"].root), "export", str(out)])
    assert result.exit_code == 1
    assert result.output == f"Error: {out} exists and is not empty; choose another folder or add --overwrite\n"
    export(labeled["workspace"], out, ExportOptions(overwrite=True))
    assert not (out / "keep.txt").exists() and (out / "manifest.jsonl").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "ws"]


def test_a_failed_export_leaves_nothing_that_looks_complete(labeled, tmp_path, monkeypatch):
    from imgnet_build.exporters import imagefolder

    def broken(self, items, classes, out, writer):
        (out / "train").mkdir()
        raise OSError("disk full")

    monkeypatch.setattr(imagefolder.ImageFolder, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        export(labeled["workspace"], tmp_path / "out", ExportOptions())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ws"]


def test_verification_catches_leakage_and_missing_files(labeled, tmp_path):
    out = tmp_path / "out"
    export(labeled["workspace"], out, ExportOptions(val_per_class=2))
    lines = (out / "manifest.jsonl").read_text().splitlines()
    leaked = json.loads(lines[0]) | {"split": "val" if json.loads(lines[0])["split"] == "train" else "train"}
    (out / "manifest.jsonl").write_text("\n".join([*lines, json.dumps(leaked)]) + "\n")
    with pytest.raises(ExportFailed, match="are in both train and val"):
        verify_export(out)
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    (out / json.loads(lines[-1])["file"]).unlink()
    with pytest.raises(ExportFailed, match="is in the manifest but was not written"):
        verify_export(out)


def test_bad_options_name_the_fix(labeled, tmp_path, runner):
    with pytest.raises(BadInput, match="not both"):
        ExportOptions(val_fraction=0.1, val_per_class=5)
    with pytest.raises(BadInput, match="export to another folder"):
        export(labeled["workspace"], labeled["workspace"].root, ExportOptions(overwrite=True))
    result = runner.invoke(cli, ["-w", str(labeled["workspace"].root), "export", str(tmp_path / "o"), "--val-fraction", "1.5"])
    assert result.exit_code == 1 and result.output == "Error: --val-fraction 1.5 is not in [0, 1)\n"
    result = runner.invoke(cli, ["-w", str(labeled["workspace"].root), "export", str(tmp_path / "o"), "--license", ","])
    assert result.output.startswith("Error: --license ',' names no licence")


def test_cli_summary_and_json(labeled, tmp_path, runner):
    root = str(labeled["workspace"].root)
    result = runner.invoke(cli, ["-w", root, "export", str(tmp_path / "a"), "--val-per-class", "2", "--min-per-class", "2"])
    assert result.exit_code == 0, result.output
    splits = json.loads((tmp_path / "a" / "dataset.json").read_text())["counts"]["splits"]
    assert result.output.splitlines()[0] == (
        f"exported: 16 images ({splits['train']} train, {splits['val']} val) in 2 classes as imagefolder to {tmp_path / 'a'}; "
        "1 categories under --min-per-class left out; 1 without a known licence; "
        "1 simulated labels left out (--include-simulated)")
    assert result.output.splitlines()[1] == f"left out (under --min-per-class): {HORSE} (1)"
    result = runner.invoke(cli, ["-w", root, "export", str(tmp_path / "b"), "--format", "hf", "--json"])
    document = json.loads(result.output)
    assert document["images"] == 16 and document["format"] == "hf"
    assert {move["to"] for move in document["moved"]} <= {"train"}  # val-per-class 2 before, now 10%


def test_out_never_replaces_the_workspace_its_database_or_its_blobs(tmp_path, runner):
    """Before: with the database outside the workspace, `export DBFOLDER --overwrite` replaced the folder
    holding imgnet.db, and an OUT inside the blob store was accepted (a shard folder of blobs replaced)."""
    from imgnet_build.workspace import Workspace

    (tmp_path / "db").mkdir()
    database = tmp_path / "db" / "imgnet.db"
    workspace = Workspace.init(tmp_path / "ws", database=f"sqlite:///{database}")
    try:
        data = LabeledData(workspace)
        sha = data.accepted(DOG, seed=1)
        data.accepted(DOG, seed=2)
        blobs = workspace.blob_store.local_path("")
        shard = workspace.blob_store.local_path(f"{sha[:2]}/{sha[2:4]}/{sha}.jpg").parent
        for out, what in ((tmp_path / "db", "database"), (database, "database"), (tmp_path, "folder"),
                          (blobs, "blob store"), (shard, "blob store"), (blobs / "new", "blob store"),
                          (workspace.root, "folder"), (workspace.root / "imgnet.toml", "settings"), (Path("/"), "")):
            with pytest.raises(BadInput, match=f"the workspace's {what}" if what else "root of the filesystem"):
                export(workspace, out, ExportOptions(overwrite=True))
        result = runner.invoke(cli, ["-w", str(workspace.root), "export", str(tmp_path / "db"), "--overwrite"])
        assert result.exit_code == 1
        assert result.output == (f"Error: {tmp_path / 'db'} holds the workspace's database ({database}); "
                                 "export to another folder\n")
        assert database.is_file() and (shard / f"{sha}.jpg").is_file()
        with pytest.raises(BadInput, match="is inside the workspace's folder"):  # a new folder in it too
            export(workspace, workspace.root / "dataset", ExportOptions())
        assert not (workspace.root / "dataset").exists()
        export(workspace, tmp_path / "dataset", ExportOptions())
    finally:
        workspace.close()


def class_to_idx(root: Path) -> dict[str, int]:
    """torchvision's ImageFolder.find_classes: the sorted class folders, numbered from 0."""
    classes, _ = torchvision_image_folder(root)
    return {name: index for index, name in enumerate(classes)}


def test_val_numbers_the_classes_as_train_does(workspace, tmp_path):
    """Before: with the default split, small classes got no val image, val/ lacked their folders and
    ImageFolder numbered val's classes differently from train's: every val accuracy silently wrong."""
    data = LabeledData(workspace, size=(40, 30))
    wnids = [f"n0211{n}000" for n in range(6)]
    for number, wnid in enumerate(wnids):
        for image in range(3):
            data.accepted(wnid, seed=10 * number + image)
    result = export(workspace, tmp_path / "out", ExportOptions())
    train, val = class_to_idx(tmp_path / "out" / "train"), class_to_idx(tmp_path / "out" / "val")
    assert train == val and sorted(train) == wnids
    assert all(counts["val"] >= 1 and counts["train"] >= 1 for counts in result.classes.values())
    document = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert {c["wnid"]: c["index"] for c in document["classes"]} == train
    assert (tmp_path / "out" / "classes.txt").read_text().splitlines() == wnids


def test_a_class_that_cannot_be_in_both_splits_is_refused_by_name(workspace, tmp_path):
    data = LabeledData(workspace, size=(40, 30))
    for n in range(4):
        data.accepted(DOG, seed=n)
    data.accepted(HORSE, seed=9)
    with pytest.raises(BadInput, match=rf"cannot place 1 classes in both train and val: {HORSE} \(horse: 1 images"):
        export(workspace, tmp_path / "out", ExportOptions(min_per_class=1))
    assert not (tmp_path / "out").exists()
    result = export(workspace, tmp_path / "out", ExportOptions())  # the default leaves it out, and says so
    assert result.left_out_categories == {HORSE: 1} and list(result.classes) == [DOG]
    export(workspace, tmp_path / "no-val", ExportOptions(min_per_class=1, val_fraction=0.0))  # no val asked: fine


def test_exporting_nothing_says_why(workspace, tmp_path, runner):
    """Before: no accepted label (or only simulated ones) exported "0 images" with exit 0, and the retry
    then failed on the non-empty OUT."""
    root = str(workspace.root)
    result = runner.invoke(cli, ["-w", root, "export", str(tmp_path / "out")])
    assert result.exit_code == 1 and result.output.startswith("Error: nothing to export: no image has an accepted label")
    data = LabeledData(workspace, size=(40, 30))
    for n in range(3):
        data.accepted(DOG, seed=n, simulated=True)
    result = runner.invoke(cli, ["-w", root, "export", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output == ("Error: nothing to export: all 3 accepted labels come from the simulated crowd; "
                             "add --include-simulated to export them (the dataset card says so)\n")
    assert not (tmp_path / "out").exists()
    result = runner.invoke(cli, ["-w", root, "export", str(tmp_path / "out"), "--include-simulated", "--license", "cc0"])
    assert result.exit_code == 1 and "--license cc0 keeps none of the 3 accepted images (their licences: cc-by)" \
        in result.output
    assert runner.invoke(cli, ["-w", root, "export", str(tmp_path / "out"), "--include-simulated"]).exit_code == 0


def test_unknown_licence_codes_are_refused_with_the_known_ones(labeled, tmp_path, runner):
    """Before: `--license mit` was taken as a code and silently matched nothing."""
    result = runner.invoke(cli, ["-w", str(labeled["workspace"].root), "export", str(tmp_path / "o"), "--license",
                                 "cc-by,mit"])
    assert result.exit_code == 1
    assert result.output == ("Error: --license mit: unknown licence code; known codes: cc-by, cc-by-nc, cc-by-nc-nd, "
                             "cc-by-nc-sa, cc-by-nd, cc-by-sa, cc0, pdm, unknown\n")
    labeled["data"].accepted(CAT, seed=80, license="All Rights Reserved")
    labeled["data"].accepted(CAT, seed=81, license="All Rights Reserved")
    result = export(labeled["workspace"], tmp_path / "arr", ExportOptions(licenses="all-rights-reserved"))
    assert result.images == 2  # a code that this workspace's images carry is known too


def test_a_wnid_that_is_no_wordnet_id_writes_nothing_outside_out(workspace, tmp_path):
    """Before: a wnid of `../../escaped` (only reachable by writing the database) made folders outside OUT."""
    from imgnet_build.store import Category

    data = LabeledData(workspace, size=(40, 30))
    for n in range(3):
        data.accepted(DOG, seed=n)
    with workspace.session() as session:
        session.execute(update(Category).where(Category.wnid == DOG).values(wnid="../../escaped"))
    for format_ in ("imagefolder", "hf", "webdataset", "ilsvrc"):
        with pytest.raises(ExportFailed, match=r"'\.\./\.\./escaped', which is not a WordNet id"):
            export(workspace, tmp_path / "deep" / "out", ExportOptions(format=format_))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ws"]  # checked before anything is written


def test_every_path_component_under_out_is_checked(workspace, tmp_path):
    from imgnet_build.exporters.files import FileWriter

    writer = FileWriter(workspace.blob_store, frozenset({"JPEG"}), "JPEG", root=tmp_path / "partial", shown=tmp_path / "out")
    assert writer.path("train/n02084071/a.jpg") == str(tmp_path / "partial" / "train" / "n02084071" / "a.jpg")
    for bad in ("../x.jpg", "train/../../x", "/etc/passwd", "train//x", "train/./x", "a\\b", ""):
        with pytest.raises(ExportFailed, match="not a plain path inside"):
            writer.path(bad)


def test_hf_labels_are_a_class_label(labeled, tmp_path, monkeypatch):
    """Before: load_dataset gave the wnid strings as labels, with no ClassLabel feature."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    import datasets

    export(labeled["workspace"], tmp_path / "out", ExportOptions(format="hf", val_per_class=2))
    rows = check_documents(tmp_path / "out")
    loaded = datasets.load_dataset(str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    names = (tmp_path / "out" / "classes.txt").read_text().splitlines()
    assert sorted(loaded) == ["train", "validation"] and names == sorted([DOG, CAT])
    for split, name in (("train", "train"), ("val", "validation")):
        label = loaded[name].features["label"]
        assert isinstance(label, datasets.ClassLabel) and label.names == names
        got = sorted((record["sha256"], record["label"]) for record in loaded[name])
        assert got == sorted((row["sha256"], names.index(row["wnid"])) for row in rows if row["split"] == split)


class ClusterWriteBlocker:
    """Another client holding the lock an export's record needs, longer than the workspace waits for it:
    SQLite's write lock past a 200 ms busy timeout, or PostgreSQL's lock on the cluster table (reads still
    pass) past a 200 ms lock_timeout."""

    def __init__(self, workspace) -> None:
        from sqlalchemy import event

        self.sqlite = workspace._sqlite_path()
        event.listen(workspace.engine, "connect", self._wait_briefly)
        workspace.engine.dispose()  # new connections wait 200 ms
        if self.sqlite is not None:
            import sqlite3

            self.blocker = sqlite3.connect(self.sqlite, isolation_level=None)
        else:
            import psycopg

            self.blocker = psycopg.connect(workspace.engine.url.set(drivername="postgresql")
                                           .render_as_string(hide_password=False), autocommit=True)

    def _wait_briefly(self, connection, _record) -> None:
        if self.sqlite is not None:
            connection.execute("PRAGMA busy_timeout=200")
        else:
            connection.execute("SET lock_timeout = '200ms'")
            connection.commit()

    def hold(self) -> None:
        self.blocker.execute("BEGIN IMMEDIATE" if self.sqlite else "BEGIN")
        if not self.sqlite:
            self.blocker.execute("LOCK TABLE cluster IN EXCLUSIVE MODE")

    def release(self) -> None:
        self.blocker.execute("ROLLBACK")


def test_an_export_that_cannot_be_recorded_leaves_out_as_it_was(workspace, tmp_path):
    """Before: with the database locked, the export put a complete OUT in place, then failed to record it:
    no export row, no recorded split, and the rerun refused the non-empty OUT."""
    data = LabeledData(workspace, size=(40, 30))
    for n in range(4):
        data.accepted(DOG, seed=n)
    out = tmp_path / "out"
    blocker = ClusterWriteBlocker(workspace)
    blocker.hold()
    try:
        with pytest.raises(ExportFailed, match=f"could not be recorded .*(database is locked|lock timeout).*{out} "
                                               "is as it was"):
            export(workspace, out, ExportOptions())
        assert sorted(path.name for path in tmp_path.iterdir()) == ["ws"]
    finally:
        blocker.release()
    first = export(workspace, out, ExportOptions())  # the rerun just works
    blocker.hold()
    try:
        with pytest.raises(ExportFailed, match="could not be recorded"):
            export(workspace, out, ExportOptions(overwrite=True, seed=5))
    finally:
        blocker.release()
        blocker.blocker.close()
    assert json.loads((out / "dataset.json").read_text())["manifest_sha256"] == first.manifest_sha256
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "ws"]
    with workspace.session() as session:
        assert len(session.scalars(select(Export)).all()) == 1
        assert set(session.scalars(select(Cluster.split))) == {"train", "val"}


def test_unfinished_exports_beside_out_are_removed_and_reported(labeled, tmp_path, runner):
    """Before: hidden .OUT.partial-* folders of killed exports stayed forever."""
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    for name in (f".out.partial-{gone.pid}-abc", ".out.partial-x1y2", f".out.old-{gone.pid}-q",
                 f".out.partial-{os.getppid()}-live", ".other.partial-1-z"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.jsonl").write_text("")
    result = runner.invoke(cli, ["-w", str(labeled["workspace"].root), "export", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (f"removed 3 unfinished exports left beside it by killed runs; left .out.partial-{os.getppid()}-live "
            "alone: its export is still running") in result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [".other.partial-1-z", f".out.partial-{os.getppid()}-live", "out", "ws"])


@pytest.mark.parametrize("format_", ["imagefolder", "webdataset"])
def test_a_write_that_fails_names_the_file_in_out(workspace, tmp_path, format_):
    """Before: a full disk named the source blob (blobs/88/67/….jpg), and webdataset no path at all. A file
    size limit (RLIMIT_FSIZE, no root needed) makes the writes fail as a full disk does."""
    import resource
    import signal
    import subprocess
    import sys

    data = LabeledData(workspace, size=(320, 240))
    for n in range(3):
        data.accepted(DOG, seed=n)
        data.accepted(CAT, seed=10 + n)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death, as ENOSPC would come
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))

    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", "from imgnet_build.cli.main import main; main()", "-w",
                           str(workspace.root), "export", str(out), "--copy", "--format", format_],
                          preexec_fn=limit, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    where = rf"{out}/(train|val)/n\d+/[0-9a-f]{{64}}\.jpg" if format_ == "imagefolder" else rf"{out}/(train|val)-000000\.tar"
    assert re.fullmatch(rf"Error: cannot write {where}: File too large; nothing was exported\n", done.stderr)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ws"]
