#!/usr/bin/env bash
# A real OpenStack control plane on this machine, with two nova-compute
# services driving the lab's two libvirtd hosts (see doc/source/real-stack.rst).
#
#   tools/novastack/stack.sh install             packages + the stack's virtualenv
#   tools/novastack/stack.sh up [--no-computes] [--driver ext|stock]
#   tools/novastack/stack.sh computes up|down|restart [--driver ext|stock]
#                                                [--set [a:|b:]SECTION.OPTION=VALUE ...]
#                                                [--var LIVEMIG_EXT_<OPTION>=VALUE ...]
#   tools/novastack/stack.sh images [--dirty-mb N] [--dirty-rate MB_S]
#   tools/novastack/stack.sh status | down | reset
#
# "up" installs first when needed.  The computes need the lab running
# (nova-livemig-ext lab start) and whoever uses them should hold the lab lock
# (flock /var/tmp/nova-livemig-ext-lab/lab.lock ...).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools/lib/trusted-dir.sh
source "$here/../lib/trusted-dir.sh"
state=${NOVASTACK_DIR:-/var/tmp/novastack}
lab=${NOVA_LIVEMIG_LAB_DIR:-/var/tmp/nova-livemig-ext-lab}
# novastack.py reads both from the environment: the directories checked
# below are the ones it uses (an empty variable would be "." there).
export NOVASTACK_DIR=$state NOVA_LIVEMIG_LAB_DIR=$lab
cmd=${1:-}
if [ -z "$cmd" ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
# Root runs databases, services and the virtualenv's Python from $state, and
# reads the lab's guest and writes instances in $lab: before anything in them
# is read or run, whatever the command, each must be root's alone all the
# way from / (anybody can create a directory under /var/tmp first).
hint="remove it or set NOVASTACK_DIR to another directory"
if [ "$cmd" != status ] && [ "$cmd" != iniset ]; then
    trusted_dir -c novastack "$state" "$hint" || exit 1
elif [ -e "$state" ] || [ -L "$state" ]; then
    trusted_dir novastack "$state" "$hint" || exit 1
else
    echo "novastack: no virtualenv in $state/venv: run '$0 install'" >&2
    exit 1
fi
if [ -e "$lab" ] || [ -L "$lab" ]; then
    trusted_dir novastack "$lab" "remove it or set NOVA_LIVEMIG_LAB_DIR" || exit 1
fi
# One command at a time changes the stack (several test workers may ask).
if [ "$cmd" != status ] && [ "$cmd" != iniset ]; then
    if [ -L "$state/stack.lock" ]; then
        echo "novastack: $state/stack.lock is a symlink: remove it" >&2
        exit 1
    fi
    exec 9>>"$state/stack.lock"
    flock 9
fi
if [ "$cmd" = install ] || [ "$cmd" = up ]; then
    bash "$here/install.sh"
fi
[ "$cmd" = install ] && exit 0
if [ ! -e "$state/venv/bin/python" ] && [ ! -L "$state/venv/bin/python" ]; then
    echo "novastack: no virtualenv in $state/venv: run '$0 install'" >&2
    exit 1
fi
# The interpreter itself and every directory and symlink on the way to it.
trusted_exec novastack "$state/venv/bin/python" \
    "remove $state/venv and run '$0 install'" || exit 1
exec "$state/venv/bin/python" "$here/novastack.py" "$@"
