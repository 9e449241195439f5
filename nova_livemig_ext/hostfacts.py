"""Ask the running libvirt and QEMU what they support (not pure: I/O)."""

from __future__ import annotations

import os
from typing import Any

from nova_livemig_ext.flags import HostFacts

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
