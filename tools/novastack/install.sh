#!/usr/bin/env bash
# Install what the real OpenStack control plane of tools/novastack needs:
# MariaDB and RabbitMQ from Debian, and the OpenStack services from PyPI into
# the stack's own virtualenv (never the project's .venv, never the system).
# Idempotent: a second run installs nothing.
#
#   NOVASTACK_DIR   state, logs and the virtualenv (default /var/tmp/novastack)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tools/lib/trusted-dir.sh
source "$here/../lib/trusted-dir.sh"
state=${NOVASTACK_DIR:-/var/tmp/novastack}
venv=$state/venv
PY=${PYTHON:-python3}

if [ "$(id -u)" -ne 0 ]; then
    echo "novastack install: must run as root (apt-get, MariaDB, RabbitMQ)" >&2
    exit 1
fi
# Root installs into and runs from the virtualenv: the state directory and
# the virtualenv must be root's alone, from / down (see stack.sh), before
# anything in them is run. Run on its own, this script checks for itself.
trusted_dir -c "novastack install" "$state" \
    "remove it or set NOVASTACK_DIR to another directory" || exit 1
trusted_dir -c "novastack install" "$venv" "remove it" || exit 1
if [ -e "$venv/bin" ] || [ -L "$venv/bin" ]; then
    trusted_dir "novastack install" "$venv/bin" "remove $venv" || exit 1
fi

apt_pkgs=(mariadb-server rabbitmq-server python3-venv python3-dev gcc pkg-config
          libvirt-dev libpcre2-dev libssl-dev)
missing=()
for pkg in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # The packages' maintainer scripts must not start daemons that listen on
    # every address: forbid service starts for the duration of the install.
    policy=/usr/sbin/policy-rc.d
    saved=""
    if [ -e "$policy" ]; then
        saved=$(mktemp)
        cp -p "$policy" "$saved"
    fi
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    restore() {
        if [ -n "$saved" ]; then mv "$saved" "$policy"; else rm -f "$policy"; fi
    }
    trap restore EXIT
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    restore
    trap - EXIT
    # Some maintainer scripts start epmd regardless of policy-rc.d.
    pkill -x -u rabbitmq epmd 2>/dev/null || true
fi

# Pinned together: these versions were run as one stack on Debian 12.
stamp_src="$(cat "$here/requirements.txt") $repo"
stamp="$venv/.novastack-$(echo "$stamp_src" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
    nice -n 10 "$venv/bin/pip" install -q -U pip wheel
    nice -n 10 "$venv/bin/pip" install -q -r "$here/requirements.txt"
    # The devstack plugin's own install phase installs this checkout (editable)
    # and checks that Nova resolves nova.virt.livemig_ext through it.
    NOVASTACK_BIN=$venv/bin bash "$here/devstack-phase.sh" install
    rm -f "$venv"/.novastack-*
    touch "$stamp"
fi
# The stack's scripts read the lab's configuration (hosts, paths): the lab
# is a distribution of its own (lab/), installed from this checkout.
if ! "$venv/bin/python" -c 'import nova_livemig_lab' 2>/dev/null; then
    nice -n 10 "$venv/bin/pip" install -q --no-deps -e "$repo/lab"
fi
echo "novastack install: ready ($venv)"
