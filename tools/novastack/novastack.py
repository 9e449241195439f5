"""A real OpenStack control plane on one machine, and two nova-compute services
driving the lab's two libvirtd hosts.

Run with the stack's own virtualenv (tools/novastack/stack.sh does)::

    stack.sh up [--no-computes] [--driver ext|stock]   control plane (+ computes)
    stack.sh computes up|down|restart [--driver ext|stock]
             [--set [HOST:]SECTION.OPTION=VALUE ...] [--var LIVEMIG_EXT_<OPTION>=VALUE ...]
    stack.sh images                                     lab guest images + flavors
    stack.sh status
    stack.sh down

Services: MariaDB (UNIX socket only), RabbitMQ on 127.0.0.1, placement-api,
nova-api, glance-api and neutron-server's API under uWSGI on 127.0.0.1,
nova-conductor, nova-scheduler and one nova-compute per lab host.  No keystone:
nova-api and glance-api run their keystone pipelines with the ``authtoken``
filter replaced by novastack_auth (fixed admin identity), placement runs
``noauth2`` and neutron ``noauth``.  Every service is started in its own
process group.  It is stopped the way devstack's units stop it
(``KillMode=process``): SIGTERM to its main process, which stops its own
children, then whatever of its group outlived it; SIGKILL only past a timeout.

Each compute reads ``nova.conf``, then its own file (rewritten at each start),
then ``<its file>.local`` when that exists: the operator's, never written.
"""
from __future__ import annotations

import argparse
import configparser
import contextlib
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from nova_livemig_ext import safefile
from nova_livemig_lab import config as lab_config

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STATE = Path(os.environ.get("NOVASTACK_DIR", "/var/tmp/novastack"))
VENV = STATE / "venv"
BIN = VENV / "bin"
ETC = STATE / "etc"
LOG_DIR = STATE / "log"
RUN = STATE / "run"
MYSQL_DATA = STATE / "mysql"
MYSQL_SOCKET = RUN / "mysqld" / "mysqld.sock"
RABBIT_DIR = STATE / "rabbitmq"
GLANCE_DIR = STATE / "glance"
DB_URL = f"mysql+pymysql://root@localhost/{{}}?unix_socket={MYSQL_SOCKET}&charset=utf8"
TRANSPORT_URL = "rabbit://guest:guest@127.0.0.1:5672/"
ADMIN_TOKEN = "admin"

HOST_ADDRESS = "127.0.0.1"
PORTS = {"placement-api": 8778, "nova-api": 8774, "glance-api": 9292, "neutron-api": 9696}
RABBIT_PORT = 5672
RABBIT_DIST_PORT = 25672
EPMD_PORT = 4369
ENDPOINTS = {name: f"http://{HOST_ADDRESS}:{port}" for name, port in PORTS.items()}

STOP_TIMEOUT_S = 10.0
# What is left of a group once its main process exited (helpers that did not
# follow it) gets this long after SIGTERM before SIGKILL.
GROUP_STOP_TIMEOUT_S = 5.0
# nova-compute's own graceful shutdown (Nova 34: 180 s, the manager's part
# 160 s), shortened for a stack on one machine.  Its manager's part always
# runs to its end: cleanup_host drains the default executor, which runs
# libvirt's connection-event loop forever in threading mode.  At 10 s no
# in-progress task is waited for and cleanup_host gets 10 s; nova-compute
# exits by itself at graceful_shutdown_timeout.  The stack waits that long
# and COMPUTE_STOP_MARGIN_S more.
COMPUTE_GRACEFUL_SHUTDOWN_S = 20
COMPUTE_MANAGER_SHUTDOWN_S = 10
COMPUTE_STOP_MARGIN_S = 10.0
DRIVERS = {"ext": "livemig_ext.LibvirtLiveMigExtDriver", "stock": "libvirt.LibvirtDriver"}
DATABASES = ("nova_api", "nova", "nova_cell0", "placement", "glance", "neutron")
CONTROL_SERVICES = ("epmd", "rabbitmq", "mariadb", "placement-api", "neutron-api",
                    "glance-api", "nova-api", "nova-conductor", "nova-scheduler")

LAB = lab_config.load_config()
INSTANCES_PATH = LAB.shared_dir / "novastack-instances"


def log(message: str, *args: object) -> None:
    text = message % args if args else message
    print(f"novastack {time.strftime('%H:%M:%S')}: {text}", flush=True)


class StackError(Exception):
    pass


# --- configuration files -----------------------------------------------------

def write_ini(path: Path, sections: dict[str, dict[str, object]]) -> None:
    parser = configparser.RawConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    for section, options in sections.items():
        if section != "DEFAULT":
            parser.add_section(section)
        for key, value in options.items():
            parser.set(section, key, str(value))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        parser.write(out)


def iniset(path: Path, section: str, option: str, value: str) -> None:
    """devstack's iniset: set one option, keeping the rest of the file."""
    parser = configparser.RawConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    if section != "DEFAULT" and not parser.has_section(section):
        parser.add_section(section)
    parser.set(section, option, value)
    with open(path, "w") as out:
        parser.write(out)


def nova_conf_path() -> Path:
    return ETC / "nova" / "nova.conf"


def compute_conf_path(host: lab_config.HostSpec) -> Path:
    return ETC / "nova" / f"nova-compute-{host.name}.conf"


def compute_local_conf_path(host: lab_config.HostSpec) -> Path:
    """The operator's own file for one compute: read last, never written here."""
    return compute_conf_path(host).with_name(compute_conf_path(host).name + ".local")


def compute_conf_files(host: lab_config.HostSpec) -> list[Path]:
    """The files nova-compute reads, in order: later ones win."""
    files = [nova_conf_path(), compute_conf_path(host)]
    if compute_local_conf_path(host).is_file():
        files.append(compute_local_conf_path(host))
    return files


def compute_state_path(host: lab_config.HostSpec) -> Path:
    return STATE / f"compute-{host.name}"


def _ksa(endpoint: str) -> dict[str, object]:
    return {"auth_type": "admin_token", "endpoint": endpoint, "token": ADMIN_TOKEN,
            "endpoint_override": endpoint}


def write_configs() -> None:
    nova_paste = (BIN.parent / "etc" / "nova" / "api-paste.ini").read_text()
    (ETC / "nova").mkdir(parents=True, exist_ok=True)
    (ETC / "nova" / "api-paste.ini").write_text(_replace_authtoken(nova_paste))
    write_ini(nova_conf_path(), {
        "DEFAULT": {"transport_url": TRANSPORT_URL, "state_path": STATE / "nova",
                    "my_ip": HOST_ADDRESS, "use_syslog": False,
                    "osapi_compute_workers": 1, "metadata_workers": 1,
                    "instances_path": INSTANCES_PATH},
        "wsgi": {"api_paste_config": ETC / "nova" / "api-paste.ini"},
        "api_database": {"connection": DB_URL.format("nova_api")},
        "database": {"connection": DB_URL.format("nova")},
        "oslo_concurrency": {"lock_path": STATE / "nova" / "lock"},
        "placement": _ksa(ENDPOINTS["placement-api"]),
        "neutron": _ksa(ENDPOINTS["neutron-api"]),
        "glance": {"endpoint_override": ENDPOINTS["glance-api"]},
        "conductor": {"workers": 1},
        "scheduler": {"workers": 1, "discover_hosts_in_cells_interval": -1},
        "oslo_messaging_rabbit": {"heartbeat_timeout_threshold": 0},
        "cinder": {"os_region_name": "RegionOne"},
        "notifications": {"notification_format": "unversioned"},
        "oslo_messaging_notifications": {"driver": "noop"},
    })
    write_ini(ETC / "nova" / "nova-api.conf", {
        "DEFAULT": {"log_file": LOG_DIR / "nova-api.log"}})
    write_ini(ETC / "placement" / "placement.conf", {
        "DEFAULT": {"log_file": LOG_DIR / "placement-api.log"},
        "api": {"auth_strategy": "noauth2"},
        "placement_database": {"connection": DB_URL.format("placement")},
    })
    glance_paste = (BIN.parent / "etc" / "glance" / "glance-api-paste.ini").read_text()
    (ETC / "glance").mkdir(parents=True, exist_ok=True)
    (ETC / "glance" / "glance-api-paste.ini").write_text(_replace_authtoken(glance_paste))
    write_ini(ETC / "glance" / "glance-api.conf", {
        "DEFAULT": {"log_file": LOG_DIR / "glance-api.log", "enabled_backends": "local:file",
                    "image_cache_dir": GLANCE_DIR / "cache", "workers": 1},
        "database": {"connection": DB_URL.format("glance")},
        "paste_deploy": {"flavor": "keystone",
                         "config_file": ETC / "glance" / "glance-api-paste.ini"},
        "glance_store": {"default_backend": "local"},
        "local": {"filesystem_store_datadir": GLANCE_DIR / "images"},
        "os_glance_staging_store": {"filesystem_store_datadir": GLANCE_DIR / "staging"},
        "os_glance_tasks_store": {"filesystem_store_datadir": GLANCE_DIR / "tasks"},
        "oslo_concurrency": {"lock_path": GLANCE_DIR / "lock"},
    })
    write_ini(ETC / "neutron" / "neutron.conf", {
        "DEFAULT": {"log_file": LOG_DIR / "neutron-api.log", "core_plugin": "ml2",
                    "service_plugins": "", "auth_strategy": "noauth",
                    "transport_url": TRANSPORT_URL, "api_workers": 1, "rpc_workers": 0,
                    "notify_nova_on_port_status_changes": False,
                    "notify_nova_on_port_data_changes": False,
                    "state_path": STATE / "neutron",
                    "api_paste_config": BIN.parent / "etc" / "neutron" / "api-paste.ini"},
        "database": {"connection": DB_URL.format("neutron")},
        "oslo_concurrency": {"lock_path": STATE / "neutron" / "lock"},
    })
    write_ini(ETC / "neutron" / "ml2_conf.ini", {
        "ml2": {"type_drivers": "flat", "tenant_network_types": "", "mechanism_drivers": "",
                "extension_drivers": ""},
    })


def _replace_authtoken(paste: str) -> str:
    """Point the pipelines' ``authtoken`` filter at novastack_auth."""
    out, section = [], None
    for line in paste.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        if section == "[filter:authtoken]" and stripped.startswith("paste.filter_factory"):
            line = "paste.filter_factory = novastack_auth:filter_factory"
        elif section == "[filter:authtoken]" and stripped and not stripped.startswith("["):
            continue
        out.append(line)
    text = "\n".join(out) + "\n"
    if "novastack_auth:filter_factory" not in text:
        text += "\n[filter:authtoken]\npaste.filter_factory = novastack_auth:filter_factory\n"
    return text


def parse_overrides(items: list[str], hosts: list[lab_config.HostSpec]
                    ) -> dict[str, list[tuple[str, str, str]]]:
    """``--set`` items by host name: ``SECTION.OPTION=VALUE`` for every
    compute, ``HOST:SECTION.OPTION=VALUE`` for that lab host's alone."""
    names = [host.name for host in hosts]
    found: dict[str, list[tuple[str, str, str]]] = {name: [] for name in names}
    for item in items:
        key, sep, value = item.partition("=")
        target, colon, key = key.rpartition(":")
        section, _, option = key.rpartition(".")
        if not sep or not section or not option:
            raise StackError(f"--set {item!r}: expected [HOST:]SECTION.OPTION=VALUE")
        if colon and target not in found:
            raise StackError(f"--set {item!r}: no lab host {target!r} "
                             f"(the hosts are {', '.join(names)})")
        for name in ([target] if colon else names):
            found[name].append((section, option, value))
    return found


def peer_socket_dir() -> Path:
    """A directory naming each lab host's libvirt socket by its host name
    (``<hostname>.sock``), for ``[livemig_ext] destination_libvirt_uri``."""
    directory = RUN / "libvirt-by-host"
    directory.mkdir(parents=True, exist_ok=True)
    for host in LAB.hosts:
        link = directory / f"{host.hostname}.sock"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(host.socket_path)
    return directory


def write_compute_conf(host: lab_config.HostSpec, driver: str, overrides: list[str],
                       plugin_vars: dict[str, str]) -> Path:
    """The compute's own file: libvirt host, paths, privsep, then the plugin's options,
    then ``--set`` (for every compute, or ``HOST:`` for this one)."""
    path = compute_conf_path(host)
    settings = parse_overrides(overrides, LAB.hosts)[host.name]
    other = LAB.other(host)
    state_path = compute_state_path(host)
    helper = " ".join([str(BIN / "privsep-helper")] + [
        f"--config-file {conf}" for conf in compute_conf_files(host)])
    write_ini(path, {
        "DEFAULT": {"host": host.hostname, "state_path": state_path,
                    "instances_path": INSTANCES_PATH, "compute_driver": DRIVERS["stock"],
                    "log_file": LOG_DIR / f"nova-compute-{host.name}.log",
                    "reserved_host_memory_mb": 512, "heal_instance_info_cache_interval": -1,
                    "update_resources_interval": 20,
                    "graceful_shutdown_timeout": COMPUTE_GRACEFUL_SHUTDOWN_S,
                    "manager_shutdown_timeout": COMPUTE_MANAGER_SHUTDOWN_S},
        "libvirt": {"virt_type": "qemu", "cpu_mode": "none", "connection_uri": host.uri,
                    "live_migration_scheme": "tcp",
                    "live_migration_inbound_addr": host.link_address,
                    # The lab's libvirtd listen on their own ports, not 16509:
                    # the (deprecated) URI template carries the peer's port.
                    "live_migration_uri": f"qemu+tcp://%s:{other.tcp_port}/system"},
        "oslo_concurrency": {"lock_path": state_path / "lock"},
        "nova_sys_admin": {"helper_command": helper},
        "privsep_osbrick": {"helper_command": helper},
        "vif_plug_linux_bridge_privileged": {"helper_command": helper},
        "vif_plug_ovs_privileged": {"helper_command": helper},
    })
    # The devstack plugin's own post-config phase writes compute_driver (for
    # our driver) and the [livemig_ext] options into the compute's file.
    _devstack("post-config", path, enable_driver=(driver == "ext"), plugin_vars=plugin_vars)
    if driver == "ext":
        # nova-compute runs in the root network namespace, the lab's libvirtd
        # in their own: the migration's URI (the peer's link address) is not
        # reachable from here, the peer's socket is.
        iniset(path, "livemig_ext", "destination_libvirt_uri",
               f"qemu+unix:///system?socket={peer_socket_dir()}/%s.sock")
        # The source's QEMU, in its host's namespace, dials a give-back's
        # stand-in: not nova-compute's loopback, a directory both see.
        standin = LAB.state_dir / "standin"
        standin.mkdir(mode=0o700, parents=True, exist_ok=True)
        iniset(path, "livemig_ext", "postcopy_give_back_address", f"unix:{standin}")
    if driver == "ext" and LAB.libvirt.resume_fixed:
        # Both lab hosts run the libvirt built with the post-copy resume fix
        # (tools/libvirt/build-libvirt.sh): an operator who checked says so.
        iniset(path, "livemig_ext", "postcopy_resume", "patched")
    if driver == "stock":
        iniset(path, "DEFAULT", "compute_driver", DRIVERS["stock"])
    for section, option, value in settings:
        iniset(path, section, option, value)
    _stamp(path, compute_local_conf_path(host))
    return path


def _stamp(path: Path, local: Path) -> None:
    """Say at the top of a generated file that it is rewritten, and where edits go."""
    text = path.read_text()
    path.write_text(
        f"# Written by tools/novastack at each 'computes up': edits here are lost.\n"
        f"# Put your own options in {local} (read after this file, never written).\n"
        + text)


def compute_stop_timeout_s(host: lab_config.HostSpec) -> float:
    """How long nova-compute may take to stop: its graceful_shutdown_timeout
    (from the files it reads) plus a margin; Nova exits by itself by then."""
    parser = configparser.RawConfigParser(interpolation=None, strict=False)
    timeout_s = float(COMPUTE_GRACEFUL_SHUTDOWN_S)
    with contextlib.suppress(configparser.Error, OSError):
        parser.read(compute_conf_files(host))
        text = parser.get("DEFAULT", "graceful_shutdown_timeout", fallback=None)
        if text is not None and text.strip().isdigit():
            timeout_s = float(text)
    if timeout_s <= 0:
        # 0 is "wait forever" in oslo.service: the stack does not.
        timeout_s = float(COMPUTE_GRACEFUL_SHUTDOWN_S)
    return timeout_s + COMPUTE_STOP_MARGIN_S


def _devstack(phase: str, conf: Path, enable_driver: bool = True,
              log_file: Path | None = None, plugin_vars: dict[str, str] | None = None) -> None:
    env = dict(os.environ, NOVASTACK_BIN=str(BIN), **(plugin_vars or {}),
               LIVEMIG_EXT_ENABLE_DRIVER="True" if enable_driver else "False")
    args = ["bash", str(HERE / "devstack-phase.sh"), phase, str(conf)]
    if log_file is not None:
        args.append(str(log_file))
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    # Python's warnings on stderr are noise unless the phase failed.
    output = (proc.stdout if proc.returncode == 0 else proc.stdout + proc.stderr).strip()
    for line in output.splitlines():
        log("devstack %s: %s", phase, line)
    if proc.returncode != 0:
        raise StackError(f"devstack plugin phase {phase} failed for {conf}")


# --- processes ----------------------------------------------------------------

def pid_file(name: str) -> Path:
    return RUN / f"{name}.pid"


def _proc_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def service_pid(name: str) -> int | None:
    """The service's process (group leader) if it still runs."""
    try:
        pid_text, start = pid_file(name).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if _proc_start_time(pid) == start else None


def spawn(name: str, cmd: list[str], env: dict[str, str] | None = None,
          user: str | None = None) -> int:
    """Start one service in its own session (so its own process group)."""
    if service_pid(name) is not None:
        return service_pid(name) or 0
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ, ERL_EPMD_ADDRESS="127.0.0.1", **(env or {}))
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"] + cmd
        full_env["HOME"] = pwd.getpwnam(user).pw_dir
    with open(LOG_DIR / f"{name}.out", "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=full_env,
                                start_new_session=True, cwd=str(STATE))
    start = _proc_start_time(proc.pid)
    pid_file(name).write_text(f"{proc.pid} {start}\n")
    return proc.pid


def stop(*names: str, timeout_s: float = STOP_TIMEOUT_S,
         timeouts: dict[str, float] | None = None) -> None:
    """Stop services together, each the way devstack's units do (KillMode=process).

    SIGTERM goes to each service's main process only: nova-compute's privsep
    daemons are in its process group (oslo.privsep keeps them there) and would
    die under it while it is still shutting down; they exit by themselves
    when it closes their socket.  A main process still there after its timeout (``timeouts``
    by name, else ``timeout_s``) is killed; then what is left of each group
    gets SIGTERM, and SIGKILL after GROUP_STOP_TIMEOUT_S.
    """
    groups = {name: pid for name in names if (pid := service_pid(name)) is not None}
    for pid in groups.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    started = time.monotonic()
    waiting = dict(groups)
    while waiting:
        for name, pid in list(waiting.items()):
            if _proc_start_time(pid) is None:
                del waiting[name]
            elif time.monotonic() - started >= (timeouts or {}).get(name, timeout_s):
                log("%s (pid %d) still running %.0f s after SIGTERM: SIGKILL", name, pid,
                    time.monotonic() - started)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                del waiting[name]
        if waiting:
            time.sleep(0.1)
    left = [pid for pid in groups.values() if _group_alive(pid)]
    for pid in left:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + GROUP_STOP_TIMEOUT_S
    while time.monotonic() < deadline and any(_group_alive(p) for p in left):
        time.sleep(0.1)
    for name, pid in groups.items():
        if _group_alive(pid):
            log("%s: its group %d ignored SIGTERM for %.0f s: SIGKILL", name, pid,
                GROUP_STOP_TIMEOUT_S)
            _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_group_alive(p) for p in groups.values()):
        time.sleep(0.1)
    for name in names:
        pid_file(name).unlink(missing_ok=True)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def stray_processes() -> list[tuple[int, str]]:
    """Processes whose command line points into the stack's state directory."""
    found = []
    marker = str(STATE).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline and _proc_start_time(int(entry.name)) is not None:
            found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode()[:160]))
    return found


def rabbit_epmd_pids() -> list[int]:
    """An epmd of the rabbitmq user (started by an Erlang command, outside our groups)."""
    uid = pwd.getpwnam("rabbitmq").pw_uid if _user_exists("rabbitmq") else None
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            owner = entry.stat().st_uid
        except OSError:
            continue
        if comm == "epmd" and owner == uid and _proc_start_time(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def wait_for(what: str, check, timeout_s: float, name: str | None = None) -> None:  # noqa
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        if name is not None and service_pid(name) is None:
            raise StackError(f"{name} exited while starting: see {LOG_DIR / (name + '.out')}"
                             f"\n{_tail(LOG_DIR / (name + '.out'))}")
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last_error = str(exc)
        time.sleep(0.3)
    raise StackError(f"{what} not ready within {timeout_s:.0f} s ({last_error})")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((HOST_ADDRESS, port)) == 0


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})))
    if proc.returncode != 0:
        raise StackError(f"{what} failed ({proc.returncode}):\n{proc.stdout[-2000:]}"
                         f"{proc.stderr[-3000:]}")
    log("%s: %.1f s", what, time.monotonic() - started)


# --- MariaDB and RabbitMQ -----------------------------------------------------------

def _chown_no_follow(path: Path, user: str) -> None:
    """Give ``path`` to ``user`` (and its group); a symlink is refused, never followed."""
    if path.is_symlink():
        raise StackError(f"refusing to chown {path}: it is a symlink")
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def start_mariadb() -> None:
    MYSQL_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    _chown_no_follow(MYSQL_SOCKET.parent, "mysql")
    fresh = not (MYSQL_DATA / "mysql").is_dir()
    if fresh:
        MYSQL_DATA.mkdir(parents=True, exist_ok=True)
        shutil.chown(MYSQL_DATA, "mysql", "mysql")
        run(["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={MYSQL_DATA}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            "mariadb-install-db")
    spawn("mariadb", ["mariadbd", "--no-defaults", "--user=mysql", f"--datadir={MYSQL_DATA}",
                      f"--socket={MYSQL_SOCKET}", f"--pid-file={RUN / 'mysqld' / 'pid'}",
                      "--skip-networking", f"--log-error={LOG_DIR / 'mariadb.log'}",
                      "--innodb-buffer-pool-size=128M", "--max-connections=1000",
                      "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin",
                      "--character-set-server=utf8mb4"])
    wait_for("MariaDB", lambda: MYSQL_SOCKET.exists() and _sql("SELECT 1"), 60, "mariadb")
    _sql("".join(f"CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8mb4;"
                 for db in DATABASES))


def _sql(statement: str) -> bool:
    proc = subprocess.run(["mariadb", "--no-defaults", f"--socket={MYSQL_SOCKET}", "-uroot",
                           "-e", statement], capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(proc.stderr.strip())
    return True


def start_rabbitmq() -> None:
    RABBIT_DIR.mkdir(parents=True, exist_ok=True)
    # The directory belongs to rabbitmq, who could plant a symlink in it:
    # write and chown without following any.
    safefile.atomic_write(RABBIT_DIR / "enabled_plugins", b"[].\n")
    safefile.atomic_write(RABBIT_DIR / "rabbitmq.conf", (
        f"listeners.tcp.default = {HOST_ADDRESS}:{RABBIT_PORT}\n"
        "loopback_users.guest = true\n").encode())
    for sub in ("mnesia", "log"):
        (RABBIT_DIR / sub).mkdir(exist_ok=True)
    for path in [RABBIT_DIR, *RABBIT_DIR.iterdir()]:
        _chown_no_follow(path, "rabbitmq")
    # epmd in our own process group, on loopback only; Erlang then uses it.
    spawn("epmd", ["epmd", "-address", HOST_ADDRESS, "-port", str(EPMD_PORT)],
          user="rabbitmq")
    wait_for("epmd", lambda: port_open(EPMD_PORT), 10, "epmd")
    env = {
        "RABBITMQ_NODENAME": "novastack@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": HOST_ADDRESS,
        "RABBITMQ_NODE_PORT": str(RABBIT_PORT),
        "RABBITMQ_DIST_PORT": str(RABBIT_DIST_PORT),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
            "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false",
        "RABBITMQ_CONFIG_FILE": str(RABBIT_DIR / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(RABBIT_DIR / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(RABBIT_DIR / "mnesia"),
        "RABBITMQ_LOG_BASE": str(RABBIT_DIR / "log"),
        "RABBITMQ_PID_FILE": str(RABBIT_DIR / "rabbit.pid"),
        "ERL_EPMD_PORT": str(EPMD_PORT),
    }
    spawn("rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmq-server"], env=env, user="rabbitmq")
    wait_for("RabbitMQ", lambda: _amqp_ready(), 90, "rabbitmq")


def _amqp_ready() -> bool:
    with socket.create_connection((HOST_ADDRESS, RABBIT_PORT), timeout=2) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        return sock.recv(8)[:1] == b"\x01"


# --- OpenStack services --------------------------------------------------------------

def _uwsgi(name: str, module: str, env: dict[str, str], router: bool = False) -> None:
    port = PORTS[name]
    cmd = [str(BIN / "uwsgi"), "--master", "--die-on-term", "--need-app", "--processes", "1",
           "--threads", "2", "--enable-threads", "--lazy-apps", "--buffer-size", "65535",
           "--module", module, "--pythonpath", str(HERE), "--hook-master-start",
           "unix_signal:15 gracefully_kill_them_all", "--worker-reload-mercy", "3"]
    if router:
        # Glance's image upload wants chunked input: uWSGI's HTTP router, as
        # devstack runs it, in front of a UNIX socket.
        cmd += ["--http", f"{HOST_ADDRESS}:{port}", "--http-chunked-input", "--http-raw-body",
                "--http-auto-chunked", "--socket", str(RUN / f"{name}.sock"),
                "--add-header", "Connection: close"]
    else:
        # Reused connections are dropped by --http-socket: close each one.
        cmd += ["--http-socket", f"{HOST_ADDRESS}:{port}", "--add-header", "Connection: close"]
    spawn(name, cmd, env=env)


def db_syncs() -> None:
    nova = [str(BIN / "nova-manage"), "--config-file", str(nova_conf_path())]
    procs = {
        "placement db sync": [str(BIN / "placement-manage"), "--config-file",
                              str(ETC / "placement" / "placement.conf"), "db", "sync"],
        "glance db sync": [str(BIN / "glance-manage"), "--config-file",
                           str(ETC / "glance" / "glance-api.conf"), "db_sync"],
        "neutron db upgrade": [str(BIN / "neutron-db-manage"), "--config-file",
                               str(ETC / "neutron" / "neutron.conf"), "--config-file",
                               str(ETC / "neutron" / "ml2_conf.ini"), "upgrade", "heads"],
    }
    marker = STATE / "db-synced"
    if marker.exists():
        return
    started = time.monotonic()
    running = {what: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True) for what, cmd in procs.items()}
    run(nova + ["api_db", "sync"], "nova-manage api_db sync")
    run(nova + ["cell_v2", "map_cell0", "--database_connection", DB_URL.format("nova_cell0")],
        "nova-manage cell_v2 map_cell0")
    run(nova + ["db", "sync"], "nova-manage db sync")
    proc = subprocess.run(nova + ["cell_v2", "list_cells"], capture_output=True, text=True)
    if " cell1 " not in proc.stdout:
        run(nova + ["cell_v2", "create_cell", "--name", "cell1", "--database_connection",
                    DB_URL.format("nova"), "--transport-url", TRANSPORT_URL],
            "nova-manage cell_v2 create_cell")
    for what, child in running.items():
        output, _ = child.communicate()
        if child.returncode != 0:
            raise StackError(f"{what} failed:\n{output[-3000:]}")
    log("database syncs: %.1f s", time.monotonic() - started)
    marker.write_text("ok\n")


def start_control_plane() -> None:
    started = time.monotonic()
    for path in (ETC, LOG_DIR, RUN, GLANCE_DIR / "images", GLANCE_DIR / "staging",
                 GLANCE_DIR / "tasks", GLANCE_DIR / "cache", STATE / "nova" / "lock",
                 STATE / "neutron" / "lock", INSTANCES_PATH):
        path.mkdir(parents=True, exist_ok=True)
    write_configs()
    start_mariadb()
    start_rabbitmq()
    log("MariaDB and RabbitMQ up: %.1f s", time.monotonic() - started)
    db_syncs()
    # The first file is the paste configuration, then the option files.
    nova_env = {"OS_NOVA_CONFIG_FILES": ";".join(
        str(path) for path in (ETC / "nova" / "api-paste.ini", nova_conf_path(),
                               ETC / "nova" / "nova-api.conf")),
                "OS_NOVA_CONFIG_DIR": "/"}
    _uwsgi("placement-api", "placement.wsgi.api:application",
           {"OS_PLACEMENT_CONFIG_DIR": str(ETC / "placement")})
    _uwsgi("neutron-api", "neutron.wsgi.api:application",
           {"OS_NEUTRON_CONFIG_DIR": str(ETC / "neutron"),
            "OS_NEUTRON_CONFIG_FILES": "neutron.conf;ml2_conf.ini"})
    _uwsgi("glance-api", "glance.wsgi.api:application",
           {"OS_GLANCE_CONFIG_DIR": str(ETC / "glance")}, router=True)
    _uwsgi("nova-api", "nova.wsgi.osapi_compute:application",
           nova_env)
    for name in ("nova-conductor", "nova-scheduler"):
        spawn(name, [str(BIN / name), "--config-file", str(nova_conf_path()),
                     "--log-file", str(LOG_DIR / f"{name}.log")])
    wait_for("placement-api", lambda: http_get(ENDPOINTS["placement-api"])[0] == 200, 120,
             "placement-api")
    wait_for("neutron-api", _neutron_ready, 120, "neutron-api")
    wait_for("glance-api", lambda: http_get(ENDPOINTS["glance-api"] + "/v2/images")[0] == 200,
             120, "glance-api")
    wait_for("nova-api", lambda: http_get(ENDPOINTS["nova-api"] + "/v2.1/flavors")[0] == 200,
             120, "nova-api")
    wait_for("nova-conductor and nova-scheduler", _services_up(
        {"nova-conductor", "nova-scheduler"}), 120)
    log("control plane up: %.1f s", time.monotonic() - started)


def _neutron_ready() -> bool:
    # The first ports query after start fails until another query configured
    # the ORM mappers: a network list first.
    if http_get(ENDPOINTS["neutron-api"] + "/v2.0/networks")[0] != 200:
        return False
    return http_get(ENDPOINTS["neutron-api"] + "/v2.0/ports")[0] == 200


def nova_get(path: str) -> object:
    status, body = http_get(ENDPOINTS["nova-api"] + "/v2.1" + path,
                            {"X-Auth-Token": ADMIN_TOKEN,
                             "OpenStack-API-Version": "compute 2.95"})
    if status != 200:
        raise StackError(f"GET {path}: {status} {body[:300]!r}")
    return json.loads(body)


def _services_up(binaries: set[str], hosts: set[str] | None = None):  # noqa
    def check() -> bool:
        services = nova_get("/os-services")["services"]  # type: ignore[index]
        up = {(s["binary"], s["host"]) for s in services
              if s["state"] == "up" and s["status"] == "enabled"}
        for binary in binaries:
            if hosts is None:
                if not any(b == binary for b, _h in up):
                    return False
            elif not all((binary, host) in up for host in hosts):
                return False
        return True
    return check


# --- computes ------------------------------------------------------------------------

def compute_name(host: lab_config.HostSpec) -> str:
    return f"nova-compute-{host.name}"


def parse_plugin_vars(items: list[str]) -> dict[str, str]:
    """``LIVEMIG_EXT_LADDER=a,b`` items: devstack variables for the plugin."""
    found = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("LIVEMIG_EXT_"):
            raise StackError(f"--var {item!r}: expected LIVEMIG_EXT_<OPTION>=VALUE")
        found[name] = value
    return found


def start_computes(driver: str, overrides: list[str],
                   plugin_vars: dict[str, str] | None = None) -> None:
    """Start both nova-computes against the lab's libvirtd hosts (the lab must be up)."""
    if driver not in DRIVERS:
        raise StackError(f"--driver {driver}: expected one of {', '.join(DRIVERS)}")
    for host in LAB.hosts:
        if not host.socket_path.exists():
            raise StackError(f"lab host {host.name} is not running (no {host.socket_path}): "
                             "run 'nova-livemig-ext lab start' first")
        reported = _libvirt_hostname(host)
        if reported != host.hostname:
            # Nova names the compute node after it: two equal names collide.
            raise StackError(f"lab host {host.name}'s libvirtd reports hostname {reported!r}, "
                             f"not {host.hostname!r}: restart the lab ('nova-livemig-ext lab "
                             "stop', then 'start')")
    started = time.monotonic()
    INSTANCES_PATH.mkdir(parents=True, exist_ok=True)
    for host in LAB.hosts:
        compute_state_path(host).mkdir(parents=True, exist_ok=True)
        write_compute_conf(host, driver, overrides, plugin_vars or {})
        log_file = LOG_DIR / f"{compute_name(host)}.log"
        files = compute_conf_files(host)
        with open(log_file, "a") as out:
            out.write(f"--- novastack: starting with driver {DRIVERS[driver]}, "
                      f"reading {' '.join(map(str, files))} ---\n")
        if compute_local_conf_path(host) in files:
            log("%s also reads %s", compute_name(host), compute_local_conf_path(host))
        cmd = [str(BIN / "nova-compute")]
        for conf in files:
            cmd += ["--config-file", str(conf)]
        spawn(compute_name(host), cmd)
    hostnames = {host.hostname for host in LAB.hosts}
    wait_for("both nova-compute services", _services_up({"nova-compute"}, hostnames), 180)
    run([str(BIN / "nova-manage"), "--config-file", str(nova_conf_path()), "cell_v2",
         "discover_hosts"], "nova-manage cell_v2 discover_hosts")
    wait_for("both hypervisors", _hypervisors_up(hostnames), 120)
    if driver == "ext":
        for host in LAB.hosts:
            _devstack("test-config", compute_conf_path(host),
                      log_file=LOG_DIR / f"{compute_name(host)}.log")
    log("computes up with %s: %.1f s", DRIVERS[driver], time.monotonic() - started)


def _libvirt_hostname(host: lab_config.HostSpec) -> str:
    import libvirt
    conn = libvirt.open(host.uri)
    try:
        return str(conn.getHostname())
    finally:
        conn.close()


def _hypervisors_up(hostnames: set[str]):  # noqa
    def check() -> bool:
        hypervisors = nova_get("/os-hypervisors/detail")["hypervisors"]  # type: ignore[index]
        seen = {h["hypervisor_hostname"] for h in hypervisors
                if h["state"] == "up" and h["status"] == "enabled"}
        return hostnames <= seen
    return check


def stop_computes() -> None:
    stop(*(compute_name(host) for host in LAB.hosts),
         timeouts={compute_name(host): compute_stop_timeout_s(host) for host in LAB.hosts})


def destroy_nova_domains() -> list[str]:
    """Nova's guests on the lab hosts (named instance-*): destroyed and undefined."""
    try:
        import libvirt
    except ImportError:
        return []
    destroyed = []
    for host in LAB.hosts:
        if not host.socket_path.exists():
            continue
        try:
            conn = libvirt.open(host.uri)
        except libvirt.libvirtError:
            continue
        try:
            for dom in conn.listAllDomains():
                if not dom.name().startswith("instance-"):
                    continue
                destroyed.append(f"{host.name}:{dom.name()}")
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isActive():
                        dom.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    dom.undefine()
        finally:
            conn.close()
    return destroyed


# --- images and flavors ---------------------------------------------------------------

GUEST_RAM_MIB = 320
FLAVOR_NAME = "lab.guest"
COMPUTE_MICROVERSION = "2.95"


def api(method: str, service: str, path: str, body: object = None,
        data: bytes | None = None, headers: dict[str, str] | None = None,
        expect: tuple[int, ...] = (200, 201, 202, 204)) -> object:
    """One REST call with the stack's admin token; JSON in, JSON (or None) out."""
    all_headers = {"X-Auth-Token": ADMIN_TOKEN,
                   "OpenStack-API-Version": f"compute {COMPUTE_MICROVERSION}",
                   **(headers or {})}
    if body is not None:
        data = json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(ENDPOINTS[service] + path, data=data, method=method,
                                     headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    if status not in expect:
        raise StackError(f"{method} {service}{path}: {status} {payload[:400]!r}")
    return json.loads(payload) if payload.strip() else None


def _glance_image(name: str) -> dict[str, object] | None:
    images = api("GET", "glance-api", f"/v2/images?name={name}")["images"]  # type: ignore
    active = [image for image in images if image["status"] == "active"]
    return active[0] if active else None


def _glance_upload(name: str, fmt: str, data: bytes, properties: dict[str, str]) -> str:
    image = _glance_image(name)
    if image is not None:
        return str(image["id"])
    created = api("POST", "glance-api", "/v2/images",
                  {"name": name, "disk_format": fmt, "container_format": fmt,
                   "visibility": "public", **properties})
    image_id = created["id"]  # type: ignore[index]
    api("PUT", "glance-api", f"/v2/images/{image_id}/file", data=data,
        headers={"Content-Type": "application/octet-stream"})
    return str(image_id)


def guest_command_line(dirty_mb: int, dirty_rate_mb_s: int, check_rate_mb_s: int = 20) -> str:
    """The lab guest's kernel command line (as nova_livemig_lab.guest builds it)."""
    return (f"console=ttyS0 quiet panic=0 DIRTY_MB={dirty_mb} DIRTY_RATE={dirty_rate_mb_s} "
            f"CHECK_RATE={check_rate_mb_s}")


def lab_image(dirty_mb: int, dirty_rate_mb_s: int,
              extra: dict[str, str] | None = None, suffix: str = "") -> str:
    """An AMI of the lab guest with this workload (kernel and initramfs shared)."""
    if not LAB.kernel_path.exists() or not LAB.initramfs_path.exists():
        raise StackError(f"no lab guest in {LAB.guest_dir}: run 'nova-livemig-ext lab setup'")
    kernel_bytes, initramfs_bytes = LAB.kernel_path.read_bytes(), LAB.initramfs_path.read_bytes()
    # Named after their content: a rebuilt initramfs is a new image.
    digest = hashlib.sha256(kernel_bytes + initramfs_bytes).hexdigest()[:10]
    kernel = _glance_upload(f"lab-guest-kernel-{digest}", "aki", kernel_bytes, {})
    ramdisk = _glance_upload(f"lab-guest-initramfs-{digest}", "ari", initramfs_bytes, {})
    name = f"lab-guest-{dirty_mb}mb-{dirty_rate_mb_s}mbs-{digest}{suffix}"
    # A 1 MiB root disk: the guest runs from its initramfs.
    return _glance_upload(name, "ami", bytes(1 << 20), {
        "kernel_id": kernel, "ramdisk_id": ramdisk,
        "os_command_line": guest_command_line(dirty_mb, dirty_rate_mb_s), **(extra or {})})


def lab_flavor(name: str = FLAVOR_NAME, extra_specs: dict[str, str] | None = None) -> str:
    """The lab guest's flavor: 320 MiB, one vCPU, 1 GB disk (plus extra specs)."""
    flavors = api("GET", "nova-api", "/v2.1/flavors/detail")["flavors"]  # type: ignore
    for flavor in flavors:
        if flavor["name"] == name:
            return str(flavor["id"])
    created = api("POST", "nova-api", "/v2.1/flavors",
                  {"flavor": {"name": name, "ram": GUEST_RAM_MIB, "vcpus": 1, "disk": 1}})
    flavor_id = str(created["flavor"]["id"])  # type: ignore[index]
    if extra_specs:
        api("POST", "nova-api", f"/v2.1/flavors/{flavor_id}/os-extra_specs",
            {"extra_specs": extra_specs})
    return flavor_id


# --- up / down / status --------------------------------------------------------------

def listeners() -> list[str]:
    """Listening sockets of the stack's processes, as 'address:port process'."""
    ours = {pid for pid, _cmd in stray_processes()}
    for name in CONTROL_SERVICES + tuple(compute_name(h) for h in LAB.hosts):
        pid = service_pid(name)
        if pid is not None:
            ours |= _group_members(pid)
    proc = subprocess.run(["ss", "-Hltnup"], capture_output=True, text=True)
    found = []
    for line in proc.stdout.splitlines():
        pids = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if pids & ours:
            fields = line.split()
            found.append(f"{fields[4]} ({','.join(map(str, sorted(pids & ours)))})")
    return found


def _group_members(pgid: int) -> set[int]:
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                members.add(int(entry.name))
    return members


def non_loopback(addresses: list[str]) -> list[str]:
    bad = []
    for entry in addresses:
        address = entry.split()[0].rsplit(":", 1)[0].strip("[]")
        if not (address.startswith("127.") or address == "::1"):
            bad.append(entry)
    return bad


def _pss_mib(pids: set[int]) -> float:
    total_kib = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total_kib += int(line.split()[1])
    return round(total_kib / 1024, 1)


def status() -> dict[str, object]:
    services: dict[str, object] = {}
    for name in CONTROL_SERVICES + tuple(compute_name(h) for h in LAB.hosts):
        pid = service_pid(name)
        services[name] = None if pid is None else {
            "pid": pid, "pss_mib": _pss_mib(_group_members(pid))}
    listening = listeners()
    return {"state_dir": str(STATE), "services": services,
            "compute_conf_files": {compute_name(h): [str(f) for f in compute_conf_files(h)]
                                   for h in LAB.hosts},
            "pss_mib_total": round(sum(s["pss_mib"] for s in services.values()  # type: ignore
                                       if s is not None), 1),
            "listening": listening, "listening_beyond_loopback": non_loopback(listening),
            "endpoints": ENDPOINTS}


def down() -> dict[str, object]:
    started = time.monotonic()
    destroyed = destroy_nova_domains()
    stop_computes()
    stop("nova-scheduler", "nova-conductor", "nova-api", "glance-api", "neutron-api",
         "placement-api")
    for name in ("rabbitmq", "epmd", "mariadb"):
        stop(name, timeout_s=30.0)
    leftovers = stray_processes()
    for pid, _cmd in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in rabbit_epmd_pids():
        leftovers.append((pid, "epmd (rabbitmq)"))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    remaining = stray_processes() + [(pid, "epmd") for pid in rabbit_epmd_pids()]
    return {"destroyed_domains": destroyed, "killed_leftovers": leftovers,
            "still_running": remaining, "seconds": round(time.monotonic() - started, 1)}


def reset() -> None:
    """Forget every database and service state (keeps the virtualenv)."""
    result = down()
    if result["still_running"]:
        raise StackError(f"cannot reset, still running: {result['still_running']}")
    for path in (MYSQL_DATA, RABBIT_DIR, GLANCE_DIR, STATE / "nova", STATE / "neutron",
                 RUN, STATE / "db-synced", INSTANCES_PATH,
                 *(compute_state_path(h) for h in LAB.hosts)):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    # The operator's .local files are theirs: everything else in etc goes.
    keep = {compute_local_conf_path(h) for h in LAB.hosts}
    if ETC.is_dir():
        for path in sorted(ETC.rglob("*"), reverse=True):
            if path in keep:
                continue
            if path.is_dir() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.rmdir()
            else:
                path.unlink()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stack.sh")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up")
    up.add_argument("--no-computes", action="store_true")
    up.add_argument("--driver", default="ext", choices=sorted(DRIVERS))
    up.add_argument("--set", action="append", default=[], metavar="[HOST:]SECTION.OPTION=VALUE")
    up.add_argument("--var", action="append", default=[], metavar="LIVEMIG_EXT_X=VALUE")
    computes = sub.add_parser("computes")
    computes.add_argument("action", choices=("up", "down", "restart"))
    computes.add_argument("--driver", default="ext", choices=sorted(DRIVERS))
    computes.add_argument("--set", action="append", default=[],
                          metavar="[HOST:]SECTION.OPTION=VALUE")
    computes.add_argument("--var", action="append", default=[], metavar="LIVEMIG_EXT_X=VALUE")
    images = sub.add_parser("images")
    images.add_argument("--dirty-mb", type=int, default=120)
    images.add_argument("--dirty-rate", type=int, default=40, metavar="MB_S")
    sub.add_parser("down")
    sub.add_parser("status")
    sub.add_parser("reset")
    ini = sub.add_parser("iniset")
    for arg in ("file", "section", "option", "value"):
        ini.add_argument(arg)
    args = parser.parse_args(argv)
    try:
        # A bad --set must not leave the computes stopped.
        parse_overrides(getattr(args, "set", []), LAB.hosts)
        if args.command == "up":
            start_control_plane()
            if not args.no_computes:
                start_computes(args.driver, args.set, parse_plugin_vars(args.var))
        elif args.command == "computes":
            if args.action in ("down", "restart"):
                stop_computes()
            if args.action in ("up", "restart"):
                start_computes(args.driver, args.set, parse_plugin_vars(args.var))
        elif args.command == "images":
            print(json.dumps({"image": lab_image(args.dirty_mb, args.dirty_rate),
                              "flavor": lab_flavor()}, indent=1))
        elif args.command == "down":
            result = down()
            print(json.dumps(result, indent=1))
            if result["still_running"]:
                return 1
        elif args.command == "status":
            report = status()
            print(json.dumps(report, indent=1))
            if report["listening_beyond_loopback"]:
                return 1
        elif args.command == "reset":
            reset()
        elif args.command == "iniset":
            iniset(Path(args.file), args.section, args.option, args.value)
    except StackError as exc:
        print(f"novastack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
