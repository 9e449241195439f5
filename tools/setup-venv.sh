#!/usr/bin/env bash
# Create or refresh a virtualenv with the package, its requirements and the
# test requirements. Sourced by run-tests.sh and demo.sh; re-running costs
# nothing when nothing changed.
#
#   bash tools/setup-venv.sh          # .venv: the newest Nova requirements.txt allows
#   bash tools/setup-venv.sh 2025.1   # .venv-nova31: Nova 31 with 2025.1's upper
#                                     # constraints (the release matrix)
#   bash tools/setup-venv.sh 2026.1   # .venv-nova33: Nova 33, 2026.1's
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RELEASE=${1:-}
PY=${PYTHON:-python3}
# What pins a release's environment: its upper constraints (a copy of
# openstack/requirements' file for that branch) and the Nova and Placement
# series released with it. Placement runs in Nova's functional tests.
pins=()
upper=
case "$RELEASE" in
    '')
        VENV=${NOVA_LIVEMIG_VENV:-.venv}
        ;;
    2025.1)
        VENV=${NOVA_LIVEMIG_VENV:-.venv-nova31}
        upper=tools/constraints/upper-constraints-2025.1.txt
        pins=('nova>=31.0.0,<32' 'openstack-placement>=13.0.0,<14')
        ;;
    2026.1)
        VENV=${NOVA_LIVEMIG_VENV:-.venv-nova33}
        upper=tools/constraints/upper-constraints-2026.1.txt
        pins=('nova>=33.0.0,<34' 'openstack-placement>=15.0.0,<16')
        ;;
    *)
        echo "setup-venv: unknown release '$RELEASE' (known: 2025.1, 2026.1)" >&2
        exit 2
        ;;
esac

# Run as root (demo.sh, run-tests.sh), this script and its callers run
# $VENV/bin/*: a virtualenv elsewhere than the checkout's own (.venv,
# .venv-nova31, .venv-nova33, used as they are, like the checkout) must be
# root's alone all the way from /, or another user's pip would run as root.
case "$VENV" in
    .venv|.venv-nova31|.venv-nova33|"$PWD/.venv"|"$PWD/.venv-nova31"|"$PWD/.venv-nova33") ;;
    *)
        if [ "$(id -u)" -eq 0 ]; then
            # shellcheck source=tools/lib/trusted-dir.sh
            source tools/lib/trusted-dir.sh
            trusted_dir -c setup-venv "$VENV" \
                "remove it or set NOVA_LIVEMIG_VENV to another directory" || exit 1
            if [ -e "$VENV/bin" ] || [ -L "$VENV/bin" ]; then
                trusted_dir setup-venv "$VENV/bin" "remove $VENV" || exit 1
            fi
        fi
        ;;
esac

# libvirt-python builds against the host's libvirt and must know its whole
# API (2025.1's 11.0.0 does not build against libvirt 11.3): the binding of
# the host's libvirt version replaces the release's pin, as a distribution's
# python3-libvirt would.
host_libvirt=$(pkg-config --modversion libvirt 2>/dev/null || true)
stamp="$VENV/.installed-$( { cat requirements.txt test-requirements.txt \
    benchmarks/requirements.txt setup.cfg nova_livemig_ext.pth tools/build_hook.py \
    lab/pyproject.toml \
    ${upper:+"$upper"}; [ -z "$upper" ] || echo "${pins[*]} $host_libvirt"; } \
    | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    constraints=()
    if [ -n "$upper" ]; then
        grep -v '^libvirt-python===' "$upper" > "$VENV/upper-constraints.txt"
        if [ -n "$host_libvirt" ]; then
            echo "libvirt-python==$host_libvirt" >> "$VENV/upper-constraints.txt"
        fi
        constraints=(-c "$VENV/upper-constraints.txt")
    fi
    "$VENV/bin/pip" install -q -U pip
    "$VENV/bin/pip" install -q "${constraints[@]}" -r requirements.txt \
        -r test-requirements.txt -r benchmarks/requirements.txt "${pins[@]}"
    # The package itself is ours, not the release's: no constraints. The
    # lab is a distribution of its own (lab/), for this checkout only.
    "$VENV/bin/pip" install -q --no-deps -e .
    "$VENV/bin/pip" install -q --no-deps -e lab
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
