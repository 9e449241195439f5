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
# The lab's state directory becomes a root libvirtd's /etc/libvirt: before
# anything runs, it must be root's alone all the way from /. The lab reads
# the same variable (exported, so an empty one cannot mean "." there).
# shellcheck source=tools/lib/trusted-dir.sh
source tools/lib/trusted-dir.sh
export NOVA_LIVEMIG_LAB_DIR=${NOVA_LIVEMIG_LAB_DIR:-/var/tmp/nova-livemig-ext-lab}
trusted_dir -c demo "$NOVA_LIVEMIG_LAB_DIR" \
    "remove it or set NOVA_LIVEMIG_LAB_DIR to another directory" || exit 1
bash tools/install-lab-packages.sh
# libvirt 11.3.0 with the post-copy resume fix, for the lab's daemons.
if [ "${NOVA_LIVEMIG_LAB_LIBVIRT:-auto}" != debian ]; then
    bash tools/libvirt/build-libvirt.sh
fi
bash tools/setup-venv.sh
VENV=${NOVA_LIVEMIG_VENV:-.venv}
"$VENV/bin/nova-livemig-ext" lab setup
exec "$VENV/bin/nova-livemig-ext" lab demo "$@"
