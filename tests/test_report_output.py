"""Where `imgnet report -o` writes: files are replaced whole, FIFOs and devices are written into, never replaced."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from imgnet_build.cli.main import cli


def test_a_fifo_is_written_into_not_replaced(workspace, tmp_path, runner):
    """Before: the FIFO was replaced by a regular file and its reader never got the page."""
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = runner.invoke(cli, ["-w", str(workspace.root), "report", "-o", str(fifo)])
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    reader.join(timeout=30)
    assert received and received[0].startswith(b"<!DOCTYPE html>")
    assert f"({len(received[0]) / 1e6:.1f} MB)" in result.output


def _device(tmp_path: Path, name: str, minor: int) -> Path:
    """A character device (/dev/null: minor 3, /dev/full: minor 7): its twin in tmp_path when this
    process may make device nodes (root), so a regression can never replace the machine's own;
    else the real one, which a process without root cannot replace."""
    twin = tmp_path / name
    try:
        os.mknod(twin, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    except OSError:
        return Path("/dev") / name
    return twin


def test_a_character_device_stays_a_device(workspace, tmp_path, runner):
    """Before: as root the device node was replaced by a regular file (not run on the old code for /dev/null)."""
    device = _device(tmp_path, "null", 3)
    before = os.lstat(device)
    result = runner.invoke(cli, ["-w", str(workspace.root), "report", "-o", str(device)])
    assert result.exit_code == 0, result.output
    after = os.lstat(device)
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert not list(device.parent.glob(f".{device.name}.*.tmp"))


def test_a_regular_file_is_replaced_whole_and_a_symlink_keeps_pointing(workspace, tmp_path, runner):
    target = tmp_path / "real.html"
    target.write_text("old")
    link = tmp_path / "link.html"
    link.symlink_to(target)
    result = runner.invoke(cli, ["-w", str(workspace.root), "report", "-o", str(link)])
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and target.read_text().startswith("<!DOCTYPE html>")
    assert sorted(path.name for path in tmp_path.iterdir() if path.name != "ws") == ["link.html", "real.html"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_a_full_device_is_one_error_line(workspace, tmp_path, runner):
    device = _device(tmp_path, "full", 7)
    result = runner.invoke(cli, ["-w", str(workspace.root), "report", "-o", str(device)])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and len(result.output.splitlines()) == 1
    assert "No space left on device" in result.output
    assert stat.S_ISCHR(os.lstat(device).st_mode)
