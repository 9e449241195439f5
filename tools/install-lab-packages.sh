#!/usr/bin/env bash
# Install the Debian packages the real libvirt + QEMU lab needs.
#
# Debian 12's stock QEMU 7.2 loses dirty bits for guests running under TCG
# while they are live-migrated (fixed upstream in QEMU 9.0, "physmem: Fix
# migration dirty bitmap coherency with TCG memory access"), so on bookworm
# QEMU and libvirt come from bookworm-backports.  Debian 13 ships new enough
# versions.  Idempotent: a second run installs nothing.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-lab-packages: must run as root (apt-get, libvirtd)" >&2
    exit 1
fi

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
export DEBIAN_FRONTEND=noninteractive

common_pkgs=(busybox-static cpio gcc pkg-config iproute2 kmod python3-venv shellcheck)
virt_pkgs=(qemu-system-x86 qemu-utils libvirt-daemon libvirt-daemon-driver-qemu
           libvirt-clients libvirt-dev)

have_all() {
    dpkg-query -W -f='${Status}\n' "$@" 2>/dev/null | grep -vc 'install ok installed' | grep -qx 0
}

qemu_ok() {
    command -v qemu-system-x86_64 >/dev/null || return 1
    local major
    major=$(qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version \([0-9]*\).*/\1/p')
    [ -n "$major" ] && [ "$major" -ge 9 ]
}

if have_all "${common_pkgs[@]}" "${virt_pkgs[@]}" && qemu_ok; then
    echo "install-lab-packages: all packages present ($(qemu-system-x86_64 --version | head -1))"
    exit 0
fi

target=()
if [ "$codename" = bookworm ]; then
    src=/etc/apt/sources.list.d/nova-livemig-ext-backports.sources
    if [ ! -f "$src" ]; then
        # Same mirror and keyring as the machine's own debian.sources.
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        key=$(awk '/^Signed-By:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        cat > "$src" <<SRC
Types: deb
URIs: ${uri:-http://deb.debian.org/debian}
Suites: bookworm-backports
Components: main
Signed-By: ${key:-/usr/share/keyrings/debian-archive-keyring.gpg}
SRC
    fi
    target=(-t bookworm-backports)
fi

apt-get update -q
apt-get install -y -q --no-install-recommends "${common_pkgs[@]}"
apt-get install -y -q --no-install-recommends "${target[@]}" "${virt_pkgs[@]}"

if ! qemu_ok; then
    echo "install-lab-packages: QEMU >= 9.0 is required (TCG dirty-bit bug), got:" \
         "$(qemu-system-x86_64 --version | head -1)" >&2
    exit 1
fi
# libvirt wants this user to exist even when qemu.conf runs QEMU as root.
getent passwd libvirt-qemu >/dev/null || useradd --system --no-create-home \
    --shell /usr/sbin/nologin libvirt-qemu
echo "install-lab-packages: done ($(qemu-system-x86_64 --version | head -1))"
