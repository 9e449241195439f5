#!/usr/bin/env bash
# The project's test command: installs what a fresh machine lacks, then runs
# every test (unit, functional on Nova's own fixtures, e2e against a real
# libvirt + QEMU lab) and ends with the line "N passed, N failed, N skipped".
#
#   bash tools/run-tests.sh            # everything
#   bash tools/run-tests.sh tests.unit # a subset (stestr filter)
#
# The unit and functional tests also run on each older Nova release we
# support (NOVA_LIVEMIG_OLDER_RELEASES, default "2025.1": Nova 31 with its
# upper constraints, in .venv-nova31; "2025.1 2026.1" adds Nova 33; set it
# empty to leave them out).
#
# The e2e tests need root (libvirtd, network namespaces); as another user
# they are skipped with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
    # The lab's state directory becomes a root libvirtd's /etc/libvirt:
    # before anything runs, it must be root's alone all the way from /.
    # The lab and the tests read the same variable (exported, so an empty
    # one cannot mean "." there). The stack's directory is checked by
    # tools/novastack/stack.sh itself.
    # shellcheck source=tools/lib/trusted-dir.sh
    source tools/lib/trusted-dir.sh
    export NOVA_LIVEMIG_LAB_DIR=${NOVA_LIVEMIG_LAB_DIR:-/var/tmp/nova-livemig-ext-lab}
    trusted_dir -c run-tests "$NOVA_LIVEMIG_LAB_DIR" \
        "remove it or set NOVA_LIVEMIG_LAB_DIR to another directory" || exit 1
    bash tools/install-lab-packages.sh
    # libvirt 11.3.0 with the post-copy resume fix, for the lab's daemons
    # (Debian 12 has no binary with it); about 3 minutes once, then nothing.
    if [ "${NOVA_LIVEMIG_LAB_LIBVIRT:-auto}" != debian ]; then
        bash tools/libvirt/build-libvirt.sh
    fi
fi
bash tools/setup-venv.sh
VENV=${NOVA_LIVEMIG_VENV:-.venv}
OLDER_RELEASES=${NOVA_LIVEMIG_OLDER_RELEASES-2025.1}
older_venv() {
    case "$1" in
        2025.1) echo .venv-nova31 ;;
        2026.1) echo .venv-nova33 ;;
        *) echo "run-tests: unknown release '$1'" >&2; return 1 ;;
    esac
}
# The filter for the older releases: unit and functional tests only.
older_filter=()
if [ $# -eq 0 ]; then
    older_filter=(tests.unit tests.functional)
else
    for arg in "$@"; do
        case "$arg" in
            tests.unit*|tests.functional*|tests/unit*|tests/functional*)
                older_filter+=("$arg") ;;
        esac
    done
fi
if [ ${#older_filter[@]} -gt 0 ]; then
    for release in $OLDER_RELEASES; do
        NOVA_LIVEMIG_VENV=$(older_venv "$release") \
            bash tools/setup-venv.sh "$release"
    done
fi

if [ "$(id -u)" -eq 0 ]; then
    "$VENV/bin/nova-livemig-ext" lab setup
    # The real OpenStack the tests in tests/nova_e2e drive (MariaDB,
    # RabbitMQ, placement, nova, glance, neutron API in their own venv).
    bash tools/novastack/stack.sh install
fi

results=$(mktemp -d)
cleanup() {
    rm -rf "$results"
    if [ "$(id -u)" -eq 0 ]; then
        bash tools/novastack/stack.sh down >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
rc=0

# Pass 1: everything. Nova's functional base runs under eventlet here
# (nova.tests.functional monkey-patches unless told not to).
"$VENV/bin/stestr" run --color "$@" || rc=1
"$VENV/bin/stestr" last --subunit > "$results/1.subunit" || rc=1

# Pass 2: the functional tests again on native threads, nova-compute's
# default in Nova 34.
if [ $# -eq 0 ] || [[ "$*" == *functional* ]]; then
    OS_NOVA_DISABLE_EVENTLET_PATCHING=true \
        "$VENV/bin/stestr" run --color tests.functional || rc=1
    "$VENV/bin/stestr" last --subunit > "$results/2.subunit" || rc=1
fi

# Pass 3: unit and functional tests on each older release, with its own
# Nova and upper constraints (and its own stestr repository). Nova 31 runs
# nova-compute on eventlet only, so its functional tests run once, patched.
# flake8 and mypy (test_style) do not depend on Nova: they ran in pass 1.
if [ ${#older_filter[@]} -gt 0 ]; then
    for release in $OLDER_RELEASES; do
        older=$(older_venv "$release")
        nova_version=$("$older/bin/python" -c \
            'from importlib import metadata; print(metadata.version("nova"))')
        echo "run-tests: Nova $nova_version ($release): ${older_filter[*]}"
        "$older/bin/stestr" --repo-url "$older" run --color \
            --exclude-regex '^tests\.unit\.test_style\.' "${older_filter[@]}" \
            || rc=1
        "$older/bin/stestr" --repo-url "$older" last --subunit \
            > "$results/3-$release.subunit" || rc=1
    done
fi

summary=$("$VENV/bin/python" tools/subunit_summary.py "$results"/*.subunit)
passed=${summary%% passed*}
failed=$(echo "$summary" | sed 's/.* \([0-9]*\) failed.*/\1/')
if [ "$rc" -eq 0 ] && [ "$passed" -eq 0 ]; then
    echo "run-tests: no test ran" >&2
    rc=1
fi
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    # An import error or a crashed worker fails a run without a failed test.
    summary=$(echo "$summary" | sed 's/ 0 failed/ 1 failed/')
fi
echo "$summary"
exit "$rc"
