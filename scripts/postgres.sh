#!/usr/bin/env bash
# Make sure this machine's PostgreSQL answers on 127.0.0.1:5432, starting Debian's cluster when it
# is down (as root or through sudo). The tests' PostgreSQL runs need it: scripts/setup.sh test, .ci/run.
set -euo pipefail
command -v pg_isready >/dev/null || exit 0  # no local PostgreSQL: IMGNET_TEST_POSTGRES may name another server
pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
for _ in $(seq 20); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 0.5; done
echo "postgres: nothing answers on 127.0.0.1:5432; the PostgreSQL tests will say so" >&2
