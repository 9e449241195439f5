"""Which libvirt daemons the lab runs: the patched build, or Debian's.

Debian 12's libvirt (11.3.0 from bookworm-backports) crashes the
destination daemon on every post-copy resume. ``tools/libvirt/build-libvirt.sh``
builds the same release with the fix of libvirt 11.4.0 under its own
prefix; the lab runs that build when it is there, so a broken post-copy can
be resumed for real. ``NOVA_LIVEMIG_LAB_LIBVIRT`` chooses:

* ``auto`` (default): the patched build if it is installed, else Debian's;
* ``patched``: the patched build, refused when it is missing;
* ``debian``: Debian's packaged daemon, to show that nothing ever sends a
  resume to a daemon that would crash on it.

Both report version 11.3.0 to their clients; the lab knows which one it
started, and says so in ``lab status`` and in every report.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

from nova_livemig_ext import safefile
from nova_livemig_lab.errors import LabError

LIBVIRT_ENV = "NOVA_LIVEMIG_LAB_LIBVIRT"
PREFIX_ENV = "NOVA_LIVEMIG_LIBVIRT_PREFIX"
DEFAULT_PREFIX = Path("/opt/nova-livemig-ext/libvirt-11.3.0-resumefix")
BUILD_SCRIPT = "tools/libvirt/build-libvirt.sh"
KINDS = ("auto", "patched", "debian")


@dataclasses.dataclass(frozen=True)
class LibvirtBuild:
    """The libvirtd the lab starts, and what it is."""

    kind: str  # "patched" or "debian"
    daemon: str
    name: str
    # Whether VIR_MIGRATE_POSTCOPY_RESUME works against it; the lab, like an
    # operator who checked, then sets [livemig_ext] postcopy_resume = patched.
    resume_fixed: bool

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "daemon": self.daemon, "name": self.name,
                "postcopy_resume_fixed": self.resume_fixed}


def prefix() -> Path:
    return Path(os.environ.get(PREFIX_ENV, str(DEFAULT_PREFIX)))


def _build_info(at: Path) -> dict[str, str]:
    try:
        text = (at / "BUILD-INFO").read_text()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def patched(at: Path | None = None) -> LibvirtBuild | None:
    """The patched build under ``at`` (default: its prefix), if installed."""
    at = prefix() if at is None else at
    daemon = at / "sbin" / "libvirtd"
    info = _build_info(at)
    if not (daemon.is_file() and os.access(daemon, os.X_OK) and info.get("build")):
        return None
    # A root libvirtd runs from here: nobody else may have placed it.
    try:
        safefile.check_trusted_dir(at / "sbin")
    except OSError as exc:
        raise LabError(f"refusing the libvirt build in {at}: {exc}") from None
    st = daemon.lstat()
    if daemon.is_symlink() or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise LabError(f"refusing {daemon}: not a regular file of this user, "
                       "writable by nobody else")
    return LibvirtBuild("patched", str(daemon),
                        f"{info['build']} ({BUILD_SCRIPT}, post-copy resume fix)", True)


def debian() -> LibvirtBuild:
    """Debian's packaged libvirtd."""
    daemon = shutil.which("libvirtd", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/libvirtd"
    try:
        version = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "libvirt-daemon"],
            capture_output=True, text=True, check=False, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        version = ""
    return LibvirtBuild("debian", daemon,
                        f"Debian libvirt-daemon {version or 'unknown version'} "
                        "(post-copy resume crashes the destination)", False)


def select(kind: str | None = None) -> LibvirtBuild:
    """The build ``kind`` (else ``$NOVA_LIVEMIG_LAB_LIBVIRT``, else auto)."""
    kind = kind or os.environ.get(LIBVIRT_ENV) or "auto"
    if kind not in KINDS:
        raise LabError(f"{LIBVIRT_ENV}={kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "debian":
        return debian()
    found = patched()
    if found is not None:
        return found
    if kind == "patched":
        raise LabError(f"the patched libvirt is not installed in {prefix()}: "
                       f"run 'bash {BUILD_SCRIPT}' first (about 3 minutes)")
    return debian()
