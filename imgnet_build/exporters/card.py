"""The documents every export carries, whatever its layout: a manifest line per image,
`dataset.json` (schemas/manifest.schema.json, schemas/dataset.schema.json), `classes.txt`
(the class index: line n + 1 holds the wnid of class n, as every layout numbers them) and
README.md, the dataset card. None of them holds a timestamp: the same input gives the same
bytes. The counts come from a `Tally` the items pass through as they are written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from imgnet_build import __version__
from imgnet_build.exporters import ClassInfo, Item
from imgnet_build.licenses import UNKNOWN, license_code

__all__ = ["manifest_row", "Tally", "dataset_document", "classes_text", "render_card"]


class Tally:
    """Counts of the written items, by class and split, licence, labeler and method (small: per class)."""

    def __init__(self) -> None:
        self.per_class: Counter = Counter()
        self.splits: Counter = Counter()
        self.licenses: Counter = Counter()
        self.methods: Counter = Counter()
        self.simulated = 0
        self.images = 0

    def add(self, item: Item) -> None:
        self.per_class[item.wnid, item.split] += 1
        self.splits[item.split] += 1
        self.licenses[license_code(item.license) or UNKNOWN] += 1
        self.methods[item.method] += 1
        self.simulated += item.simulated
        self.images += 1


def manifest_row(item: Item, file: str) -> dict:
    return {"sha256": item.sha256, "cluster": item.cluster, "split": item.split, "wnid": item.wnid, "file": file,
            "source_url": item.source_url, "license": item.license, "attribution": item.attribution,
            "label_method": item.method, "confidence": item.confidence, "yes_votes": item.yes_votes,
            "no_votes": item.no_votes, "labeled_by": "simulated" if item.simulated else "human"}


def dataset_document(tally: Tally, clusters: int, classes: Sequence[ClassInfo], parameters: dict,
                     workspace_digest: str, manifest_sha256: str, left_out: dict[str, int], license_unknown: int,
                     license_mismatch: int, simulated_left_out: int) -> dict:
    return {
        "version": 1,
        "tool": {"name": "imgnet-build", "version": __version__},
        "format": parameters["format"],
        "parameters": parameters,
        "workspace_digest": workspace_digest,
        "manifest_sha256": manifest_sha256,
        "counts": {"images": tally.images, "clusters": clusters, "classes": len(classes),
                   "splits": {"train": tally.splits["train"], "val": tally.splits["val"]}},
        "classes": [{"wnid": info.wnid, "name": info.name, "index": info.index,
                     "train": tally.per_class[info.wnid, "train"], "val": tally.per_class[info.wnid, "val"]}
                    for info in classes],
        "licenses": dict(sorted(tally.licenses.items())),
        "labels": {"human": tally.images - tally.simulated, "simulated": tally.simulated,
                   "methods": dict(sorted(tally.methods.items()))},
        "left_out": {"categories_under_min": left_out, "license_mismatch": license_mismatch,
                     "license_unknown": license_unknown, "simulated_labels": simulated_left_out},
    }


def classes_text(classes: Sequence[ClassInfo]) -> str:
    """classes.txt: one wnid per line, line n + 1 for class index n."""
    return "".join(f"{info.wnid}\n" for info in sorted(classes, key=lambda info: info.index))


def render_card(document: dict, header: str = "") -> str:
    """README.md: what the dataset is, how it was made, its counts, licences and known limits;
    `header` goes first (the hf layout's YAML front matter)."""
    counts, parameters, labels = document["counts"], document["parameters"], document["labels"]
    rule = (f"the {parameters['val_per_class']} clusters per class with the smallest hash" if parameters["val_per_class"]
            is not None else f"clusters whose hash falls under {parameters['val_fraction']} (and at least one per class, "
            "while each class keeps one for train)")
    lines = [
        "# Image classification dataset (imgnet-build)", "",
        f"{counts['images']} images in {counts['classes']} WordNet noun classes: {counts['splits']['train']} train, "
        f"{counts['splits']['val']} val, in the `{document['format']}` layout. Made with imgnet-build "
        f"{document['tool']['version']}, the way ImageNet was: categories from WordNet, candidate images from "
        "image searches and URL lists, exact and near duplicates removed, and every image judged by several "
        "people (\"does this image contain a …?\") until a consensus was confident.", "",
        "## How it was made", "",
        "- Only images whose label was *accepted* by consensus; one image per duplicate cluster.",
        f"- Split: a keyed hash of each duplicate cluster's identity and the seed ({parameters['seed']}); val holds "
        f"{rule}. A whole cluster (exact and near duplicates) is always in one split, and labeling more images "
        "later does not move the images already placed.",
        f"- Labels: {labels['human']} by people, {labels['simulated']} by a simulated crowd; methods: "
        + ", ".join(f"{method} ({n})" for method, n in labels["methods"].items()) + ".",
        "- `manifest.jsonl`: one line per image (sha256, split, wnid, file, source URL, licence, attribution, "
        "label method, confidence, yes/no votes, labeled by); `dataset.json`: parameters and counts; "
        "`classes.txt`: the class index (line n + 1 is class n, in every layout and both splits).", "",
        "## Classes", "", "| index | wnid | name | train | val |", "|---:|---|---|---:|---:|",
        *(f"| {c['index']} | {c['wnid']} | {c['name']} | {c['train']} | {c['val']} |" for c in document["classes"]),
        "", "## Licences", "", "| licence | images |", "|---|---:|",
        *(f"| {code} | {n} |" for code, n in document["licenses"].items()), "",
        "Every image keeps its own licence and attribution (manifest.jsonl); respect them when you share it.", "",
        "## Known limits", "",
    ]
    left_out = document["left_out"]
    limits = []
    if labels["simulated"]:
        limits.append(f"{labels['simulated']} labels come from a simulated crowd, not from people: "
                      "this dataset demonstrates the pipeline, it is not ground truth.")
    if document["licenses"].get(UNKNOWN):
        limits.append(f"{document['licenses'][UNKNOWN]} images have no known licence.")
    if left_out["categories_under_min"]:
        limits.append(f"{len(left_out['categories_under_min'])} categories had fewer than "
                      f"{parameters['min_per_class']} images and were left out: "
                      + ", ".join(left_out["categories_under_min"]) + ".")
    if left_out["license_mismatch"]:
        limits.append(f"{left_out['license_mismatch']} images were left out by the licence filter.")
    limits += ["Near duplicates are found by perceptual hash: heavy crops, mirror images and rotations of one "
               "photo can remain, also across splits.",
               "Images come from web searches: what is in them reflects what those sources show for each word."]
    lines += [f"- {limit}" for limit in limits]
    return header + "\n".join(lines) + "\n"
