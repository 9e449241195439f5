"""Debian 12's stock QEMU 7.2, unpacked privately, to show a real corruption.

QEMU 7.2 loses dirty bits of pages a TCG guest writes while it is
live-migrated (fixed upstream in 9.0, "physmem: Fix migration dirty bitmap
coherency with TCG memory access").  The lab's integrity check must catch
that.  The binary is extracted into the state directory; the installed QEMU
is not touched.  It shares /usr/share/qemu (firmware, option ROMs) with the
installed QEMU, which is enough for direct kernel boot.  Debian builds its
TCG accelerator as a module (in qemu-system-common), and libvirt starts QEMU
with a clean environment, so the lab's "binary" is a small wrapper that sets
QEMU_MODULE_DIR to the private copy and execs the real one.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from nova_livemig_lab import lock, system
from nova_livemig_lab.config import LabConfig
from nova_livemig_lab.errors import LabError

PACKAGE = "qemu-system-x86"
# The TCG accelerator module lives here.
COMMON_PACKAGE = "qemu-system-common"
VERSION_PREFIX = "1:7.2"
MODULE_DIR = "usr/lib/x86_64-linux-gnu/qemu"
FIRMWARE_DIRS = ("/usr/share/seabios", "/usr/share/qemu")


def old_qemu_dir(config: LabConfig) -> Path:
    return config.state_dir / "qemu-7.2"


def old_qemu_binary(config: LabConfig) -> Path:
    """The wrapper to use as a domain's <emulator>."""
    return old_qemu_dir(config) / "qemu-system-x86_64"


def _real_binary(config: LabConfig) -> Path:
    return old_qemu_dir(config) / "root" / "usr" / "bin" / "qemu-system-x86_64"


def _candidate_version() -> str:
    """Newest 1:7.2 version apt knows (bookworm or bookworm-security)."""
    proc = system.run(["apt-cache", "madison", PACKAGE])
    rows = (line.split("|") for line in proc.stdout.splitlines())
    versions = [fields[1].strip() for fields in rows
                if len(fields) > 1 and fields[1].strip().startswith(VERSION_PREFIX)]
    if not versions:
        raise LabError(f"apt knows no {PACKAGE} {VERSION_PREFIX}*: is bookworm in the sources?")
    return versions[0]


def _download(deb_dir: Path, package: str, version: str) -> Path:
    existing = sorted(deb_dir.glob(f"{package}_*.deb"))
    if existing:
        return existing[-1]
    proc = subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=deb_dir,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise LabError(f"apt-get download {package}={version} failed: {proc.stderr.strip()}")
    return sorted(deb_dir.glob(f"{package}_*.deb"))[-1]


def fetch_old_qemu(config: LabConfig) -> Path:
    """Download and unpack QEMU 7.2 once; return the wrapper to use as emulator."""
    wrapper = old_qemu_binary(config)
    if wrapper.exists():
        return wrapper
    deb_dir = lock.state_subdir(config.state_dir, "qemu-7.2/deb")
    assert deb_dir is not None
    version = _candidate_version()
    root = old_qemu_dir(config) / "root"
    for package in (PACKAGE, COMMON_PACKAGE):
        system.run(["dpkg-deb", "-x", str(_download(deb_dir, package, version)), str(root)])
    out = system.run([str(_real_binary(config)), "--version"]).stdout
    if not re.search(r"version 7\.2", out):
        raise LabError(f"unexpected QEMU in {root}: {out.splitlines()[0]}")
    script = ("#!/bin/sh\n"
              f"QEMU_MODULE_DIR={root / MODULE_DIR}\n"
              "export QEMU_MODULE_DIR\n"
              # 7.2 looks for bios-256k.bin in /usr/share/qemu, where the
              # installed (newer) qemu-system-data no longer links it.
              f'exec {_real_binary(config)} -L {FIRMWARE_DIRS[0]} -L {FIRMWARE_DIRS[1]} '
              '"$@"\n')
    lock.write_state_file(wrapper, script, mode=0o755)
    return wrapper
