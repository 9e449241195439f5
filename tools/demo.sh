#!/usr/bin/env bash
# The lab demo: a memory-busy guest migrated between two local libvirt hosts
# over a rate-limited link, as a paused copy, under upstream Nova 34's
# algorithm and under nova-livemig-ext (nothing configured, then with
# post-copy permitted). Prints a table; writes
# lab-demo/remaining.png and lab-demo/results.json. Needs root (libvirtd,
# network namespaces). About 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "demo: run as root: it starts two libvirt daemons and network namespaces" >&2
    exit 1
fi
bash tools/install-lab-packages.sh
bash tools/setup-venv.sh
VENV=${NOVA_LIVEMIG_VENV:-.venv}
"$VENV/bin/nova-livemig-ext" lab setup
exec "$VENV/bin/nova-livemig-ext" lab demo "$@"
