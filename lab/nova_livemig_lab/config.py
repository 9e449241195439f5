"""Where the lab keeps its state and how its two hosts are laid out.

Topology (every address lives only inside namespaces the lab creates)::

    root netns (tests, CLI) --unix socket--> libvirtd A   libvirtd B <--unix socket-- root netns
                                             netns nlm-lab-a      netns nlm-lab-b
                                             nlm-a 169.254.77.1 <==veth, tbf==> nlm-b 169.254.77.2

The test process talks to each libvirtd through its UNIX socket (the socket
file lives in the host's own ``/run/libvirt`` directory, which is visible from
the root namespace under the state directory), so it needs no address at all.
Everything between the hosts (the peer-to-peer libvirt connection and QEMU's
migration stream) crosses the shaped veth pair.

Each libvirtd also has its own UTS namespace (its own hostname, which Nova
uses as the compute node's name).  ``shared_dir`` is listed in every host's
qemu.conf ``shared_filesystems``: a Nova ``instances_path`` below it is
storage both hosts share, so a migration moves only memory.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from nova_livemig_lab import libvirt_build

STATE_DIR_ENV = "NOVA_LIVEMIG_LAB_DIR"
LINK_RATE_ENV = "NOVA_LIVEMIG_LAB_LINK_MBIT"
DEFAULT_STATE_DIR = Path("/var/tmp/nova-livemig-ext-lab")
# tbf rate 120mbit measured 14.4 MB/s end to end on these machines.
DEFAULT_LINK_RATE_MBIT = 120
LINK_PREFIX_LEN = 24

# Paths that every libvirt host sees as its own (bind mounts in its namespace).
HOST_PRIVATE_DIRS: tuple[tuple[str, str], ...] = (
    ("etc", "/etc/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("cache", "/var/cache/libvirt"),
    ("log", "/var/log/libvirt"),
    ("run", "/run/libvirt"),
)


@dataclasses.dataclass(frozen=True)
class HostSpec:
    """One libvirt "host": its namespace, link end, ports and directories."""

    name: str
    netns: str
    link_dev: str
    link_address: str
    tcp_port: int
    migration_port_min: int
    migration_port_max: int
    host_uuid: str
    root: Path
    hostname: str
    shared_dir: Path
    # The libvirtd binary this host runs (see libvirt_build).
    libvirtd: str = "libvirtd"

    def private_dir(self, key: str) -> Path:
        """The real path behind one of the host's bind-mounted directories."""
        return self.root / key

    @property
    def socket_path(self) -> Path:
        return self.private_dir("run") / "libvirt-sock"

    @property
    def pid_file(self) -> Path:
        return self.root / "libvirtd.pid"

    @property
    def daemon_conf(self) -> Path:
        return self.private_dir("etc") / "libvirtd.conf"

    @property
    def daemon_output(self) -> Path:
        return self.root / "libvirtd.out"

    @property
    def uri(self) -> str:
        """URI for clients in the root namespace (this CLI, the tests)."""
        return f"qemu+unix:///system?socket={self.socket_path}"

    @property
    def peer_uri(self) -> str:
        """URI the other host's libvirtd uses to reach this one over the link."""
        return f"qemu+tcp://{self.link_address}:{self.tcp_port}/system"

    @property
    def migration_uri(self) -> str:
        """VIR_MIGRATE_PARAM_URI: QEMU's data stream goes to this host's link end."""
        return f"tcp://{self.link_address}"

    def console_path(self, domain_name: str) -> str:
        """Serial log path as the host's QEMU sees it (inside its mount namespace)."""
        return f"/var/log/libvirt/qemu/{domain_name}.console"

    def real_console_path(self, domain_name: str) -> Path:
        """The same serial log seen from the root namespace."""
        return self.private_dir("log") / "qemu" / f"{domain_name}.console"


@dataclasses.dataclass(frozen=True)
class LabConfig:
    """The whole lab: state directory, link rate and the two hosts."""

    state_dir: Path
    link_rate_mbit: int
    host_a: HostSpec
    host_b: HostSpec
    libvirt: libvirt_build.LibvirtBuild

    @property
    def hosts(self) -> tuple[HostSpec, HostSpec]:
        return (self.host_a, self.host_b)

    @property
    def guest_dir(self) -> Path:
        return self.state_dir / "guest"

    @property
    def download_dir(self) -> Path:
        return self.state_dir / "downloads"

    @property
    def shared_dir(self) -> Path:
        """Storage both hosts treat as shared (qemu.conf shared_filesystems)."""
        return self.state_dir / "shared"

    @property
    def kernel_path(self) -> Path:
        return self.guest_dir / "vmlinuz"

    @property
    def initramfs_path(self) -> Path:
        return self.guest_dir / "initramfs.cpio.gz"

    @property
    def link_state_file(self) -> Path:
        """JSON written by ``start``: configured and measured link rate."""
        return self.state_dir / "link.json"

    def host(self, name: str) -> HostSpec:
        for spec in self.hosts:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def other(self, spec: HostSpec) -> HostSpec:
        return self.host_b if spec.name == self.host_a.name else self.host_a


def _host_spec(state_dir: Path, name: str, index: int, libvirtd: str) -> HostSpec:
    # Fixed per-host UUIDs: libvirt refuses to migrate to a host with its own UUID.
    return HostSpec(
        name=name,
        netns=f"nlm-lab-{name}",
        link_dev=f"nlm-{name}",
        link_address=f"169.254.77.{index}",
        tcp_port=16610 + index,
        migration_port_min=49100 + 100 * index,
        migration_port_max=49100 + 100 * index + 15,
        host_uuid=f"6c61622d-686f-7374-2d{index:02x}-6e6f76616c6d",
        root=state_dir / "hosts" / name,
        hostname=f"nlm-lab-{name}",
        shared_dir=state_dir / "shared",
        libvirtd=libvirtd,
    )


def load_config(state_dir: Path | None = None, link_rate_mbit: int | None = None,
                libvirt: str | None = None) -> LabConfig:
    """Build the lab layout from arguments, then the environment, then defaults.

    ``libvirt`` chooses the daemons (``auto``, ``patched``, ``debian``; see
    :mod:`nova_livemig_lab.libvirt_build`).
    """
    if state_dir is None:
        state_dir = Path(os.environ.get(STATE_DIR_ENV, str(DEFAULT_STATE_DIR)))
    if link_rate_mbit is None:
        link_rate_mbit = int(os.environ.get(LINK_RATE_ENV, DEFAULT_LINK_RATE_MBIT))
    build = libvirt_build.select(libvirt)
    return LabConfig(
        state_dir=state_dir,
        link_rate_mbit=link_rate_mbit,
        host_a=_host_spec(state_dir, "a", 1, build.daemon),
        host_b=_host_spec(state_dir, "b", 2, build.daemon),
        libvirt=build,
    )
