"""The CLI contract: exact output, exit codes, help on every command."""

from __future__ import annotations

import csv
import io
import json
import os

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
    context = click.Context(group)
    for name in group.list_commands(context):  # imports the lazy commands' modules
        command = group.get_command(context, name)
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in _all_commands(cli)], ids=" ".join)
def test_every_command_has_help(runner, path):
    result = invoke(runner, *path, "--help")
    assert result.exit_code == 0
    command = dict(_all_commands(cli))[path]
    assert command.help and len(command.help.strip().splitlines()[0]) > 10
    if not isinstance(command, click.Group):
        assert "Example:" in command.help, f"{' '.join(path)} has no example in its help"


def test_help_lists_every_command_by_the_first_line_of_its_help(runner):
    """`imgnet --help` takes the lines of the commands it does not import from cli/main.py's COMMANDS:
    each is its command's own first line, and the listing is what click makes from the commands."""
    import inspect

    from imgnet_build.cli.common import LazyGroup
    from imgnet_build.cli.main import COMMANDS

    commands = {path[0]: command for path, command in _all_commands(cli) if len(path) == 1}
    for name, (_, _, line) in COMMANDS.items():
        assert line == inspect.cleandoc(commands[name].help or "").splitlines()[0], name
    lazy = LazyGroup("imgnet", commands={name: commands[name] for name in commands if name not in COMMANDS},
                     lazy=cli.lazy)  # as `imgnet` starts: nothing of COMMANDS imported
    loaded = click.Group("imgnet", commands=commands)
    listed = [runner.invoke(group, ["--help"]).output.split("Commands:")[1] for group in (lazy, loaded)]
    assert listed[0] == listed[1] and "dedup       Find exact and near duplicate images" in listed[0]
    assert not lazy.commands.keys() & COMMANDS.keys()  # listing them imported none


def _imported(arguments: list[str], cwd) -> set[str]:
    """The modules an `imgnet` process had loaded when its command finished."""
    import subprocess
    import sys

    code = ("import atexit, sys\n"
            "atexit.register(lambda: sys.stderr.write('MODULES ' + ' '.join(sorted(sys.modules)) + '\\n'))\n"
            "from imgnet_build.cli.main import main\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return set(done.stderr.rsplit("MODULES ", 1)[1].split())


def test_a_command_imports_only_what_it_needs(ws, tmp_path):
    """Issue 16: every command imported every command's module (scipy among them, seconds of start-up);
    now `imgnet --help` loads no database or numeric library, and `status` and a `dedup` with nothing
    new load no numpy, scipy or Pillow."""
    heavy = {"numpy", "scipy", "PIL", "imagehash", "matplotlib", "flask", "boto3"}
    assert not (heavy | {"sqlalchemy"}) & _imported(["--help"], tmp_path)
    for command in (["status"], ["dedup"], ["dedup"]):  # the second dedup has nothing new
        assert not heavy & _imported(["-w", ws, *command], tmp_path), command


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


# -- issue 14 items 16-18 and issue 15 item 4 ------------------------------------------------


def _corgi_images(ws: str) -> None:
    """Images gathered for corgi (1) and Cardigan (2; one of them also for Pembroke)."""
    from imgnet_build.store import Candidate, Category, Image
    from imgnet_build.workspace import Workspace

    workspace = Workspace.open(ws)
    with workspace.session() as session:
        ids = {category.wnid: category.id for category in session.query(Category)}
        for sha in ("a" * 64, "b" * 64, "c" * 64):
            session.add(Image(sha256=sha, width=64, height=64, format="JPEG", bytes=10, blob_key=f"{sha}.jpg"))
        session.flush()
        for wnid, sha in (("n02112826", "a"), ("n02113186", "b"), ("n02113186", "c"), ("n02113023", "c")):
            session.add(Candidate(category_id=ids[wnid], source="test", url=f"https://example.org/{wnid}/{sha}.jpg",
                                  status="ok", image_sha256=sha * 64, rank=1))
    workspace.close()


def test_tree_show_gives_subtree_totals_and_json(runner, ws):
    """Item 18: a node shows its own images and its subtree's (the old line was `corgi: 2 below, 1 images`)."""
    invoke(runner, "-w", ws, "tree", "build", "--root", "corgi.n.01")
    _corgi_images(ws)
    assert invoke(runner, "-w", ws, "tree", "show").output == (
        "corgi (n02112826): 2 below, 1 images here, 4 in the subtree\n"
        "  Pembroke (n02113023): 0 below, 1 images here, 1 in the subtree\n"
        "  Cardigan (n02113186): 0 below, 2 images here, 2 in the subtree\n")
    rows = json.loads(invoke(runner, "-w", ws, "tree", "show", "--json", "--depth", "0").output)
    assert rows == [{"wnid": "n02112826", "name": "corgi", "level": 0, "below": 2, "images": 1, "subtree_images": 4}]
    assert json.loads(invoke(runner, "-w", ws, "tree", "export", "--json").output)[0]["wnid"] == "n02112826"


def test_synset_arguments_resolve_one_way_with_suggestions(runner, ws):
    """Item 17: `--root guitar` suggests guitar.n.01; tree show, candidates and label take wnids and names alike."""
    result = invoke(runner, "-w", ws, "tree", "build", "--root", "guitar")
    assert result.exit_code == 1
    assert result.output == "Error: 'guitar' is not a synset; did you mean guitar.n.01?\n"
    invoke(runner, "-w", ws, "tree", "build", "--root", "corgi.n.01")
    for spec in ("cardigan.n.02", "n02113186"):
        assert invoke(runner, "-w", ws, "tree", "show", "--root", spec).output == "Cardigan (n02113186): 0 below\n"
    for args in (("tree", "show", "--root"), ("candidates", "--category")):
        result = invoke(runner, "-w", ws, *args, "dog.n.01")
        assert (result.exit_code, result.output) == (
            1, "Error: dog.n.01 (n02084071): not in this workspace's tree (see imgnet tree show)\n")
    result = invoke(runner, "-w", ws, "candidates", "--category", "corgi")
    assert result.output == "Error: 'corgi' is not a synset; did you mean corgi.n.01?\n"


def test_help_names_only_options_the_command_has(runner):
    """Item 17: `label collect --help` and `label expire --help` mentioned --max-cost, which they lack."""
    for command in ("collect", "expire"):
        text = invoke(runner, "label", command, "--help").output
        assert "--max-cost" not in text, command
    assert "--max-cost" in invoke(runner, "label", "submit", "--help").output


def test_invite_and_revoke_strip_the_name_alike(runner, ws):
    """Item 17: `label invite "  carol  "` made carol; `label revoke "  carol  "` then failed."""
    assert invoke(runner, "-w", ws, "label", "invite", "  carol  ").output.startswith("Invite link for carol:\n")
    result = invoke(runner, "-w", ws, "label", "revoke", "  carol  ")
    assert (result.exit_code, result.output) == (0, "Revoked carol's invite link\n")


def test_usage_errors_are_what_the_readme_says():
    """Item 17: the README promised one `Error:` line and exit 1 for every mistake; usage errors are
    click's usage text and exit 2. The README now says which is which, and this checks both."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "A mistake on the command line itself (an unknown option, a missing argument, a value of the wrong " \
           "type) prints the usage, a hint and `Error: …`, with exit code 2" in " ".join(readme.split())
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["tree", "show", "--bogus"])
    assert result.exit_code == 2
    assert result.output.splitlines()[0].startswith("Usage: ") and result.output.splitlines()[-1].startswith("Error: ")


def test_a_closed_pipe_ends_quietly(ws, tmp_path):
    """Item 16: `tree show | head` ended with `Error: Broken pipe` and exit 1; now quiet, 141 as for `cat`."""
    import subprocess
    import sys

    invoke_args = [sys.executable, "-c", "from imgnet_build.cli.main import main; main()"]
    subprocess.run([*invoke_args, "-w", ws, "tree", "build", "--root", "dog.n.01"], check=True, capture_output=True,
                   cwd=tmp_path)
    for args in (["tree", "show", "--depth", "9"], ["tree", "export"], ["status"]):
        reader, writer = os.pipe()
        os.close(reader)  # the reader is gone before the first write, as after `head` quits
        done = subprocess.run([*invoke_args, "-w", ws, *args], stdout=writer, stderr=subprocess.PIPE, text=True,
                              cwd=tmp_path)
        os.close(writer)
        assert (done.returncode, done.stderr) == (141, ""), args
