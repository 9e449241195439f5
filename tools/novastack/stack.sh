#!/usr/bin/env bash
# A real OpenStack control plane on this machine, with two nova-compute
# services driving the lab's two libvirtd hosts (see doc/source/real-stack.rst).
#
#   tools/novastack/stack.sh install             packages + the stack's virtualenv
#   tools/novastack/stack.sh up [--no-computes] [--driver ext|stock]
#   tools/novastack/stack.sh computes up|down|restart [--driver ext|stock]
#                                                [--set SECTION.OPTION=VALUE ...]
#                                                [--var LIVEMIG_EXT_<OPTION>=VALUE ...]
#   tools/novastack/stack.sh images [--dirty-mb N] [--dirty-rate MB_S]
#   tools/novastack/stack.sh status | down | reset
#
# "up" installs first when needed.  The computes need the lab running
# (nova-livemig-ext lab start) and whoever uses them should hold the lab lock
# (flock /var/tmp/nova-livemig-ext-lab/lab.lock ...).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=${NOVASTACK_DIR:-/var/tmp/novastack}
cmd=${1:-}
if [ -z "$cmd" ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
# One command at a time changes the stack (several test workers may ask).
if [ "$cmd" != status ] && [ "$cmd" != iniset ]; then
    mkdir -p "$(dirname "$state")"
    mkdir -p -m 755 "$state"
    # Root runs databases and services from here: a directory another user
    # created first (anybody can, under /var/tmp) or can write to is refused.
    if [ -L "$state" ] || [ "$(stat -c %u "$state")" != "$(id -u)" ] \
        || [ $(( 0$(stat -c %a "$state") & 022 )) -ne 0 ]; then
        echo "novastack: $state must be a directory owned by uid $(id -u) and writable" \
             "by nobody else (it is $(stat -c '%U, mode %a' "$state")): remove it or set" \
             "NOVASTACK_DIR" >&2
        exit 1
    fi
    exec 9>>"$state/stack.lock"
    flock 9
fi
if [ "$cmd" = install ] || [ "$cmd" = up ]; then
    bash "$here/install.sh"
fi
[ "$cmd" = install ] && exit 0
if [ ! -x "$state/venv/bin/python" ]; then
    echo "novastack: no virtualenv in $state/venv: run '$0 install'" >&2
    exit 1
fi
exec "$state/venv/bin/python" "$here/novastack.py" "$@"
