"""Two libvirtd daemons on one machine, each a "host" in its own namespaces.

Each daemon runs under ``ip netns exec <ns> unshare --mount --uts`` with its
own directories bind-mounted over /etc/libvirt, /var/lib/libvirt,
/var/cache/libvirt, /var/log/libvirt and /run/libvirt, its own host_uuid
(libvirt refuses to migrate to a host with its own UUID), its own hostname
(Nova names a compute node after it) and migration port range.
"""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from nova_livemig_lab import lock, network, system
from nova_livemig_lab.config import HOST_PRIVATE_DIRS, HostSpec, LabConfig
from nova_livemig_lab.errors import LabError

LOG = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def libvirtd_conf(host: HostSpec) -> str:
    return "\n".join([
        "listen_tcp = 1",
        "listen_tls = 0",
        f'listen_addr = "{host.link_address}"',
        f'tcp_port = "{host.tcp_port}"',
        'auth_tcp = "none"',
        'auth_unix_rw = "none"',
        'auth_unix_ro = "none"',
        f'host_uuid = "{host.host_uuid}"',
        # Drop a silent peer within about 8 s (link cut, libvirtd stopped).
        "keepalive_interval = 2",
        "keepalive_count = 3",
        "log_level = 3",
        'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"',
        "",
    ])


def qemu_conf(host: HostSpec) -> str:
    # migration_address is deliberately unset: each migration passes
    # VIR_MIGRATE_PARAM_URI and VIR_MIGRATE_PARAM_LISTEN_ADDRESS instead.
    # Short keepalives make a dead peer (link cut, libvirtd stopped) end the
    # job within about 10 s instead of 30 s.
    return "\n".join([
        'user = "root"',
        'group = "root"',
        "dynamic_ownership = 0",
        "remember_owner = 0",
        'security_driver = "none"',
        "cgroup_controllers = [ ]",
        "namespaces = [ ]",
        'stdio_handler = "file"',
        f"migration_port_min = {host.migration_port_min}",
        f"migration_port_max = {host.migration_port_max}",
        "keepalive_interval = 2",
        "keepalive_count = 3",
        f'shared_filesystems = [ "{host.shared_dir}" ]',
        "",
    ])


def prepare_dirs(host: HostSpec) -> None:
    """Create the host's private directories and write its configuration."""
    # The directories (and shared_dir, which libvirtd resolves at start)
    # were made and checked by lock.trusted_lab_dirs; nothing is followed.
    lock.write_state_file(host.daemon_conf, libvirtd_conf(host))
    lock.write_state_file(host.private_dir("etc") / "qemu.conf", qemu_conf(host))
    lock.write_state_file(host.private_dir("etc") / "libvirt.conf", "")


def daemon_pid(host: HostSpec) -> int | None:
    """The libvirtd pid from its pidfile, if that process still runs."""
    try:
        pid = int(host.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().split()
    except OSError:
        return None
    # "(libvirtd)" and a state other than zombie.
    return pid if fields[1] == "(libvirtd)" and fields[2] != "Z" else None


def _port_in_use(host: HostSpec) -> bool:
    proc = system.run(["ip", "netns", "exec", host.netns, "ss", "-Hltn",
                       f"sport = :{host.tcp_port}"], check=False)
    return bool(proc.stdout.strip())


def _daemon_command(host: HostSpec) -> list[str]:
    mounts = " && ".join(
        f"mount --bind {shlex.quote(str(host.private_dir(key)))} {target}"
        for key, target in HOST_PRIVATE_DIRS)
    script = (f"hostname {shlex.quote(host.hostname)} && {mounts} && "
              f"exec {shlex.quote(host.libvirtd)} --listen "
              f"-f {shlex.quote(str(host.daemon_conf))} "
              f"-p {shlex.quote(str(host.pid_file))}")
    return ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--uts",
            "--propagation", "private", "--", "sh", "-c", script]


def _launch_record(host: HostSpec) -> Path:
    return host.root / "launched-with"


def _launch_signature(host: HostSpec, pid: int) -> str:
    """Which daemon this version started, with which command and configuration."""
    return "\n".join([str(pid), shlex.join(_daemon_command(host)), libvirtd_conf(host),
                      qemu_conf(host)])


def _launched_as_now(host: HostSpec, pid: int) -> bool:
    try:
        return _launch_record(host).read_text() == _launch_signature(host, pid)
    except OSError:
        return False


def start_daemon(host: HostSpec) -> int:
    """Start one host's libvirtd (idempotent) and wait until it answers."""
    pid = daemon_pid(host)
    if pid is not None:
        if _launched_as_now(host, pid):
            return pid
        # Started by an older version of the lab (other ports, no hostname):
        # its guests, if any, go with it.
        LOG.warning("host %s: libvirtd %d runs an outdated configuration: restarting it",
                    host.name, pid)
        destroy_domains(host)
        stop_daemon(host)
        kill_namespace_processes(host)
    prepare_dirs(host)
    if _port_in_use(host):
        raise LabError(f"host {host.name}: TCP port {host.tcp_port} already in use in "
                       f"netns {host.netns} (a stray libvirtd? run 'stop')")
    host.pid_file.unlink(missing_ok=True)
    host.socket_path.unlink(missing_ok=True)
    _launch_record(host).unlink(missing_ok=True)
    with lock.open_state_log(host.daemon_output) as out:
        subprocess.Popen(_daemon_command(host), stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, start_new_session=True)
    _wait_for_daemon(host)
    pid = daemon_pid(host)
    assert pid is not None
    lock.write_state_file(_launch_record(host), _launch_signature(host, pid))
    return pid


def _wait_for_daemon(host: HostSpec) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if daemon_pid(host) is not None and host.socket_path.exists():
            _first_call(host)
            return
        time.sleep(0.2)
    tail = _tail(host.daemon_output) + _tail(host.private_dir("log") / "libvirtd.log")
    raise LabError(f"host {host.name}: libvirtd did not start within {START_TIMEOUT_S:.0f} s:\n"
                   f"{tail}")


def _first_call(host: HostSpec) -> None:
    """Pay the capability probe (about 10 s, cached afterwards) now, not in a test."""
    import libvirt
    system.quiet_libvirt()
    conn = libvirt.open(host.uri)
    try:
        conn.getCapabilities()
    finally:
        conn.close()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
    except OSError:
        return ""


def destroy_domains(host: HostSpec) -> list[str]:
    """Destroy (and undefine) every domain of a running host; returns their names."""
    import libvirt
    if daemon_pid(host) is None or not host.socket_path.exists():
        return []
    try:
        conn = libvirt.open(host.uri)
    except libvirt.libvirtError as exc:
        LOG.warning("host %s: cannot connect to destroy domains: %s", host.name, exc)
        return []
    names = []
    try:
        for dom in conn.listAllDomains():
            names.append(dom.name())
            try:
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
            except libvirt.libvirtError as exc:
                LOG.warning("host %s: domain %s: %s", host.name, dom.name(), exc)
    finally:
        conn.close()
    return names


def domain_names(host: HostSpec) -> list[str]:
    """Names of all domains a running host knows (active or defined)."""
    import libvirt
    conn = libvirt.open(host.uri)
    try:
        return sorted(dom.name() for dom in conn.listAllDomains())
    finally:
        conn.close()


def stop_daemon(host: HostSpec) -> None:
    """SIGTERM libvirtd; its mount namespace goes with it."""
    pid = daemon_pid(host)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and daemon_pid(host) is not None:
        time.sleep(0.1)
    if daemon_pid(host) is not None:
        LOG.warning("host %s: libvirtd %d ignored SIGTERM, killing it", host.name, pid)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


def kill_namespace_processes(host: HostSpec) -> list[int]:
    """Kill what is left in the host's netns (QEMU orphaned by a dead libvirtd)."""
    pids = network.netns_pids(host.netns)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while network.netns_pids(host.netns) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids


def qemu_pids(host: HostSpec) -> list[int]:
    """QEMU processes running in the host's network namespace."""
    result = []
    for pid in network.netns_pids(host.netns):
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip().startswith("qemu-system"):
                    result.append(pid)
        except OSError:
            pass
    return result


def lab_mounts(config: LabConfig) -> list[str]:
    """Mount entries, in any namespace, that still point into the lab state dir."""
    found = []
    state = str(config.state_dir)
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            text = (proc_dir / "mountinfo").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            fields = line.split()
            if len(fields) > 4 and fields[3].startswith(state) and fields[4] != fields[3]:
                found.append(f"pid {proc_dir.name}: {fields[3]} on {fields[4]}")
    return found


def start(config: LabConfig) -> dict[str, object]:
    """Network first (the daemons listen on their link address), then daemons."""
    system.require_root()
    lock.trusted_lab_dirs(config)
    system.require_programs()
    system.require_libvirt_python()
    if not config.kernel_path.exists() or not config.initramfs_path.exists():
        raise LabError(f"kernel not found in {config.guest_dir}: run "
                       "'python -m nova_livemig_lab setup' first")
    for _key, target in HOST_PRIVATE_DIRS:
        if not Path(target).is_dir():
            raise LabError(f"mount target {target} missing: run 'setup'")
    measured_mb_s = _ensure_link(config)
    pids = {host.name: start_daemon(host) for host in config.hosts}
    return {"libvirtd_pids": pids, "libvirt_build": config.libvirt.name,
            "link_rate_mbit": config.link_rate_mbit,
            "measured_mb_s": round(measured_mb_s, 2)}


def _ensure_link(config: LabConfig) -> float:
    """Create and measure the link, unless it is already up at the configured rate."""
    try:
        state = network.load_link_state(config)
    except LabError:
        state = {}
    up = all(network.link_exists(host) for host in config.hosts)
    if up and state.get("rate_mbit") == config.link_rate_mbit:
        network.set_link_up(config, True)
        return float(state["measured_mb_s"])
    network.create_link(config)
    measured_mb_s = network.measure_rate_mb_s(config)
    network.check_rate(config.link_rate_mbit, measured_mb_s)
    network.save_link_state(config, config.link_rate_mbit, measured_mb_s)
    return measured_mb_s


def stop(config: LabConfig) -> dict[str, object]:
    """Tear everything down; safe to run any number of times."""
    system.require_root()
    destroyed = {host.name: destroy_domains(host) for host in config.hosts}
    for host in config.hosts:
        stop_daemon(host)
    killed = {host.name: kill_namespace_processes(host) for host in config.hosts}
    network.delete_link(config)
    config.link_state_file.unlink(missing_ok=True)
    return {"destroyed_domains": destroyed, "killed_pids": killed,
            "leftovers": leftovers(config)}


def leftovers(config: LabConfig) -> list[str]:
    """Anything of the lab still alive: processes, namespaces, links, mounts."""
    found = []
    for host in config.hosts:
        if daemon_pid(host) is not None:
            found.append(f"libvirtd of host {host.name}")
        if network.netns_exists(host.netns):
            found.append(f"netns {host.netns} (pids {network.netns_pids(host.netns)})")
    found.extend(lab_mounts(config))
    proc = system.run(["ip", "-o", "link", "show"], check=False)
    found.extend(f"link {line.split(':')[1].strip()}" for line in proc.stdout.splitlines()
                 if any(f" {h.link_dev}@" in line or f" {h.link_dev}:" in line
                        for h in config.hosts))
    return found


def running_daemon(host: HostSpec) -> str | None:
    """The binary of the host's running libvirtd, if one runs."""
    pid = daemon_pid(host)
    if pid is None:
        return None
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def build_in_use(config: LabConfig, host: HostSpec) -> str:
    """Which libvirt build the host's daemon is, in words."""
    binary = running_daemon(host)
    if binary is None:
        return "not running"
    if os.path.realpath(binary) == os.path.realpath(shutil.which(host.libvirtd) or host.libvirtd):
        return config.libvirt.name
    return f"{binary} (not the configured {config.libvirt.kind} build: run 'start')"


def status(config: LabConfig) -> dict[str, object]:
    report: dict[str, object] = {"libvirt_build": config.libvirt.as_dict()}
    for host in config.hosts:
        report[host.name] = {
            "libvirtd_pid": daemon_pid(host),
            "libvirt_build": build_in_use(config, host),
            "netns": network.netns_exists(host.netns),
            "link": network.link_exists(host),
            "qemu_pids": qemu_pids(host),
            "uri": host.uri,
            "peer_uri": host.peer_uri,
        }
    try:
        report["link_state"] = network.load_link_state(config)
    except LabError:
        report["link_state"] = None
    return report
