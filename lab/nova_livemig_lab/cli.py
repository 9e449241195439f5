"""Command line of the lab: ``nova-livemig-ext lab <command>``.

Commands: setup, start, stop, status, boot, migrate, fetch-old-qemu,
link-rate, link-cut, link-restore, record-traces, demo. ``main(argv)``
returns the exit status so that a console script can wrap it.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from nova_livemig_lab import config as lab_config
from nova_livemig_lab import lock
from nova_livemig_lab.errors import LabError

LOG = logging.getLogger(__name__)


def _print(data: object) -> None:
    print(json.dumps(data, indent=1, default=str))


def _cmd_setup(cfg: lab_config.LabConfig, args: argparse.Namespace) -> int:
    from nova_livemig_lab import image
    image.setup(cfg)
    _print({"kernel": cfg.kernel_path, "initramfs": cfg.initramfs_path})
    return 0


def _cmd_start(cfg: lab_config.LabConfig, args: argparse.Namespace) -> int:
    from nova_livemig_lab import hosts
    _print(hosts.start(cfg))
    return 0


def _cmd_stop(cfg: lab_config.LabConfig, args: argparse.Namespace) -> int:
    from nova_livemig_lab import hosts
    report = hosts.stop(cfg)
    _print(report)
    return 1 if report["leftovers"] else 0


def _cmd_status(cfg: lab_config.LabConfig, args: argparse.Namespace) -> int:
    from nova_livemig_lab import hosts
    _print(hosts.status(cfg))
    return 0


def _cmd_boot(cfg: lab_config.LabConfig, args: argparse.Namespace) -> int:
    from nova_livemig_lab import guest
    from nova_livemig_lab.lock import LabLock
    with LabLock(cfg):
        booted = guest.boot(cfg, cfg.host(args.host), args.name, dirty_mb=args.dirty_mb,
                            dirty_rate_mb_s=args.dirty_rate)
    booted.close()
    _print({"name": booted.name, "host": booted.host.name,
            "console": booted.host.real_console_path(booted.name)})
    return 0


def _cmd_migrate(cfg: lab_config.LabConfig, args: argparse.Namespace) -> int:
    from nova_livemig_lab import measure
    from nova_livemig_lab.lock import LabLock
    with LabLock(cfg):
        result = measure.scenario(cfg, flags_names=args.flags, dirty_mb=args.dirty_mb,
                                  dirty_rate_mb_s=args.dirty_rate,
                                  abort_after_s=args.abort_after,
                                  postcopy_after_pass=args.postcopy,
                                  emulator=args.emulator)
    _print(measure.summary(result))
    return 0 if result.integrity.ok else 2


def _cmd_fetch_old_qemu(cfg: lab_config.LabConfig, args: argparse.Namespace) -> int:
    from nova_livemig_lab import oldqemu
    _print({"qemu_7_2": oldqemu.fetch_old_qemu(cfg)})
    return 0


def _cmd_link_rate(cfg: lab_config.LabConfig, args: argparse.Namespace) -> int:
    from nova_livemig_lab import network
    network.set_rate(cfg, args.mbit)
    measured = network.measure_rate_mb_s(cfg)
    network.check_rate(args.mbit, measured)
    network.save_link_state(cfg, args.mbit, measured)
    _print({"rate_mbit": args.mbit, "measured_mb_s": round(measured, 2)})
    return 0


def _cmd_link_cut(cfg: lab_config.LabConfig, args: argparse.Namespace) -> int:
    from nova_livemig_lab import network
    network.set_link_up(cfg, False)
    return 0


def _cmd_link_restore(cfg: lab_config.LabConfig, args: argparse.Namespace) -> int:
    from nova_livemig_lab import network
    network.set_link_up(cfg, True)
    return 0


def _cmd_record_traces(cfg: lab_config.LabConfig, args: argparse.Namespace) -> int:
    from nova_livemig_lab import traces
    written = traces.record_all(cfg, Path(args.output), only=args.only)
    _print([str(path) for path in written])
    return 0


def _cmd_demo(cfg: lab_config.LabConfig, args: argparse.Namespace) -> int:
    from nova_livemig_lab import demo
    return demo.main(cfg, Path(args.output))


def _cmd_compare(cfg: lab_config.LabConfig, args: argparse.Namespace) -> int:
    from nova_livemig_lab import demo, workloads
    workload = workloads.named(args.workload)
    chosen = None
    if args.only:
        every = demo.alternatives()
        names = {s.name for s in every}
        unknown = sorted(set(args.only) - names)
        if unknown:
            raise LabError(f"unknown policy {', '.join(unknown)}: "
                           f"one of {', '.join(sorted(names))}")
        chosen = tuple(s for s in every if s.name in args.only)
    rows = demo.compare(cfg, Path(args.output), workload, chosen)
    return 0 if all(r.guest_intact for r in rows) else 1


def _cmd_chaos(cfg: lab_config.LabConfig, args: argparse.Namespace) -> int:
    from nova_livemig_lab import chaos
    return chaos.main([*args.chaos_args, "--state-dir", str(cfg.state_dir)])


COMMANDS: dict[str, tuple[str, Callable[[lab_config.LabConfig, argparse.Namespace], int]]] = {
    "setup": ("install packages, fetch the guest kernel, build the initramfs", _cmd_setup),
    "start": ("start the shaped link and both libvirt hosts", _cmd_start),
    "stop": ("stop everything and check nothing is left behind", _cmd_stop),
    "status": ("show daemons, namespaces, link and QEMU processes", _cmd_status),
    "boot": ("boot one lab guest and wait for steady heartbeats", _cmd_boot),
    "migrate": ("boot a guest on host a, migrate it to b, print the measurements", _cmd_migrate),
    "fetch-old-qemu": ("unpack Debian 12's QEMU 7.2 privately (corruption check)",
                       _cmd_fetch_old_qemu),
    "link-rate": ("reshape the link and measure it", _cmd_link_rate),
    "link-cut": ("take the link down (a real network fault)", _cmd_link_cut),
    "link-restore": ("bring the link back up", _cmd_link_restore),
    "record-traces": ("record the jobStats traces under tests/traces", _cmd_record_traces),
    "demo": ("paused copy vs upstream Nova vs ours (defaults, post-copy) on a memory-busy guest",
             _cmd_demo),
    "compare": ("move one workload under the shipped defaults and each remedy alone "
                "(the lab must be started)", _cmd_compare),
    "chaos": ("random faults at random moments of real migrations (the lab must be "
              "started; arguments as python -m nova_livemig_lab.chaos)", _cmd_chaos),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nova-livemig-ext lab",
                                     description="Two-host libvirt + QEMU lab on one machine.")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help=f"lab state (default ${lab_config.STATE_DIR_ENV} or "
                             f"{lab_config.DEFAULT_STATE_DIR})")
    parser.add_argument("--link-mbit", type=int, default=None,
                        help=f"link rate for 'start' (default ${lab_config.LINK_RATE_ENV} or "
                             f"{lab_config.DEFAULT_LINK_RATE_MBIT})")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _func) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        _add_arguments(name, command)
    return parser


def _add_arguments(name: str, command: argparse.ArgumentParser) -> None:
    if name in ("boot", "migrate"):
        command.add_argument("--dirty-mb", type=int, default=120, help="working set, MB")
        command.add_argument("--dirty-rate", type=int, default=4, help="dirty rate, MB/s")
    if name == "boot":
        command.add_argument("--host", default="a", choices=("a", "b"))
        command.add_argument("--name", default="lab-guest")
    if name == "migrate":
        command.add_argument("--flags", nargs="+", default=["LIVE", "PEER2PEER"],
                             help="VIR_MIGRATE_* names without the prefix")
        command.add_argument("--abort-after", type=float, default=None,
                             help="abortJob after this many seconds")
        command.add_argument("--postcopy", action="store_true",
                             help="migrateStartPostCopy after the first pass")
        command.add_argument("--emulator", default=None,
                             help="QEMU binary for the guest (default "
                                  "$NOVA_LIVEMIG_LAB_EMULATOR or /usr/bin/qemu-system-x86_64)")
    if name == "link-rate":
        command.add_argument("mbit", type=int)
    if name == "demo":
        command.add_argument("--output", default="lab-demo",
                             help="where remaining.png and results.json go")
    if name == "compare":
        from nova_livemig_lab import workloads
        command.add_argument("--workload", default="steady", choices=sorted(workloads.WORKLOADS))
        command.add_argument("--only", nargs="*", default=None,
                             help="policies to run (default: the shipped defaults and every "
                                  "baseline; 'post-copy' and 'throttle', ours with one remedy, "
                                  "only when named)")
        command.add_argument("--output", default="lab-compare", help="where the JSON goes")
    if name == "record-traces":
        traces_dir = Path(__file__).resolve().parents[2] / "tests" / "traces"
        command.add_argument("--output", default=str(traces_dir))
        command.add_argument("--only", nargs="*", default=None, help="trace names to record")


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    chaos_args: list[str] = []
    if "chaos" in words:
        # Everything after "chaos" is the chaos command's own (its options
        # start with "--", which argparse would take for ours).
        at = words.index("chaos")
        words, chaos_args = words[:at + 1], words[at + 1:]
    args = build_parser().parse_args(words)
    if args.command == "chaos":
        args.chaos_args = chaos_args
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = lab_config.load_config(args.state_dir, args.link_mbit)
        # Before anything reads, writes, mounts or runs from the state
        # directory: another user may have created or planted it.
        lock.trusted_lab_dirs(cfg, create=args.command not in ("status", "stop"))
        return COMMANDS[args.command][1](cfg, args)
    except LabError as exc:
        print(f"lab {args.command}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # libvirt errors are the usual case; their text says what went wrong.
        if type(exc).__name__ != "libvirtError":
            raise
        print(f"lab {args.command}: libvirt: {exc}", file=sys.stderr)
        return 1
