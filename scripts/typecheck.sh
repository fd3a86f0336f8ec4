#!/usr/bin/env bash
# The type check CI runs: mypy -p imgnet_build on the package as installed in .venv (CI
# installs it non-editable), from outside the checkout so the source tree cannot stand in for
# it. Settings: [tool.mypy] in pyproject.toml.   Usage: scripts/typecheck.sh
# An editable install (a path hook mypy cannot follow) is checked through a copy laid out as
# installed: imgnet_build/ with cli/ and schemas/ inside, where pyproject's package-dir puts them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="$root/.venv/bin/python"
[ -x "$root/.venv/bin/mypy" ] || { echo "typecheck: no mypy in .venv; install the test extra: .venv/bin/pip install -e '.[test]'" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
installed="$("$python" -c 'import imgnet_build, os; print(os.path.dirname(os.path.realpath(imgnet_build.__file__)))')"
if [ "$installed" = "$(realpath "$root/imgnet_build")" ]; then  # an editable install
  "$python" - "$root" "$work/site" <<'PY'
import pathlib, sys, tomllib
root, site = map(pathlib.Path, sys.argv[1:])
package_dir = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"].get("package-dir", {})
(site / "imgnet_build").mkdir(parents=True)
for entry in (root / "imgnet_build").iterdir():
    (site / "imgnet_build" / entry.name).symlink_to(entry)
for package, folder in package_dir.items():
    (site / pathlib.Path(*package.split("."))).symlink_to(root / folder)
PY
  export MYPYPATH="$work/site"
fi
"$root/.venv/bin/mypy" --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" -p imgnet_build
