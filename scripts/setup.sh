#!/usr/bin/env bash
# Install everything jhub-cloud's demo and tests need on a fresh Debian 12 machine (run as root).
# Idempotent: a second run only checks. Prefix (world-readable, so Slurm jobs running as the test
# users can execute the venv): $JHUB_CLOUD_PREFIX, default /opt/jhub-cloud.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${JHUB_CLOUD_PREFIX:-/opt/jhub-cloud}
t0=$SECONDS
step() { printf '[setup %4ds] %s\n' "$((SECONDS - t0))" "$*"; }

[ "$(id -u)" = 0 ] || { echo "setup.sh must run as root (it installs Debian packages)" >&2; exit 1; }

APT_PACKAGES=(
  fuse3 sudo openssl curl ca-certificates uuid-runtime bc procps psmisc
  slurmctld slurmd slurm-client munge openssh-server
  ceph-mon ceph-osd radosgw ceph-common
  docker.io debootstrap
  chromium chromium-driver libnss3-tools
  s3fs
)
missing=()
# Node.js: any install that brings npm will do (some images ship NodeSource's, which bundles npm).
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Daemons must not start from their postinst: tests start their own, by PID.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
step "Debian packages present"

# FUSE mounts by non-root users with allow_other need this.
grep -qs '^user_allow_other' /etc/fuse.conf || echo user_allow_other >> /etc/fuse.conf
# Unprivileged mounts through the setuid fusermount3 need /dev/fuse 0666, as Debian's udev rule
# makes it (these machines run no udev, so it is 0600 here).
[ ! -c /dev/fuse ] || chmod 0666 /dev/fuse

# Test users: system users with home folders (Slurm runs jobs as them).
for u in alice bob carol dave; do
  id "$u" >/dev/null 2>&1 || useradd -m -s /bin/bash "$u"
done
step "test users present"

# Python venv from Debian's python3, world-readable.
install -d -m 0755 "$PREFIX"
if [ ! -x "$PREFIX/venv/bin/python" ]; then
  step "creating venv $PREFIX/venv"
  /usr/bin/python3 -m venv "$PREFIX/venv"
  "$PREFIX/venv/bin/pip" install -q --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
fi
stamp="$PREFIX/venv/.jhub-cloud-deps"
want=$(cat "$here/setup.cfg" "$here/sts_wire/pyproject.toml" | sha256sum | cut -c1-16)
# Where the venv finds both packages (run from / so the current folder cannot shadow them): a venv
# installed from another checkout would test that checkout's code, and containers that mount only
# this checkout would not find it at all.
installed_from=$(cd / && "$PREFIX/venv/bin/python" -c 'import jhub_cloud, sts_wire, os
d = os.path.dirname
print(d(d(jhub_cloud.__file__)), d(d(sts_wire.__file__)))' 2>/dev/null || true)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ "$installed_from" != "$here $here" ]; then
  # Two distributions, both editable: sts-wire (built from sts_wire/, what notebook images
  # install) and jhub-cloud, which depends on it.
  step "pip install -e $here/sts_wire -e $here[test]"
  # pip's notes on unused local index folders are noise here.
  "$PREFIX/venv/bin/pip" install -q --disable-pip-version-check -e "$here/sts_wire" -e "$here[test]" 2>&1 | { grep -v -e "^WARNING: Location" -e "BuildBackendWarning" || true; }
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "pip install failed" >&2; exit 1; }
  # An older jhub-cloud shipped the sts-wire script itself; its uninstall may have removed it.
  [ -x "$PREFIX/venv/bin/sts-wire" ] || "$PREFIX/venv/bin/pip" install -q --disable-pip-version-check \
    --no-deps --force-reinstall -e "$here/sts_wire" 2>&1 | { grep -v -e "^WARNING: Location" -e "BuildBackendWarning" || true; }
  echo "$want" > "$stamp"
fi
chmod -R a+rX "$PREFIX"
step "Python packages present"

# npm: the test OIDC provider and configurable-http-proxy.
if [ ! -d "$PREFIX/node/node_modules/oidc-provider" ] || [ ! -x "$PREFIX/node/node_modules/.bin/configurable-http-proxy" ]; then
  step "npm install oidc-provider configurable-http-proxy"
  install -d -m 0755 "$PREFIX/node"
  (cd "$PREFIX/node" && { [ -f package.json ] || echo '{"name":"jhub-cloud-node","private":true,"type":"module"}' > package.json; } \
    && npm install --silent --no-audit --no-fund oidc-provider@9 configurable-http-proxy@5 >/dev/null)
fi
chmod -R a+rX "$PREFIX/node"
step "npm packages present"
step "done"
