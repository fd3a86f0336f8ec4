"""imgnet-build: make an ImageNet-style image dataset from WordNet.

The public surface: every stage is `stage(workspace, [what it works on,] settings, *,
progress=None) -> Result`, and every result prints itself two ways, `as_dict()` (what
`--json` prints) and `summary()` (the CLI's text); see `imgnet_build.stage`.

    import imgnet_build as imgnet

    workspace = imgnet.Workspace.init("ws")
    print(imgnet.build_tree(workspace, imgnet.TreeOptions(roots=("dog.n.01",))).summary())
    print(imgnet.find_duplicates(workspace).summary())

Names are imported when first used: the stages import heavy libraries (numpy, Pillow,
matplotlib) that `import imgnet_build` alone should not load.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from imgnet_build.errors import ImgnetError

__version__ = "0.1.0"

if TYPE_CHECKING:  # the same table as _PUBLIC, for type checkers
    from imgnet_build.dedup import run as find_duplicates
    from imgnet_build.fetch import FetchSettings, fetch_pending
    from imgnet_build.gather import gather as gather_images
    from imgnet_build.gather import list_candidates
    from imgnet_build.labeling.gold import load_gold as label_gold
    from imgnet_build.labeling.rounds import LabelSettings
    from imgnet_build.labeling.rounds import collect as label_collect
    from imgnet_build.labeling.rounds import expire as label_expire
    from imgnet_build.labeling.rounds import run as label_run
    from imgnet_build.labeling.rounds import submit as label_submit
    from imgnet_build.labeling.status import label_status
    from imgnet_build.report import ReportOptions, write_report
    from imgnet_build.split import ExportOptions
    from imgnet_build.split import export as export_dataset
    from imgnet_build.stage import Progress, Result
    from imgnet_build.taxonomy import TreeOptions, build_tree, export_tree, show_tree
    from imgnet_build.workspace import Workspace, workspace_status

# public name -> (module, name there), in pipeline order
_PUBLIC: dict[str, tuple[str, str]] = {
    "Workspace": ("imgnet_build.workspace", "Workspace"),
    "Progress": ("imgnet_build.stage", "Progress"),
    "Result": ("imgnet_build.stage", "Result"),
    "workspace_status": ("imgnet_build.workspace", "workspace_status"),
    "TreeOptions": ("imgnet_build.taxonomy", "TreeOptions"),
    "build_tree": ("imgnet_build.taxonomy", "build_tree"),
    "show_tree": ("imgnet_build.taxonomy", "show_tree"),
    "export_tree": ("imgnet_build.taxonomy", "export_tree"),
    "FetchSettings": ("imgnet_build.fetch", "FetchSettings"),
    "gather_images": ("imgnet_build.gather", "gather"),
    "fetch_pending": ("imgnet_build.fetch", "fetch_pending"),
    "list_candidates": ("imgnet_build.gather", "list_candidates"),
    "find_duplicates": ("imgnet_build.dedup", "run"),
    "LabelSettings": ("imgnet_build.labeling.rounds", "LabelSettings"),
    "label_submit": ("imgnet_build.labeling.rounds", "submit"),
    "label_collect": ("imgnet_build.labeling.rounds", "collect"),
    "label_run": ("imgnet_build.labeling.rounds", "run"),
    "label_expire": ("imgnet_build.labeling.rounds", "expire"),
    "label_gold": ("imgnet_build.labeling.gold", "load_gold"),
    "label_status": ("imgnet_build.labeling.status", "label_status"),
    "ExportOptions": ("imgnet_build.split", "ExportOptions"),
    "export_dataset": ("imgnet_build.split", "export"),
    "ReportOptions": ("imgnet_build.report", "ReportOptions"),
    "write_report": ("imgnet_build.report", "write_report"),
}

__all__ = [  # _PUBLIC's names (tests/test_library_api.py keeps the three lists equal)
    "ImgnetError", "__version__", "Workspace", "Progress", "Result", "workspace_status",
    "TreeOptions", "build_tree", "show_tree", "export_tree",
    "FetchSettings", "gather_images", "fetch_pending", "list_candidates",
    "find_duplicates",
    "LabelSettings", "label_submit", "label_collect", "label_run", "label_expire", "label_gold", "label_status",
    "ExportOptions", "export_dataset",
    "ReportOptions", "write_report",
]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'imgnet_build' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
