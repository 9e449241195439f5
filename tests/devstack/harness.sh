#!/bin/bash
# Run devstack/plugin.sh phases the way stack.sh, unstack.sh and clean.sh do,
# with small stand-ins for the devstack functions the plugin calls.
#
#     tests/devstack/harness.sh "stack install" "stack post-config" ...
#
# The environment says where things are (tests/devstack/test_plugin.py sets
# it): HARNESS_VENV (a venv with Nova installed editable), HARNESS_CONSTRAINTS
# (pip constraints, as devstack's upper-constraints), HARNESS_JOURNAL (what
# the stand-in journalctl prints for nova-compute), NOVA_CONF,
# NOVA_CPU_CONF, ENABLED_SERVICES and any LIVEMIG_EXT_* variable, as
# local.conf would set them.
set -o errexit -o nounset -o pipefail

HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HARNESS_DIR/../.." && pwd)
: "${HARNESS_VENV:?}" "${NOVA_CONF:?}" "${NOVA_CPU_CONF:?}"
HARNESS_CONSTRAINTS=${HARNESS_CONSTRAINTS:-/dev/null}
HARNESS_JOURNAL=${HARNESS_JOURNAL:-/dev/null}
HARNESS_INVOCATION=0123456789abcdef0123456789abcdef
ENABLED_SERVICES=${ENABLED_SERVICES:-n-cpu}
VIRT_DRIVER=${VIRT_DRIVER:-libvirt}
# As lib/nova with GLOBAL_VENV: Nova's scripts and Python live in one venv.
NOVA_BIN_DIR=$HARNESS_VENV/bin
PYTHON=$HARNESS_VENV/bin/python3
export NOVA_CONF NOVA_CPU_CONF VIRT_DRIVER NOVA_BIN_DIR PYTHON

# --- stand-ins for devstack's functions (functions, inc/ini-config,
# --- inc/python) -----------------------------------------------------------

function echo_summary {
    echo "summary: $*"
}

function die {
    local line=$1
    shift
    echo "die: plugin.sh line $line: $*" >&2
    exit 1
}

function is_service_enabled {
    local service
    for service in "$@"; do
        if [[ ",$ENABLED_SERVICES," == *",$service,"* ]]; then
            return 0
        fi
    done
    return 1
}

# iniset FILE SECTION OPTION VALUE: set one option, adding the section or
# the option when missing, as devstack's inc/ini-config does.
function iniset {
    "$PYTHON" - "$@" <<'PY'
import configparser
import sys

path, section, option, value = sys.argv[1:5]
parser = configparser.RawConfigParser(default_section='__none__')
parser.optionxform = str
parser.read(path)
if not parser.has_section(section):
    parser.add_section(section)
parser.set(section, option, value)
with open(path, 'w') as f:
    parser.write(f)
PY
}

# devstack's setup_develop: an editable, constrained pip install.
function setup_develop {
    local project_dir=$1
    "$HARNESS_VENV/bin/pip" install --quiet --disable-pip-version-check \
        -c "$HARNESS_CONSTRAINTS" -e "$project_dir"
}

function pip_uninstall {
    "$HARNESS_VENV/bin/pip" uninstall --quiet --yes "$1" || true
}

# What systemd would report for devstack@n-cpu.service.
function systemctl {
    echo "$HARNESS_INVOCATION"
}

# shellcheck disable=SC2032  # plugin.sh calls it through the sudo stand-in
function journalctl {
    if [[ " $* " == *" _SYSTEMD_INVOCATION_ID=$HARNESS_INVOCATION "* ]]; then
        cat "$HARNESS_JOURNAL"
    fi
}

function sleep {
    :
}

# devstack's stack user has password-less sudo; here nothing needs root.
function sudo {
    "$@"
}

# --- stack.sh: settings once, then plugin.sh once per phase ---------------

# shellcheck source=devstack/settings
source "$TOP/devstack/settings"
for phase in "$@"; do
    # shellcheck disable=SC2086  # "stack install" is two words, as in stack.sh
    set -- $phase
    echo "phase: $phase"
    # shellcheck source=devstack/plugin.sh
    source "$TOP/devstack/plugin.sh" "$@"
done
