"""Setup from nothing: packages, the guest kernel and the guest initramfs.

Everything is cached in the state directory; a second ``setup`` rebuilds only
what changed (the initramfs is keyed by a hash of its sources).
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from nova_livemig_lab import lock, system
from nova_livemig_lab.config import HOST_PRIVATE_DIRS, LabConfig
from nova_livemig_lab.errors import LabError

LOG = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO_ROOT / "tools" / "install-lab-packages.sh"
GUEST_SOURCE_DIR = REPO_ROOT / "tools" / "lab"
KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PATH = Path("/bin/busybox")
BUSYBOX_APPLETS = ("sh", "mount", "mkdir", "sleep", "cat", "echo", "uname", "ls")


def ensure_packages() -> None:
    """Run the project's package installer when a lab program is missing."""
    if not system.missing_programs() and _busybox_is_static():
        return
    if not INSTALL_SCRIPT.exists():
        raise LabError(f"{INSTALL_SCRIPT} not found: cannot install lab packages")
    LOG.info("installing lab packages with %s", INSTALL_SCRIPT)
    proc = subprocess.run(["bash", str(INSTALL_SCRIPT)], text=True)
    if proc.returncode != 0:
        raise LabError(f"{INSTALL_SCRIPT} failed with status {proc.returncode}")
    system.require_programs()


def _busybox_is_static() -> bool:
    """The initramfs has no libc, so busybox must be the busybox-static build."""
    if not BUSYBOX_PATH.exists():
        return False
    proc = subprocess.run(["ldd", str(BUSYBOX_PATH)], capture_output=True, text=True)
    return proc.returncode != 0 or "not a dynamic executable" in proc.stdout + proc.stderr


def kernel_package_name() -> str:
    """The versioned cloud kernel package the meta-package points at."""
    proc = system.run(["apt-cache", "depends", KERNEL_META_PACKAGE])
    match = re.search(r"Depends:\s*(linux-image-\S+-cloud-amd64)\b", proc.stdout)
    if match is None:
        raise LabError(f"kernel not found: apt-cache knows no {KERNEL_META_PACKAGE} "
                       "(is the Debian main archive in the apt sources? run apt-get update)")
    return match.group(1)


def fetch_kernel(config: LabConfig) -> Path:
    """Download Debian's cloud kernel and keep its vmlinuz as the guest kernel."""
    if config.kernel_path.exists():
        return config.kernel_path
    package = kernel_package_name()
    lock.state_subdir(config.state_dir, "downloads")
    debs = sorted(config.download_dir.glob(f"{package}_*.deb"))
    if not debs:
        LOG.info("downloading %s", package)
        _download_in(config.download_dir, package)
        debs = sorted(config.download_dir.glob(f"{package}_*.deb"))
    if not debs:
        raise LabError(f"kernel not found: apt-get download {package} produced no .deb")
    with tempfile.TemporaryDirectory(dir=config.state_dir) as tmp:
        system.run(["dpkg-deb", "-x", str(debs[-1]), tmp])
        kernels = sorted(Path(tmp, "boot").glob("vmlinuz-*"))
        if not kernels:
            raise LabError(f"kernel not found: no boot/vmlinuz-* in {debs[-1]}")
        lock.state_subdir(config.state_dir, "guest")
        lock.write_state_file(config.kernel_path, kernels[-1].read_bytes())
    lock.write_state_file(config.guest_dir / "kernel-package", debs[-1].name + "\n")
    return config.kernel_path


def _download_in(directory: Path, package: str) -> None:
    """apt-get download writes into the current directory; run it there."""
    proc = subprocess.run(["apt-get", "download", package], cwd=directory,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise LabError(f"kernel not found: apt-get download {package} failed: "
                       f"{proc.stderr.strip()}")


def _guest_sources() -> list[Path]:
    return [GUEST_SOURCE_DIR / "dirtier.c", GUEST_SOURCE_DIR / "init", BUSYBOX_PATH]


def _sources_digest() -> str:
    digest = hashlib.sha256()
    for path in _guest_sources():
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build_initramfs(config: LabConfig) -> Path:
    """busybox-static + the static dirtier + /init, as a gzip'd newc cpio."""
    digest = _sources_digest()
    stamp = config.guest_dir / "initramfs.sha256"
    if config.initramfs_path.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return config.initramfs_path
    lock.state_subdir(config.state_dir, "guest")
    with tempfile.TemporaryDirectory(dir=config.state_dir) as tmp:
        root = Path(tmp)
        _populate_root(root)
        data = _cpio_newc(root)
    _write_cpio(config, data, digest, stamp)
    return config.initramfs_path


def _populate_root(root: Path) -> None:
    for sub in ("bin", "dev", "proc", "sys"):
        (root / sub).mkdir()
    shutil.copy2(BUSYBOX_PATH, root / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    system.run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-o", str(root / "bin" / "dirtier"),
                str(GUEST_SOURCE_DIR / "dirtier.c")], timeout_s=300.0)
    shutil.copy2(GUEST_SOURCE_DIR / "init", root / "init")
    os.chmod(root / "init", 0o755)


def _cpio_newc(root: Path) -> bytes:
    """Archive a directory tree in the newc format the kernel unpacks."""
    proc = subprocess.run(["sh", "-c", "find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0"],
                          cwd=root, capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise LabError(f"cpio failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def _write_cpio(config: LabConfig, data: bytes, digest: str, stamp: Path) -> None:
    lock.write_state_file(config.initramfs_path, gzip.compress(data, compresslevel=6))
    lock.write_state_file(stamp, digest + "\n")


def ensure_mount_targets() -> None:
    """Bind mounts need their targets; /run/libvirt does not exist without a running libvirt."""
    for _key, target in HOST_PRIVATE_DIRS:
        Path(target).mkdir(parents=True, exist_ok=True)


def setup(config: LabConfig) -> None:
    """Everything ``start`` needs, from a machine with only Debian on it."""
    system.require_root()
    ensure_packages()
    system.require_libvirt_python()
    fetch_kernel(config)
    build_initramfs(config)
    ensure_mount_targets()
    if not system.userfaultfd_available():
        LOG.warning("userfaultfd is not available: post-copy migrations will fail")
