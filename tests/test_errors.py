"""Every misuse is one `Error: …` line and exit code 1; nothing is silently made up (issue 10, items 9-11, 13)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import event, insert, text

from imgnet_build.cli.main import cli
from imgnet_build.errors import DatabaseUnavailable
from imgnet_build.store import Query
from imgnet_build.workspace import Workspace


def invoke(runner, *args):
    return runner.invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def one_error(result, start: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {start}"), result.output
    assert result.output.count("\n") == 1, result.output


@pytest.fixture
def ws(runner, tmp_path) -> Path:
    path = tmp_path / "ws"
    assert invoke(runner, "init", path).exit_code == 0
    return path


def test_a_database_file_that_is_not_a_database(runner, ws, tmp_path):
    (ws / "imgnet.db").write_text("this is not a database " * 100)
    for name in ("imgnet.db-wal", "imgnet.db-shm"):
        (ws / name).unlink(missing_ok=True)
    one_error(invoke(runner, "-w", ws, "status"), f"cannot connect to database sqlite:///{ws / 'imgnet.db'}: "
                                                  "file is not a database")
    text_file = tmp_path / "notes.txt"
    text_file.write_text("some notes " * 100)
    one_error(invoke(runner, "init", tmp_path / "other", "--database", f"sqlite:///{text_file}"),
              "cannot connect to database")
    assert not (tmp_path / "other").exists()  # all or nothing
    assert text_file.read_text() == "some notes " * 100


@pytest.mark.parametrize(("content", "message"), [
    (b"database = 5\n", "setting database must be a string in quotes, not 5"),
    (b'blobs = 7\n', "setting blobs must be a string in quotes, not 7"),
    (b'database = "sqlite:///\xff.db"\n', "is not UTF-8 text (byte 0xff at offset 22); save it as UTF-8"),
])
def test_bad_values_in_the_settings_file(runner, ws, content, message):
    (ws / "imgnet.toml").write_bytes(content)
    result = invoke(runner, "-w", ws, "status")
    one_error(result, "")
    assert message in result.output


def test_an_unreadable_settings_file(runner, ws):
    (ws / "imgnet.toml").unlink()
    (ws / "imgnet.toml").mkdir()  # reading it fails (running as root defeats chmod)
    one_error(invoke(runner, "-w", ws, "status"), f"cannot read {ws / 'imgnet.toml'}: Is a directory")


def test_blobs_pointing_at_a_file(runner, ws, tmp_path):
    (tmp_path / "afile").write_text("x")
    (ws / "imgnet.toml").write_text(f'blobs = "{tmp_path / "afile"}"\n')
    Workspace.open(ws).close()  # opening does not touch the blob store
    with pytest.raises(Exception, match=r"cannot use .*afile as the blob store folder"):
        _ = Workspace.open(ws).blob_store
    one_error(invoke(runner, "init", tmp_path / "new", "--blobs", tmp_path / "afile"),
              f"cannot use {tmp_path / 'afile'} as the blob store folder")
    assert not (tmp_path / "new").exists()  # init is all or nothing


def test_init_where_no_folder_can_be_made(runner, tmp_path):
    (tmp_path / "afile").write_text("x")
    one_error(invoke(runner, "init", tmp_path / "afile" / "ws"), f"cannot create workspace {tmp_path / 'afile' / 'ws'}")
    one_error(invoke(runner, "init", "/proc/imgnet-no/ws"), "cannot create workspace /proc/imgnet-no/ws")


def test_output_to_a_full_device(runner, ws):
    one_error(invoke(runner, "-w", ws, "tree", "export", "-o", "/dev/full"), "No space left on device")


def test_dedup_clusters_to_an_unwritable_place_fails_before_dedup(runner, ws):
    one_error(invoke(runner, "-w", ws, "dedup", "--clusters", "/proc/imgnet-clusters.json"),
              "cannot write /proc/imgnet-clusters.json: ")


def _fill(workspace: Workspace, rows: int) -> None:
    with workspace.session() as session:
        session.execute(insert(Query), [{"category_id": 1, "text": f"q{i}" * 50, "language": "en", "method": "x"}
                                        for i in range(rows)])


def test_database_locked_and_database_full_are_error_lines(ws):
    workspace = Workspace.open(ws)
    with workspace.engine.begin() as connection:
        connection.execute(text("INSERT INTO category (wnid, synset, name, lemmas, gloss, lexname, depth) "
                                "VALUES ('n1', 'a.n.01', 'a', '[]', '', 'noun.animal', 0)"))
    event.listen(workspace.engine, "connect",
                 lambda dbapi, _: dbapi.execute("PRAGMA max_page_count = 60") and None)
    event.listen(workspace.engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA busy_timeout = 0") and None)
    workspace.engine.dispose()
    with pytest.raises(DatabaseUnavailable, match=r"^database error: database or disk is full$"):
        _fill(workspace, 5000)
    blocker = Workspace.open(ws)
    with blocker.engine.connect() as connection:
        connection.exec_driver_sql("BEGIN EXCLUSIVE")
        with pytest.raises(DatabaseUnavailable, match=r"^database error: database is locked$"):
            _fill(workspace, 1)
        connection.exec_driver_sql("ROLLBACK")
    blocker.close()
    workspace.close()


def test_a_workspace_newer_than_the_code(runner, ws):
    workspace = Workspace.open(ws)
    with workspace.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    workspace.close()
    one_error(invoke(runner, "-w", ws, "status"), "the workspace database is at schema revision 9999, newer than "
                                                 "this imgnet")


def test_a_missing_or_empty_database_is_not_recreated(runner, ws):
    for name in ("imgnet.db", "imgnet.db-wal", "imgnet.db-shm"):
        (ws / name).unlink(missing_ok=True)
    one_error(invoke(runner, "-w", ws, "status"), f"the workspace database {ws / 'imgnet.db'} is missing; restore")
    assert not (ws / "imgnet.db").exists()
    (ws / "imgnet.db").write_bytes(b"")
    one_error(invoke(runner, "-w", ws, "status"), f"the workspace database {ws / 'imgnet.db'} is empty (0 bytes)")


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_is_refused(runner, tmp_path, url):
    one_error(invoke(runner, "init", tmp_path / "ws", "--database", url), f"database {url!r} is in memory")
    assert not (tmp_path / "ws").exists()


def test_demo_refuses_a_workspace_it_did_not_make(runner, ws):
    one_error(invoke(runner, "demo", ws), f"{ws} is a workspace not made by imgnet demo")


def test_demo_refuses_a_folder_it_did_not_make_and_an_old_demo_workspace(runner, tmp_path, ws):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine\n")
    one_error(invoke(runner, "demo", tmp_path / "notes"), f"{tmp_path / 'notes'} is a folder with files not made by "
              "imgnet demo; give the demo a new folder: imgnet demo imgnet-demo")
    (ws / ".imgnet-demo").write_text("made by imgnet demo\n")  # the old layout: the dataset inside the workspace
    one_error(invoke(runner, "demo", ws), f"{ws} is a demo workspace of an older imgnet")
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["todo.txt"]


def test_init_and_demo_honour_the_workspace_option(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke(runner, "-w", "made", "init").exit_code == 0
    assert (tmp_path / "made" / "imgnet.toml").is_file() and not (tmp_path / "imgnet.toml").exists()
    assert invoke(runner, "-w", "ignored", "init", "positional").exit_code == 0
    assert (tmp_path / "positional" / "imgnet.toml").is_file() and not (tmp_path / "ignored").exists()
    one_error(invoke(runner, "-w", "made", "demo"), "made is a workspace not made by imgnet demo")


OPEN_AT_ONCE = """
import sys
from imgnet_build.workspace import Workspace
from imgnet_build.errors import WorkspaceExists
try:
    ws = Workspace.init(sys.argv[1], database=sys.argv[2] or None) if sys.argv[3] == "init" else None
except WorkspaceExists:
    ws = None
ws = ws or Workspace.open(sys.argv[1])
ws.status()
ws.close()
"""


def _at_once(args: list[str], processes: int = 4) -> list[subprocess.CompletedProcess]:
    running = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    return [subprocess.CompletedProcess(p.args, p.wait(), *p.communicate()) for p in running]


@pytest.mark.postgres
def test_four_processes_open_a_fresh_postgres_database_at_once(tmp_path, postgres_url):
    """Before: migrations ran unlocked on every open and 3 of 4 failed (duplicate tables)."""
    Path(tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "imgnet.toml").write_text(f'database = "{postgres_url}"\n')
    results = _at_once([str(tmp_path / "ws"), "", "open"])
    assert [r.returncode for r in results] == [0] * 4, [r.stderr[-500:] for r in results]


def test_four_inits_of_one_folder_at_once(tmp_path):
    results = _at_once([str(tmp_path / "ws"), "", "init"])
    assert [r.returncode for r in results] == [0] * 4, [r.stderr[-500:] for r in results]
    assert Workspace.open(tmp_path / "ws").status()["categories"] == 0
    assert sorted(p.name for p in (tmp_path / "ws").iterdir() if p.name.startswith(".")) == []


def test_per_item_outcomes_have_a_root_of_their_own():
    """Before: ItemFailed, _Retryable, ImageRejected, … subclassed ImgnetError, the user-facing error,
    so a `except ImgnetError` meant for the run's errors also caught one item's outcome."""
    from imgnet_build.download import ItemFailed, _Retryable
    from imgnet_build.errors import ImgnetError, ItemError
    from imgnet_build.labeling.mturk_review import AnswerInvalid
    from imgnet_build.netguard import Abandoned, AddressRefused
    from imgnet_build.validate import ImageRejected

    for per_item in (ItemFailed, _Retryable, ImageRejected, AnswerInvalid, Abandoned, AddressRefused):
        assert issubclass(per_item, ItemError) and not issubclass(per_item, ImgnetError), per_item
    assert not issubclass(ItemError, ImgnetError) and not issubclass(ImgnetError, ItemError)


# -- issue 14 items 14 and 15 ---------------------------------------------------------------


def test_a_settings_file_with_a_byte_order_mark_is_read(runner, ws):
    """Item 15: Notepad's BOM made imgnet.toml "not valid TOML at line 1, column 1"."""
    (ws / "imgnet.toml").write_bytes(b"\xef\xbb\xbf" + (ws / "imgnet.toml").read_bytes())
    assert invoke(runner, "-w", ws, "status").exit_code == 0


@pytest.mark.parametrize(("content", "message"), [
    ("[mturk]\nreject_below = true\n", "[mturk] reject_below must be a share between 0 and 1, not True"),
    ("[mturk]\nmin_approved = 1.5\n", "[mturk] min_approved must be a whole number between 0 and 1000000000, not 1.5"),
    ("[fetch]\nworkers = true\n", "[fetch] workers must be a whole number, not True"),
    ("[fetch]\nworkers = \"8\"\n", "[fetch] workers must be a whole number, not '8'"),
    ("[fetch]\nconnect_timeout = false\n", "[fetch] connect_timeout must be a number, not False"),
    ("[fetch]\nallow_loopback = 1\n", "[fetch] allow_loopback must be true or false, not 1"),
    ("[label]\nmethod = 3\n", "[label] method must be a string in quotes, not 3"),
    ("[label]\nvotes = 0\n", "[label]: --votes must be at least 1, not 0"),
    ("[export]\nlicenses = [\"cc0\", 1]\n", "[export] licenses must be a string in quotes or a list of strings in "
                                           "quotes, not ['cc0', 1]"),
    ("[report]\ncolour = \"blue\"\n", "unknown [report] setting(s) colour; known: sheet_categories, thumbnail_size, "
                                      "thumbnails_per_side"),
    ("fetch = 3\n", "fetch must be a table ([fetch]), not 3"),
])
def test_every_setting_is_type_checked(runner, ws, content, message):
    """Item 15: booleans passed `isinstance(x, (int, float))`; now each value is checked against its field's type."""
    with (ws / "imgnet.toml").open("a") as handle:
        handle.write(content)
    result = invoke(runner, "-w", ws, "status")
    one_error(result, "")
    assert message in result.output


def test_label_serve_refuses_a_newer_schema_at_start(runner, ws):
    """Item 15: `label serve` started on a newer database and answered 503 to everyone."""
    workspace = Workspace.open(ws)
    with workspace.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    workspace.close()
    one_error(invoke(runner, "-w", ws, "label", "serve", "--port", "0"),
              "the workspace database is at schema revision 9999, newer than this imgnet")


def _read_only(path: Path, *command: str) -> subprocess.CompletedProcess:
    """Run `imgnet command` with `path` bind-mounted read-only onto itself (a private mount namespace):
    read-only for root too, which permission bits are not."""
    imgnet = [sys.executable, "-c", "from imgnet_build.cli.main import main; main()"]
    script = f'mount --bind -o ro "{path}" "{path}" && exec "$@"'
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *imgnet, *command], capture_output=True,
                          text=True, cwd=path.parent)


@pytest.fixture
def read_only_mounts(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(["unshare", "-m", "sh", "-c", f'mount --bind -o ro "{probe}" "{probe}" && touch "{probe}/x"'],
                          capture_output=True, text=True)
    if "Read-only file system" not in done.stderr:
        pytest.skip(f"read-only bind mounts need CAP_SYS_ADMIN (unshare -m): {done.stderr.strip()}")


def test_a_read_only_workspace_can_be_read(runner, ws, tmp_path, read_only_mounts):
    """Item 14: status, label status, tree show and report -o elsewhere failed with "unable to open database
    file"; they open the database read-only. A command that writes says the folder is read-only."""
    assert invoke(runner, "-w", ws, "tree", "build", "--root", "corgi.n.01").exit_code == 0
    status = _read_only(ws, "-w", str(ws), "status", "--json")
    assert status.returncode == 0, status.stderr
    assert '"categories": 3' in status.stdout
    for command in (["label", "status"], ["tree", "show"], ["candidates"],
                    ["report", "-o", str(tmp_path / "report.html")]):
        done = _read_only(ws, "-w", str(ws), *command)
        assert done.returncode == 0, (command, done.stderr)
    assert (tmp_path / "report.html").stat().st_size > 0
    done = _read_only(ws, "-w", str(ws), "tree", "build", "--root", "dog.n.01")
    assert done.returncode == 1
    assert done.stderr == (f"Error: the workspace folder {ws} is read-only, and this command writes to its database; "
                           "run it where the folder is writable (commands that only read, like imgnet status, "
                           "work as it is)\n")
    assert sorted(path.name for path in ws.iterdir()) == ["blobs", "imgnet.db", "imgnet.toml"]
