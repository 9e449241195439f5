#!/bin/bash
# shellcheck disable=SC2154,SC2153
# (devstack defines NOVA_CONF, NOVA_CPU_CONF, ... and sources settings, which
# defines LIVEMIG_EXT_DIR and the other LIVEMIG_EXT_* variables, before it
# sources this file.)
#
# devstack/plugin.sh: install nova-livemig-ext on every node that runs
# nova-compute and make nova-compute load its driver.
#
#     [[local|localrc]]
#     enable_plugin nova-livemig-ext https://opendev.org/x/nova-livemig-ext
#
# Phases:
#   stack install      pip-install the package (editable, as devstack installs
#                      every project) into the environment Nova runs from.
#   stack post-config  [DEFAULT] compute_driver and [livemig_ext] options from
#                      the LIVEMIG_EXT_* variables of devstack/settings.
#   stack test-config  prove nova-compute loaded LibvirtLiveMigExtDriver.
#   unstack            nothing to undo: no file of Nova's was written.
#   clean              uninstall the package.
#
# Nova loads a compute driver only as nova.virt.<compute_driver>. The package
# answers for nova.virt.livemig_ext with an import finder installed by
# nova_livemig_ext.pth in site-packages, so nothing is ever added to Nova's
# tree: that also works when Nova is installed editable, where a file put
# under site-packages/nova would never be imported.

LIVEMIG_EXT_XTRACE=$(set +o | grep xtrace)
set +o xtrace

LIVEMIG_EXT_DIST=nova-livemig-ext
LIVEMIG_EXT_STARTED_LINE='nova-livemig-ext: mode '
LIVEMIG_EXT_REFUSED_LINE='nova-livemig-ext refuses this configuration'
LIVEMIG_EXT_NCPU_UNIT=devstack@n-cpu.service

# The Python nova-compute runs with: devstack's global venv when it has one.
function livemig_ext_python {
    if [[ -n "${NOVA_BIN_DIR:-}" && -x "$NOVA_BIN_DIR/python3" ]]; then
        echo "$NOVA_BIN_DIR/python3"
    else
        echo "${PYTHON:-python3}"
    fi
}

function install_livemig_ext {
    setup_develop "$LIVEMIG_EXT_DIR"
    # A fresh interpreter must resolve the alias through the .pth alone.
    if ! "$(livemig_ext_python)" -c \
            'import importlib.util, sys; sys.exit(importlib.util.find_spec("nova.virt.livemig_ext") is None)'; then
        die $LINENO "nova-livemig-ext is installed but nova.virt.livemig_ext" \
            "does not resolve in $(livemig_ext_python)"
    fi
}

# Write the driver and the options into one Nova configuration file.
function livemig_ext_write_conf {
    local conf=$1
    local option var value
    if [[ "$LIVEMIG_EXT_ENABLE_DRIVER" == "True" ]]; then
        iniset "$conf" DEFAULT compute_driver "$LIVEMIG_EXT_COMPUTE_DRIVER"
    fi
    for option in "${LIVEMIG_EXT_OPTIONS[@]}"; do
        var=LIVEMIG_EXT_${option^^}
        value=${!var:-}
        if [[ -n "$value" ]]; then
            iniset "$conf" livemig_ext "$option" "$value"
        fi
    done
}

function configure_livemig_ext {
    if [[ "$LIVEMIG_EXT_ENABLE_DRIVER" == "True" && "${VIRT_DRIVER:-libvirt}" != "libvirt" ]]; then
        die $LINENO "nova-livemig-ext extends the libvirt driver;" \
            "VIRT_DRIVER is ${VIRT_DRIVER}"
    fi
    # nova-cpu.conf is the file nova-compute reads, but devstack builds it
    # again from nova.conf when it starts nova-compute (and re-applies only
    # local.conf's post-config sections); writing both keeps the settings
    # whichever devstack version runs. Only nova-compute reads them.
    livemig_ext_write_conf "$NOVA_CONF"
    if [[ -n "${NOVA_CPU_CONF:-}" && "$NOVA_CPU_CONF" != "$NOVA_CONF" ]]; then
        livemig_ext_write_conf "$NOVA_CPU_CONF"
    fi
}

# nova-compute's log since it last started.
function livemig_ext_ncpu_log {
    local invocation
    invocation=$(systemctl show -p InvocationID --value "$LIVEMIG_EXT_NCPU_UNIT" 2>/dev/null)
    # The stack user may not be in the systemd-journal group.
    if [[ -n "$invocation" ]]; then
        sudo journalctl --no-pager -o cat "_SYSTEMD_INVOCATION_ID=$invocation" 2>/dev/null
    else
        sudo journalctl --no-pager -o cat -u "$LIVEMIG_EXT_NCPU_UNIT" 2>/dev/null
    fi
}

function check_livemig_ext {
    local python conf log waited=0
    python=$(livemig_ext_python)
    conf=${NOVA_CPU_CONF:-$NOVA_CONF}
    if [[ "$LIVEMIG_EXT_ENABLE_DRIVER" != "True" ]]; then
        if ! "$python" "$LIVEMIG_EXT_DIR/devstack/check_driver.py" --options-only "$conf"; then
            die $LINENO "nova-livemig-ext: the [livemig_ext] section of $conf is refused"
        fi
        return 0
    fi
    # 1. The configuration devstack wrote loads our driver through Nova's own
    #    loader, from the environment nova-compute runs in.
    if ! "$python" "$LIVEMIG_EXT_DIR/devstack/check_driver.py" "$conf"; then
        die $LINENO "nova-livemig-ext: $conf does not load" \
            "LibvirtLiveMigExtDriver with a valid [livemig_ext] section"
    fi
    # 2. The running nova-compute did: LibvirtLiveMigExtDriver.init_host logs
    #    one line with the mode, flags and ladder, or the refusal.
    while true; do
        log=$(livemig_ext_ncpu_log)
        if [[ "$log" == *"$LIVEMIG_EXT_REFUSED_LINE"* ]]; then
            echo "$log" | grep -A 20 -F "$LIVEMIG_EXT_REFUSED_LINE" | head -n 20
            die $LINENO "nova-compute refused the [livemig_ext] configuration"
        fi
        if [[ "$log" == *"$LIVEMIG_EXT_STARTED_LINE"* ]]; then
            echo "$log" | grep -F "$LIVEMIG_EXT_STARTED_LINE" | tail -n 1
            return 0
        fi
        if (( waited >= LIVEMIG_EXT_CHECK_TIMEOUT_S )); then
            die $LINENO "nova-compute did not log '$LIVEMIG_EXT_STARTED_LINE...'" \
                "within ${LIVEMIG_EXT_CHECK_TIMEOUT_S} s: is it running the" \
                "LibvirtLiveMigExtDriver?"
        fi
        sleep 5
        waited=$((waited + 5))
    done
}

function cleanup_livemig_ext {
    if declare -F pip_uninstall >/dev/null; then
        pip_uninstall "$LIVEMIG_EXT_DIST"
    else
        "$(livemig_ext_python)" -m pip uninstall -y "$LIVEMIG_EXT_DIST" || true
    fi
}

if is_service_enabled n-cpu; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing nova-livemig-ext"
        install_livemig_ext
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring nova-compute for nova-livemig-ext"
        configure_livemig_ext
    elif [[ "$1" == "stack" && "$2" == "test-config" ]]; then
        echo_summary "Checking that nova-compute loaded nova-livemig-ext"
        check_livemig_ext
    fi
    if [[ "$1" == "clean" ]]; then
        cleanup_livemig_ext
    fi
fi

$LIVEMIG_EXT_XTRACE
