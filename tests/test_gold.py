"""Known answers (`imgnet label gold`): conflicts, corrections, BOMs and hostile files (issue 14 item 6)."""

from __future__ import annotations

import subprocess
import sys

from labelkit import build_world
from sqlalchemy import select

from imgnet_build.cli.main import cli
from imgnet_build.store import Gold


def gold_cli(runner, workspace, path):
    return runner.invoke(cli, ["-w", str(workspace.root), "label", "gold", str(path)], catch_exceptions=False)


def answers(workspace) -> dict[str, bool]:
    with workspace.session() as session:
        return {row.image_sha256: row.answer for row in session.scalars(select(Gold))}


def test_conflicting_answers_in_one_file_are_refused_with_their_lines(workspace, runner, tmp_path):
    world = build_world(workspace, categories=1, images=3)
    a, b, _ = world["n00000001"]
    path = tmp_path / "gold.csv"
    path.write_text(f"sha256,wnid,answer\n{a},n00000001,yes\n{b},n00000001,no\n{a},n00000001,no\n{b},n00000001,no\n")
    result = gold_cli(runner, workspace, path)
    assert result.exit_code == 1
    assert result.output == (f"Error: {path}: lines 2 and 4 give one image and category different answers; keep one "
                             "answer per pair and load the file again (nothing was stored)\n")
    assert answers(workspace) == {}


def test_a_later_file_replaces_earlier_answers_and_says_so(workspace, runner, tmp_path):
    world = build_world(workspace, categories=1, images=3)
    a, b, _ = world["n00000001"]
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text(f"sha256,wnid,answer\n{a},n00000001,yes\n{b},n00000001,yes\n")
    second.write_text(f"sha256,wnid,answer\n{a},n00000001,no\n{b},n00000001,yes\n")
    assert gold_cli(runner, workspace, first).output.startswith("label gold: 2 known answers stored; ")
    assert answers(workspace) == {a: True, b: True}
    result = gold_cli(runner, workspace, second)
    assert result.output == ("label gold: 2 known answers stored (1 replace earlier answers); 0 rows name no image "
                             "of this workspace, 0 no category\n")
    assert answers(workspace) == {a: False, b: True}


def test_a_byte_order_mark_is_accepted(workspace, runner, tmp_path):
    world = build_world(workspace, categories=1, images=2)
    a, b = world["n00000001"]
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"sha256,wnid,answer\r\n{a},n00000001,yes\r\n{b},n00000001,no\r\n".encode())
    result = gold_cli(runner, workspace, path)
    assert result.exit_code == 0, result.output
    assert answers(workspace) == {a: True, b: False}


def test_binary_and_non_utf8_files_are_one_error_line(workspace, runner, tmp_path):
    build_world(workspace, categories=1, images=1)
    cases = {
        "latin1.csv": (b"sha256,wnid,answer\nabc,n00000001,s\xed\n", "line 2: not UTF-8 (byte 0xed at column 16)"),
        "image.csv": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "line 1: not UTF-8"),
        "nul.csv": (b"sha256,wnid,answer\nab\x00c,n00000001,yes\n", "line 2: a NUL byte"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        result = gold_cli(runner, workspace, path)
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"Error: {path}, {message}"), result.output
        assert result.output.count("\n") == 1


def test_a_one_gib_line_is_refused_in_bounded_memory(workspace, tmp_path):
    """A sparse 1 GiB file with no newline: read at most MAX_LINE of it (the old code held 2.2 GB)."""
    build_world(workspace, categories=1, images=1)
    path = tmp_path / "huge.csv"
    with path.open("wb") as handle:
        handle.write(b"sha256,wnid,answer\n")
        handle.write(b"a" * (1 << 20))  # a line that goes on: letters, then zeros (sparse) up to 1 GiB
        handle.truncate(2**30)
    script = (
        "import sys\n"
        "from imgnet_build.cli.main import cli\n"
        "try:\n"
        f"    cli(['-w', {str(workspace.root)!r}, 'label', 'gold', {str(path)!r}], prog_name='imgnet')\n"
        "finally:\n"
        "    print('peak_kib', open('/proc/self/status').read().split('VmHWM:')[1].split()[0], file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    error, rss = done.stderr.splitlines()
    assert error == (f"Error: {path}, line 2: longer than 64 KiB; a gold file is a CSV text with one short row per "
                     "line (url or sha256, wnid, answer)")
    # KiB, this process's own peak (VmHWM): getrusage's ru_maxrss counts the parent's RSS at the fork too,
    # which is how a full CI run once "saw" 717 MB here. The CLI alone peaks at about 150 MB.
    assert int(rss.split()[1]) < 256 * 1024
