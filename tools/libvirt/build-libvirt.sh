#!/usr/bin/env bash
# Build the libvirt daemons the lab runs: Debian's libvirt 11.3.0 (trixie's
# source package, all of its patches) plus postcopy-resume-fd.patch beside
# this script, the fix of libvirt 11.4.0 for the destination daemon's crash
# on every post-copy resume. Debian 12 has no binary with that fix.
#
#   bash tools/libvirt/build-libvirt.sh            # build once, then no-op
#   bash tools/libvirt/build-libvirt.sh --check    # is it built? (exit 0/1)
#
# Only the daemon side needs the fix: libvirtd, virtlogd and the QEMU and
# remote drivers are installed under $NOVA_LIVEMIG_LIBVIRT_PREFIX (default
# /opt/nova-livemig-ext/libvirt-11.3.0-resumefix), beside Debian's
# packages, which stay untouched: clients and libvirt-python keep using the
# system library, and the daemon reads Debian's /etc/libvirt, /var/lib,
# /var/log and /run paths, so the lab's bind mounts work unchanged.
#
# The sources come from Debian's archive and are checked before use:
# trixie's InRelease against the Debian archive keyring (gpgv), the Sources
# index against InRelease, each tarball against the Sources index.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
prefix=${NOVA_LIVEMIG_LIBVIRT_PREFIX:-/opt/nova-livemig-ext/libvirt-11.3.0-resumefix}
upstream=11.3.0
suite=trixie
patch_file=$here/postcopy-resume-fd.patch
# What this build is made of: a change of either rebuilds it.
recipe=$( (cat "$0" "$patch_file") | sha256sum | cut -c1-16)
info=$prefix/BUILD-INFO

built() {
    [ -x "$prefix/sbin/libvirtd" ] && [ -f "$info" ] \
        && grep -qx "recipe=$recipe" "$info"
}

if [ "${1:-}" = --check ]; then
    built
    exit
fi
if built; then
    echo "build-libvirt: $(sed -n 's/^build=//p' "$info") already in $prefix"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "build-libvirt: must run as root (apt-get, install under $prefix)" >&2
    exit 1
fi

build_deps=(meson ninja-build gcc pkg-config xsltproc libxml2-utils
            libglib2.0-dev libxml2-dev libgnutls28-dev libtirpc-dev
            libjson-c-dev libnl-3-dev libnl-route-3-dev libcap-ng-dev
            libnuma-dev libreadline-dev python3-docutils gpgv
            debian-archive-keyring xz-utils curl patch)
missing=$(dpkg-query -W -f='${Status} ${Package}\n' "${build_deps[@]}" 2>&1 \
          | awk '!/install ok installed/ {print $NF}' || true)
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${build_deps[@]}"
fi

# The machine's own Debian mirror.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources \
         2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

work=$(mktemp -d /var/tmp/nova-livemig-ext-libvirt-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"

fetch() {  # URL FILE
    curl -fsSL --retry 3 -o "$2" "$1" \
        || { echo "build-libvirt: cannot download $1" >&2; exit 1; }
}
sha256_is() {  # FILE SHA256
    local got
    got=$(sha256sum "$1" | cut -d' ' -f1)
    if [ "$got" != "$2" ]; then
        echo "build-libvirt: $1: sha256 $got, the signed index says $2" >&2
        exit 1
    fi
}

fetch "$mirror/dists/$suite/InRelease" InRelease
if ! gpgv --keyring "$keyring" --output Release InRelease 2>gpgv.log; then
    echo "build-libvirt: $suite's InRelease has no valid Debian signature:" >&2
    cat gpgv.log >&2
    exit 1
fi
sources_sha=$(awk '$3 == "main/source/Sources.xz" && length($1) == 64 {print $1}' \
              Release | head -n1)
[ -n "$sources_sha" ] || { echo "build-libvirt: no Sources.xz in $suite's Release" >&2; exit 1; }
fetch "$mirror/dists/$suite/main/source/Sources.xz" Sources.xz
sha256_is Sources.xz "$sources_sha"

# The libvirt stanza: its version and the sha256 of each file.
xz -dc Sources.xz > Sources
awk '/^Package: libvirt$/ {p = 1} p && /^$/ {exit} p' Sources > stanza
version=$(sed -n 's/^Version: //p' stanza)
case "$version" in
    "$upstream"-*) ;;
    *) echo "build-libvirt: $suite's libvirt is '${version:-missing}', not $upstream;" \
            "this recipe is for $upstream" >&2
       exit 1 ;;
esac
checksum_of() {  # FILE NAME -> sha256 from the Checksums-Sha256 field
    awk -v f="$1" '/^Checksums-Sha256:/ {c = 1; next} /^[^ ]/ {c = 0}
                   c && $3 == f {print $1}' stanza
}
orig=libvirt_${upstream}.orig.tar.xz
debian=libvirt_${version}.debian.tar.xz
for f in "$orig" "$debian"; do
    sum=$(checksum_of "$f")
    [ -n "$sum" ] || { echo "build-libvirt: $f is not in the signed index" >&2; exit 1; }
    fetch "$mirror/pool/main/libv/libvirt/$f" "$f"
    sha256_is "$f" "$sum"
done
echo "build-libvirt: Debian's libvirt $version sources verified"

tar xf "$orig"
src=$work/libvirt-$upstream
tar xf "$debian" -C "$src"
# Debian's quilt series, in order, then ours.
while read -r p _; do
    case "$p" in ''|'#'*) continue ;; esac
    patch -d "$src" -p1 --quiet --forward < "$src/debian/patches/$p"
done < "$src/debian/patches/series"
if grep -q 'listenAddress, port, NULL)))' "$src/src/qemu/qemu_migration.c"; then
    patch -d "$src" -p1 --forward < "$patch_file"
else
    echo "build-libvirt: Debian $version already passes an fd on resume;" \
         "not applying $(basename "$patch_file")"
fi

build_id="libvirt $version+resumefix1"
meson setup "$work/build" "$src" \
    --prefix="$prefix" --sysconfdir=/etc --localstatedir=/var \
    -Drunstatedir=/run --buildtype=plain -Dauto_features=disabled \
    -Ddriver_qemu=enabled -Ddriver_remote=enabled -Ddriver_libvirtd=enabled \
    -Dlibnl=enabled -Djson_c=enabled -Dcapng=enabled -Dnumactl=enabled \
    -Dreadline=enabled -Drpath=enabled -Ddocs=disabled -Dtests=disabled \
    -Dinit_script=none -Dpackager=nova-livemig-ext \
    -Dpackager_version="$version+resumefix1" > meson-setup.log 2>&1 \
    || { tail -n 40 meson-setup.log >&2; exit 1; }
ninja -C "$work/build" > ninja.log 2>&1 || { tail -n 60 ninja.log >&2; exit 1; }
# meson install also writes /etc/libvirt and /var: stage it, keep the prefix.
DESTDIR=$work/stage meson install -C "$work/build" --no-rebuild > install.log 2>&1 \
    || { tail -n 40 install.log >&2; exit 1; }
rm -rf "$prefix.new"
mkdir -p "$(dirname "$prefix")"
cp -a "$work/stage$prefix" "$prefix.new"
cat > "$prefix.new/BUILD-INFO" <<INFO
build=$build_id
debian_version=$version
fix=$(basename "$patch_file")
recipe=$recipe
INFO
rm -rf "$prefix"
mv "$prefix.new" "$prefix"
"$prefix/sbin/libvirtd" --version
echo "build-libvirt: $build_id installed in $prefix ($(du -sh "$prefix" | cut -f1))"
