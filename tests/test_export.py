"""Exports read back by their users' readers, and what every export promises."""

from __future__ import annotations

import json
import os
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
    assert {sha for sha, _ in exported} == set(shas["dogs"] + shas["cats"] + shas["horse"] + [shas["unlicensed"]])
    assert (shas["shared"], CAT) in exported and (shas["shared"], DOG) in exported
    assert result.simulated_left_out == 1 and result.license_unknown == 1 and result.images == 17
    assert {wnid: sum(counts.values()) for wnid, counts in result.classes.items()} == {CAT: 8, DOG: 8, HORSE: 1}
    assert result.classes[HORSE]["val"] == 0 and result.classes[DOG]["val"] >= 2 and result.classes[CAT]["val"] >= 2
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
    assert linked.stat().st_ino == blob.stat().st_ino and result.files["linked"] == 17


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
    assert mapping == [f"{DOG} dog, domestic dog", f"{CAT} domestic cat, house cat", f"{HORSE} horse, Equus caballus"]
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
    result = export(workspace, tmp_path / "a", ExportOptions(licenses="cc-by-sa"))
    assert [row["license"] for row in manifest(tmp_path / "a")] == ["CC BY-SA 2.0"]
    assert result.license_mismatch == 17 and result.license_unknown == 1
    result = export(workspace, tmp_path / "b", ExportOptions(min_per_class=2, max_per_class=5))
    assert result.left_out_categories == {HORSE: 1}
    assert {wnid: sum(c.values()) for wnid, c in result.classes.items()} == {CAT: 5, DOG: 5}
    assert result.capped == 3 + 4  # dogs 8, cats 9


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
    assert document["images"] == 17 and document["format"] == "hf"
    assert {move["to"] for move in document["moved"]} <= {"train"}  # val-per-class 2 before, now 10%
