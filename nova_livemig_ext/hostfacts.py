"""Ask the running libvirt and QEMU what they support (not pure: I/O)."""

from __future__ import annotations

import os
from typing import Any

from nova_livemig_ext.flags import HostFacts
from nova_livemig_ext.flags import version_str

UFFD_DEVICE = '/dev/userfaultfd'
UFFD_SYSCTL = '/proc/sys/vm/unprivileged_userfaultfd'


def userfaultfd_available(device: str = UFFD_DEVICE,
                          sysctl: str = UFFD_SYSCTL) -> bool:
    """Whether QEMU can create a userfaultfd, which post-copy needs.

    Since Linux 6.1 ``/dev/userfaultfd`` hands them out (libvirt gives QEMU
    access to it); before that only ``vm.unprivileged_userfaultfd = 1`` or a
    privileged QEMU could.
    """
    if os.path.exists(device):
        return True
    try:
        with open(sysctl) as f:
            return f.read().strip() == '1'
    except OSError:
        return False


def binding_names(libvirt_module: Any) -> frozenset[str]:
    return frozenset(n for n in dir(libvirt_module)
                     if n.startswith('VIR_MIGRATE_'))


def probe(conn: Any, libvirt_module: Any) -> HostFacts:
    """Host facts from an open libvirt connection ``conn``."""
    return HostFacts(libvirt_version=int(conn.getLibVersion()),
                     qemu_version=int(conn.getVersion()),
                     userfaultfd=userfaultfd_available(),
                     binding_names=binding_names(libvirt_module))


def changes(started: HostFacts, now: HostFacts) -> list[str]:
    """What differs between the facts read at start and ``now``, in words.

    nova-compute keeps running across a libvirt or QEMU upgrade and a
    change of ``vm.unprivileged_userfaultfd``; what it checked at start may
    no longer hold.
    """
    found = []
    if started.libvirt_version != now.libvirt_version:
        found.append('libvirt changed from %s to %s' % (
            version_str(started.libvirt_version),
            version_str(now.libvirt_version)))
    if started.qemu_version != now.qemu_version:
        found.append('QEMU changed from %s to %s' % (
            version_str(started.qemu_version), version_str(now.qemu_version)))
    if started.userfaultfd != now.userfaultfd:
        found.append('userfaultfd became %s' % (
            'available' if now.userfaultfd else 'unavailable'))
    return found
