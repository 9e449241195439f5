"""Running the commands the lab is made of, with errors that say what failed."""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Sequence

from nova_livemig_lab.errors import LabError

# Programs the lab cannot do without, and the package that ships each.
REQUIRED_PROGRAMS: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "libvirtd": "libvirt-daemon",
    "ip": "iproute2",
    "tc": "iproute2",
    "unshare": "util-linux",
    "busybox": "busybox-static",
    "cpio": "cpio",
    "gcc": "gcc",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
}


def run(cmd: Sequence[str], check: bool = True, timeout_s: float = 120.0,
        input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise LabError carrying its stderr."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True,
                              timeout=timeout_s, input=input_text)
    except FileNotFoundError as exc:
        raise LabError(f"{cmd[0]}: not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(cmd)}: no answer within {timeout_s:.0f} s") from exc
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                       f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def require_root() -> None:
    """Namespaces, tc and libvirtd as root all need uid 0."""
    if os.geteuid() != 0:
        raise LabError("the lab must run as root (namespaces, tc, libvirtd)")


def missing_programs() -> list[str]:
    """Names of required programs not on PATH (sbin included)."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [name for name in REQUIRED_PROGRAMS if shutil.which(name, path=path) is None]


def require_programs() -> None:
    missing = missing_programs()
    if missing:
        packages = sorted({REQUIRED_PROGRAMS[name] for name in missing})
        raise LabError(f"missing programs {', '.join(missing)} (packages "
                       f"{', '.join(packages)}): run 'python -m nova_livemig_lab setup' "
                       "or tools/install-lab-packages.sh")


def require_libvirt_python() -> None:
    try:
        import libvirt  # noqa: F401
    except ImportError as exc:
        raise LabError("python module 'libvirt' missing: pip install libvirt-python "
                       "(needs libvirt-dev and pkg-config)") from exc


def userfaultfd_available() -> bool:
    """Post-copy needs userfaultfd: ask the kernel directly (x86_64 syscall 323)."""
    if os.path.exists("/dev/userfaultfd"):
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(323, os.O_CLOEXEC | os.O_NONBLOCK)
    if fd < 0:
        return False
    os.close(fd)
    return True


def quiet_libvirt() -> None:
    """libvirt prints every error to stderr; the lab reports the ones that matter itself.

    Expected errors (a domain not found on the other host, the source going
    away at switchover) would otherwise bury the real output.
    """
    import libvirt
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
