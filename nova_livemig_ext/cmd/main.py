"""``nova-livemig-ext``: the operator's command line.

Subcommands:

* ``flags``: what this host would do with a nova.conf, without libvirt.
* ``migrate``: live-migrate one libvirt domain under a policy.
* ``plan``: predict a migration before starting it.
* ``lab``: the real two-host libvirt lab (setup, start, stop, demo, ...).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import stat
import subprocess
import sys

from oslo_config import cfg

from nova_livemig_ext import conf as livemig_conf
from nova_livemig_ext.convergence import upstream
from nova_livemig_ext import flags as livemig_flags
from nova_livemig_ext import hostfacts
from nova_livemig_ext import policy as livemig_policy

EXIT_REFUSED = 2
# A version as the options take it: 11, 11.3 or 11.3.0; each part after the
# first below 1000 (libvirt's encoding gives each three decimal digits).
# ASCII digits only: \d would also take '١١.٣' and int() would read it.
_VERSION = re.compile(
    r'^([0-9]{1,6})(?:\.([0-9]{1,3}))?(?:\.([0-9]{1,3}))?$')
# The version in a binary's ``--version`` output, suffixes and all.
_VERSION_IN_TEXT = re.compile(
    r'([0-9]{1,6})\.([0-9]{1,3})(?:\.([0-9]{1,3}))?')
# Bytes read from a configuration file to tell text from a binary.
_SNIFF_BYTES = 1 << 20


class ConfigFileError(cfg.Error):
    """A configuration file that cannot be read as text, said in one line."""


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse's errors on one line (no usage block), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, '%s: error: %s (see --help)\n' % (self.prog, message))


# How oslo.config names the file a bad value came from.
_OSLO_LOCATION = re.compile(r"LocationInfo\(location=<[^>]*>, detail='([^']*)'\)")


def one_line(text: object) -> str:
    """A message on one line, whatever it held."""
    return _OSLO_LOCATION.sub(r'\1', ' '.join(str(text).split()))


def refusal_line(error: livemig_policy.InvalidPolicy) -> str:
    """Every refusal of a configuration, on one line."""
    return 'nova-livemig-ext: configuration refused: %s' % ' | '.join(
        one_line(r) for r in error.refusals)


# What a command catches around loading the options and the policy.
CONFIG_ERRORS = (livemig_policy.InvalidPolicy, cfg.Error)


def config_error_line(error: Exception) -> str:
    """A refused policy or an unusable configuration, on one line."""
    if isinstance(error, livemig_policy.InvalidPolicy):
        return refusal_line(error)
    return 'nova-livemig-ext: configuration error: %s' % one_line(error)


def check_config_file(path: str) -> None:
    """Refuse what oslo.config would choke on with a traceback (or hang on).
    """
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigFileError('config file %s is a directory' % path)
        if not stat.S_ISREG(mode) and path != os.devnull:
            # A pipe or a terminal would block, a device never end.
            raise ConfigFileError('config file %s is not a regular file'
                                  % path)
        with open(path, 'rb') as f:
            head = f.read(_SNIFF_BYTES)
    except FileNotFoundError:
        raise ConfigFileError('config file %s does not exist' % path) from None
    except OSError as e:
        raise ConfigFileError('cannot read config file %s: %s'
                              % (path, e.strerror or e)) from None
    if b'\0' in head:
        raise ConfigFileError('config file %s is binary, not an INI text '
                              'file' % path)
    try:
        head.decode('utf-8')
    except UnicodeDecodeError as e:
        # The last few bytes may be a character cut by the sniff limit.
        if len(head) < _SNIFF_BYTES or e.start < len(head) - 4:
            raise ConfigFileError(
                'config file %s is not UTF-8 text (byte 0x%02x at offset %d)'
                % (path, head[e.start], e.start)) from None


def load_conf(config_files: list[str]) -> cfg.ConfigOpts:
    """A private ConfigOpts with Nova's [libvirt] options and ours.

    Raises ``cfg.Error`` (one line) for files that cannot be used.
    """
    import nova.conf.libvirt

    for path in config_files:
        check_config_file(path)
    conf = cfg.ConfigOpts()
    nova.conf.libvirt.register_opts(conf)
    livemig_conf.register_opts(conf)
    args = []
    for path in config_files:
        args += ['--config-file', path]
    _one_line_library_warnings()
    try:
        conf(args=args, project='nova', default_config_files=[])
    except cfg.Error:
        raise
    except (OSError, UnicodeError, ValueError) as e:
        # oslo.config reads the files itself; what slipped past the checks
        # (a file replaced meanwhile, say) is still one line.
        raise ConfigFileError('cannot read the config files %s: %s'
                              % (', '.join(config_files), one_line(e))) from None
    problems = (livemig_conf.invalid_values(conf)
                + livemig_conf.invalid_values(conf, ('libvirt',),
                                              prefix='live_migration'))
    if problems:
        raise ConfigFileError('; '.join(problems))
    return conf


class _OneLineWarning(logging.Handler):
    """oslo.config's warnings (deprecated options) as one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        text = one_line(record.getMessage())
        # Deprecation notices go on with paragraphs of Nova's help text.
        head = text.split(' (', 1)[0] if text.startswith('Deprecated') else (
            text)
        print('nova-livemig-ext: warning: %s' % head[:300], file=sys.stderr)


def _one_line_library_warnings() -> None:
    logger = logging.getLogger('oslo_config')
    if not any(isinstance(h, _OneLineWarning) for h in logger.handlers):
        logger.addHandler(_OneLineWarning(logging.WARNING))
        logger.propagate = False


def warn_unknown_options(conf: cfg.ConfigOpts, prog: str = 'nova-livemig-ext'
                         ) -> None:
    """One warning line on stderr per unknown key in ``[livemig_ext]``."""
    for problem in livemig_conf.unknown_options(conf):
        print('%s: warning: %s' % (prog, problem), file=sys.stderr)


class VersionError(ValueError):
    """A version given on the command line that is not one."""


def parse_version(text: str, what: str = 'version') -> int:
    """'10.0.2' -> 10000002 (libvirt's encoding); refuses anything else."""
    match = _VERSION.match(text.strip())
    if not match:
        raise VersionError('%s %r is not a version: use numbers such as '
                           '11.3.0 (no suffix)' % (what, text))
    parts = [int(p) for p in match.groups(default='0')]
    return livemig_flags.version_int(*parts)


def version_in_text(text: str) -> int | None:
    """The first version in a ``--version`` output, or None."""
    match = _VERSION_IN_TEXT.search(text)
    if not match:
        return None
    return livemig_flags.version_int(
        *[int(p) for p in match.groups(default='0')])


def local_qemu_version(binary: str = 'qemu-system-x86_64') -> int | None:
    path = shutil.which(binary)
    if not path:
        return None
    try:
        out = subprocess.run([path, '--version'], capture_output=True,
                             text=True, check=False, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    words = out.split()
    if 'version' in words and words.index('version') + 1 < len(words):
        return version_in_text(words[words.index('version') + 1])
    return None


def local_host_facts(libvirt_version: str | None,
                     qemu_version: str | None) -> livemig_flags.HostFacts:
    """Host facts without a libvirt connection: binding, binaries, flags."""
    binding = None
    lib = (parse_version(libvirt_version, '--libvirt-version')
           if libvirt_version is not None else None)
    try:
        import libvirt
    except ImportError:
        libvirt = None
    if libvirt is not None:
        binding = hostfacts.binding_names(libvirt)
        if lib is None:
            lib = int(libvirt.getVersion())
    qemu = (parse_version(qemu_version, '--qemu-version')
            if qemu_version is not None else local_qemu_version())
    return livemig_flags.HostFacts(
        libvirt_version=lib or 0, qemu_version=qemu or 0,
        userfaultfd=hostfacts.userfaultfd_available(),
        binding_names=binding)


def steering_lines(policy: livemig_policy.MigrationPolicy,
                   plan: livemig_flags.MigrationPlan) -> list[str]:
    """How the mode steers a running migration, as it applies it.

    ``controller``: our downtime limits.  ``upstream``: Nova's own downtime
    steps and completion timeout, from its ``[libvirt]`` options (the
    ``[livemig_ext]`` limits are not read then).
    """
    if policy.mode != 'upstream':
        return ['downtime: %d ms initial, %d ms ceiling' % (
            policy.initial_downtime_ms, policy.max_downtime_ms)]
    up = policy.upstream
    # Per GiB of data as Nova counts it (RAM and each disk, at least 2 GiB).
    steps = upstream.downtime_steps(upstream.UpstreamConfig(
        data_gib=1.0, downtime_ms=up.downtime_ms,
        downtime_steps=up.downtime_steps,
        downtime_delay_s=up.downtime_delay_s_per_gib))
    lines = ["downtime: Nova's %d steps from %d ms to %d ms, one every %d s "
             'per GiB of data ([libvirt] live_migration_downtime, '
             '_downtime_steps, _downtime_delay)'
             % (len(steps), steps[0][1], steps[-1][1],
                up.downtime_delay_s_per_gib)]
    if up.completion_timeout_s_per_gib <= 0:
        lines.append('completion timeout: none')
    else:
        action = up.timeout_action
        if action == upstream.TIMEOUT_ACTION_FORCE_COMPLETE:
            action += (' (post-copy)' if plan.postcopy_armed
                       else ' (pause)')
        lines.append('completion timeout: %d s per GiB of data, then %s'
                     % (up.completion_timeout_s_per_gib, action))
    return lines


def cmd_flags(args: argparse.Namespace) -> int:
    try:
        facts = local_host_facts(args.libvirt_version, args.qemu_version)
        conf = load_conf(args.config_file)
        warn_unknown_options(conf)
        policy = livemig_policy.policy_from_conf(conf)
        livemig_flags.check_policy(policy, facts)
    except VersionError as e:
        print('nova-livemig-ext flags: error: %s' % e, file=sys.stderr)
        return EXIT_REFUSED
    except CONFIG_ERRORS as e:
        print(config_error_line(e), file=sys.stderr)
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
    for line in steering_lines(policy, plan):
        print(line)
    print('host: libvirt %s, QEMU %s, userfaultfd %s' % (
        livemig_flags.version_str(facts.libvirt_version),
        livemig_flags.version_str(facts.qemu_version),
        'yes' if facts.userfaultfd else 'no'))
    for note in plan.notes:
        print('note: %s' % note)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
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

    from nova_livemig_ext.cmd import recover
    recover.register(sub)

    # Handled in main() before parsing; listed here for --help.
    sub.add_parser('lab', help='the real two-host libvirt lab: setup, '
                   'start, stop, status, boot, migrate, ... (see lab '
                   '--help)', add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['lab']:
        # The lab has its own parser (and its own --help), and its own
        # distribution, which compute hosts do not install.
        try:
            from nova_livemig_lab import cli as lab_cli
        except ModuleNotFoundError as exc:
            if exc.name != 'nova_livemig_lab':
                raise
            print('nova-livemig-ext: the lab is not installed here (it is '
                  'the separate distribution nova-livemig-ext-lab, for '
                  'development machines only: pip install ./lab from a '
                  'checkout)', file=sys.stderr)
            return 2
        return int(lab_cli.main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == '__main__':
    sys.exit(main())
