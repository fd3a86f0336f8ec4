"""`imgnet demo` runs every stage for real, offline, a rerun continues, and another run gives the same dataset.

The second run is its own process with another PYTHONHASHSEED: set and dict orders of
strings differ between processes, and so did the tree's category ids (and with them task
ids, the crowd's draws and the labels) before the tree was inserted in wnid order.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from imgnet_build.cli.main import cli


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_demo_end_to_end_rerun_and_reproducible(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGNET_DEMO_PORT", str(_free_port()))  # the mirror's port is in every source URL
    directory = tmp_path / "demo"
    first = runner.invoke(cli, ["demo", str(directory)], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert lines[1] == "tree: 190 categories below dog.n.01"
    assert lines[2].startswith("gathered: 90 ok, 7 failed, 0 skipped")
    assert lines[3] == "dedup: 85 images, 5 exact, 5 near duplicates in 10 clusters (0 cross-category conflicts)"
    assert lines[4].startswith("labels (simulated crowd, dynamic consensus, ")
    precision, recall = (float(x.split()[-1]) for x in lines[5].split(":")[1].split(","))
    assert precision >= 0.9 and recall >= 0.9
    assert "(simulated labels included)" in lines[6] and (directory / "dataset" / "manifest.jsonl").is_file()
    assert lines[7].startswith(f"report: {directory / 'report.html'}") and (directory / "report.html").stat().st_size
    documents = {name: (directory / "dataset" / name).read_bytes() for name in ("manifest.jsonl", "dataset.json", "README.md")}
    again = runner.invoke(cli, ["demo", str(directory)], catch_exceptions=False)
    assert again.exit_code == 0
    assert again.output.splitlines()[2].startswith("gathered: 0 ok, 0 failed, 0 skipped")
    shown = runner.invoke(cli, ["-w", str(directory / "workspace"), "tree", "show", "--root", "poodle.n.01"])
    assert shown.output == ("poodle (n02113335): 4 below, 0 images here, 32 in the subtree\n"
                            "  toy poodle (n02113624): 0 below, 16 images here, 16 in the subtree\n"
                            "  miniature poodle (n02113712): 0 below, 0 images here, 0 in the subtree\n"
                            "  standard poodle (n02113799): 0 below, 16 images here, 16 in the subtree\n"
                            "  large poodle (n02113892): 0 below, 0 images here, 0 in the subtree\n")
    status = runner.invoke(cli, ["-w", str(directory / "workspace"), "status", "--json"])
    assert '"ok": 90' in status.output and '"failed": 7' in status.output

    other = tmp_path / "other"
    hash_seed = str(int(os.environ.get("PYTHONHASHSEED") or "0") + 1)  # not this process's string order
    done = subprocess.run([sys.executable, "-c", "from imgnet_build.cli.main import main; main()", "demo", str(other)],
                          env=os.environ | {"PYTHONHASHSEED": hash_seed}, cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[4:6] == lines[4:6]  # rounds, labels, precision and recall
    assert {name: (other / "dataset" / name).read_bytes() for name in documents} == documents
