#!/usr/bin/env bash
# Set up this checkout: system packages, a virtualenv in .venv with imgnet installed,
# and the WordNet 3.0 data nltk reads.   Usage: scripts/setup.sh [test]
#   test: also install the test extras and make sure PostgreSQL on 127.0.0.1:5432 runs.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

# WordNet 3.0 from Debian's packages when nltk has no copy (no internet needed).
if command -v apt-get >/dev/null && ! dpkg -s wordnet-base wordnet-sense-index >/dev/null 2>&1; then
  (as_root apt-get update -qq && as_root apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null) \
    || echo "setup: could not install Debian's wordnet packages; nltk.download('wordnet') will be tried" >&2
fi

# Debian's chromium for the browser tests (pip's playwright drives it; never `playwright install`).
if [ "$mode" = test ] && command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then
  (as_root apt-get update -qq && as_root apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: could not install Debian's chromium; the browser tests need /usr/bin/chromium" >&2
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
package="."; [ "$mode" = test ] && package=".[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check "$package"
.venv/bin/imgnet --version >/dev/null  # the install worked
.venv/bin/imgnet wordnet

if [ "$mode" = test ]; then
  scripts/postgres.sh
fi
