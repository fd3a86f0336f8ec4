"""Workspaces and the store on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, select, text

from imgnet_build import store
from imgnet_build.errors import BadInput, DatabaseUnavailable, NotAWorkspace, WorkspaceExists
from imgnet_build.store import Category
from imgnet_build.workspace import Workspace

OLD_WORKSPACE = Path(__file__).parent / "data" / "workspace-0.1.0"  # made by imgnet 0.1.0, 3 categories


def test_init_creates_settings_database_and_blobs(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    assert (tmp_path / "ws" / "imgnet.toml").read_text() == (
        '# imgnet-build workspace settings\ndatabase = "sqlite:///imgnet.db"\nblobs = "blobs"\n')
    assert (tmp_path / "ws" / "imgnet.db").is_file()
    assert (tmp_path / "ws" / "blobs").is_dir()
    with ws.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    ws.close()


def test_every_table_of_the_data_model_exists(any_workspace):
    tables = set(inspect(any_workspace.engine).get_table_names())
    assert {"category", "category_edge", "query", "candidate", "image", "task", "assignment", "vote", "label",
            "export", "alembic_version"} <= tables


def test_status_counts_start_at_zero(any_workspace):
    counts = any_workspace.status()
    assert counts["categories"] == 0 and counts["images"] == 0
    assert counts["candidates"] == {"pending": 0, "ok": 0, "failed": 0, "skipped": 0}


def test_init_twice_and_open_nothing(tmp_path):
    Workspace.init(tmp_path / "ws").close()
    with pytest.raises(WorkspaceExists):
        Workspace.init(tmp_path / "ws")
    with pytest.raises(NotAWorkspace, match="does not exist"):
        Workspace.open(tmp_path / "missing")
    with pytest.raises(NotAWorkspace, match="is not a workspace"):
        Workspace.open(tmp_path)


def test_bad_settings_file(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "imgnet.toml").write_text('database = "sqlite:///imgnet.db"\ncolour = "blue"\n')
    with pytest.raises(BadInput, match="unknown setting"):
        Workspace.open(ws)


def test_database_url_from_environment(tmp_path, monkeypatch, postgres_url):
    ws = Workspace.init(tmp_path / "ws")
    ws.close()
    monkeypatch.setenv("IMGNET_DATABASE_URL", postgres_url)
    ws = Workspace.open(tmp_path / "ws")
    assert ws.engine.dialect.name == "postgresql"
    ws.close()


def test_unreachable_postgres_is_one_clear_error(tmp_path):
    with pytest.raises(DatabaseUnavailable, match=r"cannot connect to database postgresql\+psycopg://127.0.0.1:9/x"):
        Workspace.init(tmp_path / "ws", database="postgresql+psycopg://127.0.0.1:9/x")
    assert not (tmp_path / "ws" / "imgnet.toml").exists()


def test_a_workspace_from_an_older_version_opens(tmp_path):
    shutil.copytree(OLD_WORKSPACE, tmp_path / "old")
    ws = Workspace.open(tmp_path / "old")
    with ws.session() as session:
        assert sorted(session.scalars(select(Category.synset))) == ["cardigan.n.02", "corgi.n.01", "pembroke.n.01"]
        revision = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    script_heads = _alembic_heads()
    assert revision in script_heads
    ws.close()


def test_migrations_run_from_an_empty_database_and_back(tmp_path):
    engine = store.make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    store.migrate(engine)
    config = Config()
    config.set_main_option("script_location", str(Path(store.__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    store.migrate(engine)
    assert "candidate" in inspect(engine).get_table_names()


OLD_ROWS = [  # one row per table at revision 0005, each referring to the others
    "INSERT INTO category (id, wnid, synset, name, lemmas, gloss, lexname, depth) "
    "VALUES (1, 'n02113186', 'cardigan.n.02', 'Cardigan', '[]', '', 'noun.animal', 1)",
    "INSERT INTO image (sha256, width, height, format, bytes, blob_key, created_at) "
    "VALUES ('aa', 64, 64, 'JPEG', 10, 'aa.jpg', '2026-01-01')",
    "INSERT INTO cluster (id, key, representative, created_at) VALUES (1, 'aa', 'aa', '2026-01-01')",
    "UPDATE image SET cluster_id = 1",
    "INSERT INTO candidate (id, category_id, source, url, status, attempts, created_at, url_hash, image_sha256) "
    "VALUES (1, 1, 'urls', 'http://127.0.0.1/a.jpg', 'ok', 1, '2026-01-01', 'h', 'aa')",
    "INSERT INTO task (id, category_id, round, batch, backend, status, assignments_wanted, created_at) "
    "VALUES (1, 1, 1, 'r1', 'local', 'done', 1, '2026-01-01')",
    "INSERT INTO task_item (id, task_id, position, image_sha256, kind) VALUES (1, 1, 0, 'aa', 'candidate')",
    "INSERT INTO worker (id, backend, external_id, control_answers, control_correct, blocked, revoked, simulated, "
    "created_at) VALUES (1, 'local', 'alice', 0, 0, 0, 0, 0, '2026-01-01')",
    "INSERT INTO assignment (id, task_id, worker_id, status, simulated, given_at) "
    "VALUES (1, 1, 1, 'submitted', 0, '2026-01-01')",
    "INSERT INTO vote (id, assignment_id, worker_id, task_item_id, image_sha256, category_id, answer, control, "
    "simulated, created_at) VALUES (1, 1, 1, 1, 'aa', 1, 1, 0, 0, '2026-01-01')",
    "INSERT INTO label (id, cluster_id, category_id, status, confidence, yes_votes, no_votes, method, round, "
    "simulated, updated_at) VALUES (1, 1, 1, 'accepted', 0.9, 1, 0, 'dynamic', 1, 0, '2026-01-01')",
]


def test_upgrading_an_old_workspace_keeps_every_row(tmp_path):
    """Before: the migrations that rebuild a table on SQLite (task in 0006, image in 0008, candidate
    in 0009) ran with foreign keys on, so dropping the old task table cascaded: a 0005 workspace
    opened by this version lost every task item, assignment and vote."""
    engine = store.make_engine(f"sqlite:///{tmp_path / 'old.db'}")  # foreign keys on, as every workspace
    config = Config()
    config.set_main_option("script_location", str(Path(store.__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
        for statement in OLD_ROWS:
            connection.execute(text(statement))
    tables = ("category", "image", "cluster", "candidate", "task", "task_item", "worker", "assignment", "vote",
              "label")

    def counts() -> dict[str, int]:
        with engine.connect() as connection:
            return {table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() for table in tables}

    assert set(counts().values()) == {1}
    store.migrate(engine)
    assert counts() == dict.fromkeys(tables, 1)
    with engine.connect() as connection:  # and the foreign keys are back on for everything after
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
    engine.dispose()


def test_the_task_batch_name_and_strings_become_typed_columns(tmp_path):
    """Migration 0011: what the batch name, `external_id` and the text `reward` encoded moves to
    `live`, `publish_token`, `reward_cents` and `crowd`."""
    engine = store.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(Path(store.__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0010")
        connection.execute(text(OLD_ROWS[0]))
        for task_id, batch, backend, external_id, reward in [
                (1, "r1-mturk-live", "mturk", "3HIT", "0.05"), (2, "r1-mturk-sandbox", "mturk", "pending:tok-2", "0.10"),
                (3, "r2-sim-w60-a0.6-0.95-p0.1-c0.05-s7", "simulated", None, None), (4, "r1", "local", None, None)]:
            connection.execute(text("INSERT INTO task (id, category_id, round, batch, backend, status, assignments_wanted, "
                                    "created_at, external_id, reward, test) VALUES (:id, 1, 1, :batch, :backend, 'open', "
                                    "3, '2026-01-01', :external_id, :reward, 0)"),
                               {"id": task_id, "batch": batch, "backend": backend, "external_id": external_id,
                                "reward": reward})
    store.migrate(engine)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, live, external_id, publish_token, reward_cents, crowd FROM task "
                                       "ORDER BY id")).all()
    engine.dispose()
    assert [tuple(row[:5]) for row in rows] == [(1, 1, "3HIT", None, 5), (2, 0, None, "tok-2", 10),
                                                (3, 0, None, None, None), (4, 0, None, None, None)]
    assert [json.loads(row[5]) if row[5] else None for row in rows] == [None, None, {
        "workers": 60, "accuracy": [0.6, 0.95], "spammers": 0.1, "seed": 7, "constant": 0.05}, None]


def _alembic_heads() -> set[str]:
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(Path(store.__file__).parent / "migrations"))
    return set(ScriptDirectory.from_config(config).get_heads())


def test_stage_tables_and_one_precedence(tmp_path, monkeypatch):
    """Issue 15 item 4: [fetch], [label], [export] and [report] in imgnet.toml; flag > environment > file > default."""
    from imgnet_build.fetch import FetchSettings

    Workspace.init(tmp_path / "ws").close()
    with (tmp_path / "ws" / "imgnet.toml").open("a") as handle:
        handle.write("[fetch]\nworkers = 8\nhost_rate = 5\n[label]\nvotes = 5\n[export]\nval_per_class = 2\nseed = 7\n"
                     "[report]\nthumbnail_size = 64\n")
    ws = Workspace.open(tmp_path / "ws")
    stages = ws.settings.stages
    assert (stages.make("fetch").workers, stages.make("fetch", workers=2).workers) == (8, 2)
    assert stages.make("fetch").host_rate == 5.0 and stages.make("fetch").per_host == FetchSettings().per_host
    assert stages.make("label").votes == 5 and stages.make("label", votes=None).votes == 5
    export = stages.make("export", replaces={"val_fraction": ("val_per_class",)}, val_fraction=0.2)
    assert (export.val_fraction, export.val_per_class, export.seed) == (0.2, None, 7)
    assert stages.make("export").val_per_class == 2
    assert stages.make("report").thumbnail_size == 64
    ws.close()


def test_the_environment_wins_over_the_file_for_the_s3_endpoint(tmp_path, monkeypatch, s3_endpoint):
    """The S3 endpoint took imgnet.toml over IMGNET_S3_ENDPOINT_URL, the database URL the other way round."""
    monkeypatch.setenv("IMGNET_S3_ENDPOINT_URL", s3_endpoint)
    Workspace.init(tmp_path / "ws", blobs="s3://imgs/ws").close()
    with (tmp_path / "ws" / "imgnet.toml").open("a") as handle:
        handle.write('s3_endpoint_url = "http://127.0.0.1:9"\n')  # nothing listens there
    ws = Workspace.open(tmp_path / "ws")
    ws.blob_store.put("ab/cd/x.jpg", b"data")
    assert ws.blob_store.get("ab/cd/x.jpg") == b"data"
    ws.close()
