#!/usr/bin/env bash
# The test command: install what is missing (scripts/setup.sh), then run the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/test_smoke_idp.py -x).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${JHUB_CLOUD_PREFIX:-/opt/jhub-cloud}
t0=$SECONDS
bash "$here/scripts/setup.sh" || { echo "set-up failed after $((SECONDS - t0)) s" >&2; exit 1; }
t1=$SECONDS
echo "set-up took $((t1 - t0)) s"
cd "$here"
"$PREFIX/venv/bin/ruff" check . || { echo "ruff found problems" >&2; rc=1; }
"$PREFIX/venv/bin/python" -m pytest "$@"
prc=$?
echo "tests took $((SECONDS - t1)) s (set-up $((t1 - t0)) s, total $((SECONDS - t0)) s)"
# pytest exits 5 when it collected no test: that is a failure here, never a pass.
[ "$prc" = 5 ] && { echo "pytest collected no tests" >&2; exit 5; }
[ "$prc" = 0 ] && exit "${rc:-0}"
exit "$prc"
