#!/usr/bin/env bash
# The demo: jhub-cloud's whole suite on this machine (OIDC provider, SeaweedFS with STS, JupyterHub
# with CloudSpawner), until Ctrl-C. Run as root on Debian 12; the first run installs what is
# missing (scripts/setup.sh), later runs only check and are ready in seconds.
#   scripts/demo.sh                    # servers as local processes
#   scripts/demo.sh --backend docker   # servers in containers of images/lab (built on first use)
#   scripts/demo.sh --backend slurm    # servers as jobs of a one-node Slurm cluster
#   scripts/demo.sh --help
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${JHUB_CLOUD_PREFIX:-/opt/jhub-cloud}
case " $* " in *" -h "*|*" --help "*) exec "$PREFIX/venv/bin/python" "$here/scripts/demo.py" "$@";; esac
echo "[demo] installing what is missing (scripts/setup.sh)"
# apt-get and pip are quiet for minutes on a fresh machine: say that it is still going.
( trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  while :; do sleep 20 & nap=$!; wait "$nap"; echo "[demo] still installing, ${SECONDS} s so far"; done ) &
ticker=$!
trap 'kill "$ticker" 2>/dev/null || true' EXIT
bash "$here/scripts/setup.sh"
kill "$ticker" 2>/dev/null || true
trap - EXIT
exec "$PREFIX/venv/bin/python" "$here/scripts/demo.py" "$@"
