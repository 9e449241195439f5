#!/usr/bin/env bash
# The project's test command: installs what a fresh machine lacks, then runs
# every test (unit, functional on Nova's own fixtures, e2e against a real
# libvirt + QEMU lab) and ends with the line "N passed, N failed, N skipped".
#
#   bash tools/run-tests.sh            # everything
#   bash tools/run-tests.sh tests.unit # a subset (stestr filter)
#
# The e2e tests need root (libvirtd, network namespaces); as another user
# they are skipped with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${NOVA_LIVEMIG_VENV:-.venv}
PY=${PYTHON:-python3}

if [ "$(id -u)" -eq 0 ]; then
    bash tools/install-lab-packages.sh
fi

stamp="$VENV/.installed-$(cat requirements.txt test-requirements.txt setup.cfg | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q -U pip
    "$VENV/bin/pip" install -q -r requirements.txt -r test-requirements.txt
    "$VENV/bin/pip" install -q -e .
    touch "$stamp"
fi

if [ "$(id -u)" -eq 0 ] && "$VENV/bin/python" -c 'import nova_livemig_ext.lab' 2>/dev/null; then
    "$VENV/bin/nova-livemig-ext" lab setup
fi

set +e
"$VENV/bin/stestr" run --color "$@"
rc=$?
set -e

summary=$("$VENV/bin/stestr" last --subunit | "$VENV/bin/subunit-stats" 2>/dev/null || true)
count() { echo "$summary" | sed -n "s/^$1 tests:[[:space:]]*\([0-9]*\).*/\1/p"; }
total=$(count Total); passed=$(count Passed); failed=$(count Failed)
skipped=$(count Skipped)
total=${total:-0}; passed=${passed:-0}; failed=${failed:-0}; skipped=${skipped:-0}
if [ "$rc" -eq 0 ] && [ "$total" -eq 0 ]; then
    echo "run-tests: no test ran" >&2
    rc=1
fi
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    # An import error or a crashed worker fails the run without a test.
    failed=1
fi
echo "$passed passed, $failed failed, $skipped skipped"
exit "$rc"
