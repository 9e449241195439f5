#!/usr/bin/env bash
# shellcheck disable=SC2034,SC1091
# (plugin.sh reads NOVA_CONF, NOVA_CPU_CONF, VIRT_DRIVER; settings and
# plugin.sh are sourced from the checkout.)
# Run one phase of the project's devstack plugin (devstack/plugin.sh) against
# the novastack's configuration, with the few devstack functions the plugin
# calls provided here.  So the stack is configured by the plugin's own code.
#
#   devstack-phase.sh install
#   devstack-phase.sh post-config COMPUTE_CONF
#   devstack-phase.sh test-config COMPUTE_CONF COMPUTE_LOG
#
# NOVASTACK_BIN is the stack virtualenv's bin directory.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
phase=$1
conf=${2:-}
compute_log=${3:-}

NOVA_BIN_DIR=${NOVASTACK_BIN:?}
NOVA_CONF=$conf
NOVA_CPU_CONF=$conf
VIRT_DRIVER=libvirt
export NOVA_BIN_DIR

# --- the devstack functions plugin.sh uses ---
function is_service_enabled { [[ "$1" == n-cpu ]]; }
function echo_summary { echo "$*"; }
function die { shift; echo "devstack plugin: $*" >&2; exit 1; }
function iniset {
    "$NOVA_BIN_DIR/python3" "$here/novastack.py" iniset "$1" "$2" "$3" "$4"
}
function setup_develop {
    local out
    out=$(nice -n 10 "$NOVA_BIN_DIR/pip" install -q --no-deps -e "$1" 2>&1) \
        || { echo "$out" >&2; return 1; }
}

source "$repo/devstack/settings"
# Load the functions only: no phase matches "load".
source "$repo/devstack/plugin.sh" load
# Without systemd: nova-compute's log is its log file.
function livemig_ext_ncpu_log { cat "$compute_log"; }

case $phase in
    install) install_livemig_ext ;;
    post-config) configure_livemig_ext ;;
    test-config) LIVEMIG_EXT_CHECK_TIMEOUT_S=60 check_livemig_ext ;;
    *) echo "devstack-phase.sh: unknown phase $phase" >&2; exit 2 ;;
esac
