"""`imgnet demo` runs every stage for real, offline, and a rerun continues."""

from __future__ import annotations

from imgnet_build.cli.main import cli


def test_demo_end_to_end_and_rerun(runner, tmp_path):
    directory = tmp_path / "demo"
    first = runner.invoke(cli, ["demo", str(directory)], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert lines[1] == "tree: 190 categories below dog.n.01"
    assert lines[2].startswith("gathered: 70 ok, 7 failed, 0 skipped")
    assert lines[3] == "dedup: 65 images, 5 exact, 5 near duplicates in 10 clusters (0 cross-category conflicts)"
    again = runner.invoke(cli, ["demo", str(directory)], catch_exceptions=False)
    assert again.exit_code == 0
    assert again.output.splitlines()[2].startswith("gathered: 0 ok, 0 failed, 0 skipped")
    shown = runner.invoke(cli, ["-w", str(directory), "tree", "show", "--root", "poodle.n.01"])
    assert shown.output == ("poodle (n02113335): 4 below, 0 images\n"
                            "  toy poodle (n02113624): 0 below, 12 images\n"
                            "  miniature poodle (n02113712): 0 below, 0 images\n"
                            "  standard poodle (n02113799): 0 below, 12 images\n"
                            "  large poodle (n02113892): 0 below, 0 images\n")
    status = runner.invoke(cli, ["-w", str(directory), "status", "--json"])
    assert '"ok": 70' in status.output and '"failed": 7' in status.output
