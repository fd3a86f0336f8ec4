"""One library API: every stage `imgnet_build` exports has the one shape (issue 15 item 2).

    stage(workspace: Workspace, [what it works on,] settings, *, progress=None) -> Result

and every result prints itself two ways: `as_dict()` (what --json prints) and `summary()`.
"""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pytest

import imgnet_build
from imgnet_build.stage import Progress, Result
from imgnet_build.workspace import Workspace

ROOT = Path(imgnet_build.__file__).resolve().parent
# The stages of issue 15, by their public names: each must be exported.
STAGES = ["workspace_status", "build_tree", "show_tree", "export_tree", "gather_images", "fetch_pending", "list_candidates",
          "find_duplicates", "label_submit", "label_collect", "label_run", "label_expire", "label_gold", "label_status", "export_dataset", "write_report"]


def public_functions() -> list[str]:
    return [name for name in imgnet_build.__all__ if inspect.isfunction(getattr(imgnet_build, name))]


def test_every_stage_is_exported():
    missing = [name for name in STAGES if name not in imgnet_build.__all__]
    assert not missing, f"export these from imgnet_build/__init__.py: {missing}"
    assert set(STAGES) <= set(public_functions())


def test_every_exported_name_resolves_and_type_checkers_see_the_same_table():
    for name in imgnet_build.__all__:
        assert getattr(imgnet_build, name) is not None
    tree = ast.parse((ROOT / "__init__.py").read_text())
    checked = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.If)
               for statement in node.body if isinstance(statement, ast.ImportFrom) for alias in statement.names}
    assert checked == set(imgnet_build.__all__) - {"ImgnetError", "__version__"} == set(imgnet_build._PUBLIC)


@pytest.mark.parametrize("name", public_functions())
def test_a_stage_takes_the_workspace_first_and_returns_a_result(name):
    function = getattr(imgnet_build, name)
    hints = typing.get_type_hints(function)
    parameters = list(inspect.signature(function).parameters.values())
    assert parameters[0].name == "workspace" and hints["workspace"] is Workspace, \
        f"{name}: the first parameter must be `workspace: Workspace`"
    returned = hints["return"]
    assert inspect.isclass(returned) and issubclass(returned, Result), \
        f"{name} returns {returned}: a result with as_dict() and summary()"
    for parameter in parameters:
        if "progress" in parameter.name:
            assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: {parameter.name} is keyword-only"
            assert hints[parameter.name] == Progress | None, f"{name}: {parameter.name} is a Progress"
        if parameter.name == "session" or "Session" in str(hints.get(parameter.name, "")):
            pytest.fail(f"{name} takes a database session: the library opens its own")



def test_the_stages_run_from_the_package_and_print_themselves_both_ways(workspace, tmp_path):
    """A corgi tree through `imgnet_build`'s names alone: every result is a JSON document and a text."""
    import io
    import json

    imgnet = imgnet_build
    results = [
        imgnet.build_tree(workspace, imgnet.TreeOptions(roots=("corgi.n.01",))),
        imgnet.show_tree(workspace, "corgi.n.01"),
        imgnet.export_tree(workspace, "txt", io.StringIO()),
        imgnet.workspace_status(workspace),
        imgnet.list_candidates(workspace, category="corgi.n.01"),
        imgnet.find_duplicates(workspace),
        imgnet.label_submit(workspace, "local", imgnet.LabelSettings(), dry_run=True),
        imgnet.label_collect(workspace),
        imgnet.label_expire(workspace),
        imgnet.label_status(workspace),
    ]
    for result in results:
        assert isinstance(result, imgnet.Result)
        json.dumps(result.as_dict())
        assert isinstance(result.summary(), str)
    assert results[0].summary() == "tree: 3 categories, 2 edges (3 added, 0 removed, 0 kept)"
    assert results[1].summary().splitlines()[0] == "corgi (n02112826): 2 below"
    assert results[2].as_dict() == {"format": "txt", "categories": 3}
    assert results[7]["accepted"] == results[7].as_dict()["accepted"] == 0  # read as the dict it replaced
