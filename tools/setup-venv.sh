#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv by default) with the
# package, its requirements and the test requirements. Sourced by
# run-tests.sh and demo.sh; re-running costs nothing when nothing changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${NOVA_LIVEMIG_VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.installed-$(cat requirements.txt test-requirements.txt benchmarks/requirements.txt setup.cfg nova_livemig_ext.pth tools/build_hook.py | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q -U pip
    "$VENV/bin/pip" install -q -r requirements.txt -r test-requirements.txt \
        -r benchmarks/requirements.txt
    "$VENV/bin/pip" install -q -e .
    touch "$stamp"
fi
