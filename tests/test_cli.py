"""The CLI contract: exact output, exit codes, help on every command."""

from __future__ import annotations

import csv
import io
import json

import click
import pytest

from imgnet_build.cli.main import cli
from imgnet_build.schemas import validate


def invoke(runner, *args):
    return runner.invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def ws(runner, tmp_path):
    path = tmp_path / "ws"
    result = invoke(runner, "init", str(path))
    assert result.exit_code == 0, result.output
    return str(path)


def _all_commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in _all_commands(cli)], ids=" ".join)
def test_every_command_has_help(runner, path):
    result = invoke(runner, *path, "--help")
    assert result.exit_code == 0
    command = cli
    for name in path:
        command = command.commands[name]
    assert command.help and len(command.help.strip().splitlines()[0]) > 10
    if not isinstance(command, click.Group):
        assert "Example:" in command.help, f"{' '.join(path)} has no example in its help"


def test_init_output(runner, tmp_path):
    result = invoke(runner, "init", str(tmp_path / "new"))
    assert result.exit_code == 0
    assert result.output == f"Created workspace {tmp_path / 'new'} (database sqlite:///{tmp_path / 'new' / 'imgnet.db'})\n"
    again = invoke(runner, "init", str(tmp_path / "new"))
    assert again.exit_code == 1
    assert again.output == f"Error: {tmp_path / 'new'} is already a workspace; use it with: imgnet -w {tmp_path / 'new'} status\n"


def test_errors_are_one_line_and_exit_1(runner, ws, tmp_path):
    cases = [
        (["-w", str(tmp_path / "nope"), "status"],
         f"Error: workspace {tmp_path / 'nope'} does not exist; create it with: imgnet init {tmp_path / 'nope'} "
         "(or name an existing one with -w DIR or IMGNET_WORKSPACE)\n"),
        (["-w", str(tmp_path), "status"],
         f"Error: {tmp_path} is not a workspace (no imgnet.toml); create one with: imgnet init {tmp_path} "
         "(or name an existing one with -w DIR or IMGNET_WORKSPACE)\n"),
        (["-w", ws, "tree", "build", "--root", "run.v.01"],
         "Error: run.v.01 is a verb synset; categories are noun synsets (e.g. dog.n.01)\n"),
        (["-w", ws, "tree", "build", "--root", "happy.a.01"],
         "Error: happy.a.01 is an adjective synset; categories are noun synsets (e.g. dog.n.01)\n"),
        (["-w", ws, "tree", "build", "--root", "n99999999"], "Error: unknown synset 'n99999999'\n"),
        (["-w", ws, "tree", "build", "--root", "canis.n.01"],
         "Error: canis.n.01 (n02083863) is not imageable: it is not below any visible root (object.n.01, food.n.01, "
         "food.n.02, sign.n.02, visual_signal.n.01, globule.n.01, paper.n.01)\n"),
        (["-w", ws, "tree", "show"], "Error: the tree is empty; build it with: imgnet tree build\n"),
        (["init", str(tmp_path / "pg"), "--database", "postgresql+psycopg://127.0.0.1:9/none"],
         None),
    ]
    for args, expected in cases:
        result = invoke(runner, *args)
        assert result.exit_code == 1, (args, result.output)
        if expected is not None:
            assert result.output == expected
        else:
            assert result.output.startswith("Error: cannot connect to database postgresql+psycopg://127.0.0.1:9/none")
            assert result.output.count("\n") == 1
        assert "Traceback" not in result.output


def test_wrong_option_is_a_usage_error(runner, ws):
    result = invoke(runner, "-w", ws, "tree", "export", "--format", "xml")
    assert result.exit_code == 2
    assert "Invalid value for '--format'" in result.output


def test_tree_build_show_export(runner, ws, tmp_path):
    result = invoke(runner, "-w", ws, "tree", "build", "--root", "corgi.n.01")
    assert result.output == "tree: 3 categories, 2 edges (3 added, 0 removed, 0 kept)\n"
    assert invoke(runner, "-w", ws, "tree", "show").output == (
        "corgi (n02112826): 2 below\n  Pembroke (n02113023): 0 below\n  Cardigan (n02113186): 0 below\n")
    assert invoke(runner, "-w", ws, "tree", "show", "--root", "n02112826", "--depth", "0").output == (
        "corgi (n02112826): 2 below\n")
    assert invoke(runner, "-w", ws, "tree", "export", "--format", "txt").output == (
        "n02112826 corgi, Welsh corgi\nn02113023 Pembroke, Pembroke Welsh corgi\n"
        "n02113186 Cardigan, Cardigan Welsh corgi\n")
    documents = json.loads(invoke(runner, "-w", ws, "tree", "export").output)
    validate(documents, "tree")
    assert documents[1] == {"wnid": "n02113023", "name": "Pembroke", "lemmas": ["Pembroke", "Pembroke Welsh corgi"],
                            "gloss": "the smaller and straight-legged variety of corgi having pointed ears and a short tail",
                            "parents": ["n02112826"], "depth": 1}
    rows = list(csv.DictReader(io.StringIO(invoke(runner, "-w", ws, "tree", "export", "--format", "csv").output)))
    assert rows[0]["lemmas"] == "corgi|Welsh corgi" and rows[2]["parents"] == "n02112826"
    out = tmp_path / "map.txt"
    assert invoke(runner, "-w", ws, "tree", "export", "--format", "txt", "-o", str(out)).exit_code == 0
    assert out.read_text().startswith("n02112826 corgi, Welsh corgi\n")


def test_status_json_and_text(runner, ws):
    invoke(runner, "-w", ws, "tree", "build", "--root", "corgi.n.01")
    data = json.loads(invoke(runner, "-w", ws, "status", "--json").output)
    assert data["categories"] == 3 and data["edges"] == 2
    text = invoke(runner, "-w", ws, "status").output
    assert "categories:  3\n" in text


def test_workspace_from_environment(runner, ws, monkeypatch):
    monkeypatch.setenv("IMGNET_WORKSPACE", ws)
    assert invoke(runner, "status", "--json").exit_code == 0


@pytest.mark.slow
def test_whole_wordnet_export_with_people(runner, ws):
    assert invoke(runner, "-w", ws, "tree", "build", "--include-people").exit_code == 0
    documents = json.loads(invoke(runner, "-w", ws, "tree", "export", "--format", "json").output)
    validate(documents, "tree")
    wnids = {d["wnid"] for d in documents}
    assert len(documents) > 30_000
    assert {"n01440764", "n01443537", "n06794110", "n06874185", "n09229709", "n03590841", "n09472597",
            "n10565667"} <= wnids
    assert not {"n05819453", "n13987423", "n15164957", "n02083863"} & wnids  # truth, happiness, monday, canis
