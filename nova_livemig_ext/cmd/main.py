"""``nova-livemig-ext``: the operator's command line.

Subcommands:

* ``flags``: what this host would do with a nova.conf, without libvirt.
* ``migrate``: live-migrate one libvirt domain under a policy.
* ``plan``: predict a migration before starting it.
* ``lab``: the real two-host libvirt lab (setup, start, stop, demo, ...).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

from oslo_config import cfg

from nova_livemig_ext import conf as livemig_conf
from nova_livemig_ext import flags as livemig_flags
from nova_livemig_ext import hostfacts
from nova_livemig_ext import policy as livemig_policy

EXIT_REFUSED = 2


def load_conf(config_files: list[str]) -> cfg.ConfigOpts:
    """A private ConfigOpts with Nova's [libvirt] options and ours."""
    import nova.conf.libvirt

    conf = cfg.ConfigOpts()
    nova.conf.libvirt.register_opts(conf)
    livemig_conf.register_opts(conf)
    args = []
    for path in config_files:
        args += ['--config-file', path]
    conf(args=args, project='nova', default_config_files=[])
    return conf


def parse_version(text: str) -> int:
    """'10.0.2' -> 10000002 (libvirt's encoding)."""
    parts = [int(p) for p in text.split('.')[:3]]
    parts += [0] * (3 - len(parts))
    return livemig_flags.version_int(*parts)


def local_qemu_version(binary: str = 'qemu-system-x86_64') -> int | None:
    path = shutil.which(binary)
    if not path:
        return None
    out = subprocess.run([path, '--version'], capture_output=True,
                         text=True, check=False).stdout
    words = out.split()
    if 'version' in words and words.index('version') + 1 < len(words):
        return parse_version(words[words.index('version') + 1])
    return None


def local_host_facts(libvirt_version: str | None,
                     qemu_version: str | None) -> livemig_flags.HostFacts:
    """Host facts without a libvirt connection: binding, binaries, flags."""
    binding = None
    lib = parse_version(libvirt_version) if libvirt_version else None
    try:
        import libvirt
    except ImportError:
        libvirt = None
    if libvirt is not None:
        binding = hostfacts.binding_names(libvirt)
        if lib is None:
            lib = int(libvirt.getVersion())
    qemu = parse_version(qemu_version) if qemu_version else (
        local_qemu_version())
    return livemig_flags.HostFacts(
        libvirt_version=lib or 0, qemu_version=qemu or 0,
        userfaultfd=hostfacts.userfaultfd_available(),
        binding_names=binding)


def cmd_flags(args: argparse.Namespace) -> int:
    try:
        conf = load_conf(args.config_file)
        policy = livemig_policy.policy_from_conf(conf)
        facts = local_host_facts(args.libvirt_version, args.qemu_version)
        livemig_flags.check_policy(policy, facts)
    except livemig_policy.InvalidPolicy as e:
        print(e, file=sys.stderr)
        return EXIT_REFUSED
    except cfg.Error as e:
        print('nova-livemig-ext: configuration error: %s' % e,
              file=sys.stderr)
        return EXIT_REFUSED
    instance = livemig_flags.InstanceFacts(
        block_migration=args.block_migration, paused=args.paused)
    plan = livemig_flags.plan_migration(policy, facts, instance)
    print('|'.join(plan.flag_names))
    print('flags: %d' % plan.flags)
    for key in sorted(plan.params):
        print('param %s = %s' % (key, plan.params[key]))
    print('mode: %s' % policy.mode)
    print('ladder: %s' % (','.join(plan.ladder) or '(none)'))
    print('downtime: %d ms initial, %d ms ceiling' % (
        policy.initial_downtime_ms, policy.max_downtime_ms))
    print('host: libvirt %s, QEMU %s, userfaultfd %s' % (
        livemig_flags.version_str(facts.libvirt_version),
        livemig_flags.version_str(facts.qemu_version),
        'yes' if facts.userfaultfd else 'no'))
    for note in plan.notes:
        print('note: %s' % note)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='nova-livemig-ext',
        description='Live migrations that converge within a deadline.')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser(
        'flags', help='print the flags, parameters and ladder this host '
        'would use (does not connect to libvirt)')
    p.add_argument('--config-file', action='append', default=[],
                   required=True, help='nova.conf (repeatable)')
    p.add_argument('--libvirt-version', help='assume this libvirt version '
                   '(default: the libvirt-python library version)')
    p.add_argument('--qemu-version', help='assume this QEMU version '
                   '(default: qemu-system-x86_64 --version)')
    p.add_argument('--block-migration', action='store_true',
                   help='plan a block migration')
    p.add_argument('--paused', action='store_true',
                   help='plan for an instance that is paused')
    p.set_defaults(func=cmd_flags)

    from nova_livemig_ext.cmd import migrate
    migrate.register(sub)

    from nova_livemig_ext.cmd import plan
    plan.register(sub)

    # Handled in main() before parsing; listed here for --help.
    sub.add_parser('lab', help='the real two-host libvirt lab: setup, '
                   'start, stop, status, boot, migrate, ... (see lab '
                   '--help)', add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['lab']:
        # The lab has its own parser (and its own --help).
        from nova_livemig_ext.lab import cli as lab_cli
        return int(lab_cli.main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == '__main__':
    sys.exit(main())
