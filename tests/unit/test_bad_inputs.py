"""Every bad input to ``flags``, ``plan`` and ``migrate``: one line, exit != 0.

Each row runs through the command's real entry point (``main(argv)`` of
``nova-livemig-ext``) and must end with a non-zero exit status, exactly one
line on stderr that names the problem, nothing on stdout and no traceback.
A few rows run again through the installed console script in a fresh
process, where nothing of the test runner filters or catches.
"""

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings

import testtools

from nova_livemig_ext.cmd import main as cmd

try:
    import libvirt
except ImportError:
    libvirt = None

GOOD_PLAN = ['plan', '--memory', '1GiB', '--bandwidth', '1Gbit/s']
# Refuses connections at once: a migration here can never start.
REFUSED_URI = 'qemu+tcp://127.0.0.1:1/system'
TRACE_SAMPLE = {'t': 0, 'stats': {'type': 2}}

# name -> file content (bytes) written under the test's temporary directory.
FILES = {
    'binary.conf': b'\x7fELF\x02\x01\x01\x00\x00\x00\xff\xfe',
    'latin1.conf': b'[livemig_ext]\n# r\xe9seau\nmode = controller\n',
    'no-section.conf': b'mode = controller\n',
    'open-section.conf': b'[livemig_ext\nmode = controller\n',
    'bad-int.conf': b'[livemig_ext]\nmax_downtime_ms = soon\n',
    'huge-int.conf': b'[livemig_ext]\nmax_downtime_ms = 1e400\n',
    'nan-float.conf': b'[livemig_ext]\npoll_interval_s = nan\n',
    'inf-float.conf': b'[livemig_ext]\npoll_interval_s = inf\n',
    'neg-float.conf': b'[livemig_ext]\npoll_interval_s = -1\n',
    'big-float.conf': b'[livemig_ext]\npoll_interval_s = 1e400\n',
    'nan-recovery.conf':
        b'[livemig_ext]\npostcopy_recovery_timeout_s = nan\n',
    'neg-recovery.conf':
        b'[livemig_ext]\npostcopy_recovery_timeout_s = -5\n',
    'neg-bandwidth.conf': b'[livemig_ext]\nbandwidth_mib_s = -1\n',
    'bad-choice.conf': b'[livemig_ext]\nmode = warp\n',
    'bad-ladder.conf': b'[livemig_ext]\nladder = warp,abort\n',
    'two-refusals.conf': b'[livemig_ext]\nladder = postcopy,abort\n'
                         b'initial_downtime_ms = 900\n'
                         b'max_downtime_ms = 400\n',
    'bad-nova.conf': b'[libvirt]\nlive_migration_downtime = soon\n',
    'typo.conf': b'[livemig_ext]\nrequires_tls = True\n',
    'truncated.json': b'{"trace": [{"t": 0, "stats": ',
    'list.json': b'[1, 2]',
    'nan.json': b'{"trace": [{"t": NaN, "stats": {"type": 2}}]}',
    'huge.json': b'{"trace": [{"t": 1e400, "stats": {"type": 2}}]}',
    'no-t.json': b'{"trace": [{"stats": {"type": 2}}]}',
    'text-t.json': b'{"trace": [{"t": "soon", "stats": {"type": 2}}]}',
    'int-sample.json': b'{"trace": [5]}',
    'stats-list.json': b'{"trace": [{"t": 0, "stats": [1]}]}',
    'trace-number.json': b'{"trace": 5}',
    'no-samples.json': b'{"trace": []}',
    'binary.json': b'\x00\x01\xff',
    'deep.json': b'[' * 100000,
    # Lookalike sections and misplaced options: the TLS ones are refused.
    'lookalike-tls.conf': b'[livemig-ext]\nrequire_tls = True\n',
    'lookalike-space.conf': b'[livemig_ext ]\nrequire_tls = True\n',
    'lookalike-nosep.conf': b'[livemigext]\nnative_tls = True\n',
    'upper-tls.conf': b'[LIVEMIG_EXT]\nrequire_tls = True\n',
    'default-tls.conf': b'[DEFAULT]\nrequire_tls = True\n',
    'libvirt-tls.conf': b'[libvirt]\nnative_tls = True\n',
    # Numbers only in ASCII digits.
    'arabic-int.conf': '[livemig_ext]\nmax_downtime_ms = ٤٠٠\n'.encode(),
    'fullwidth-int.conf': '[livemig_ext]\nmax_downtime_ms = ４００\n'.encode(),
    'underscore-int.conf': b'[livemig_ext]\nmax_downtime_ms = 4_00\n',
    'fullwidth-float.conf':
        '[livemig_ext]\npoll_interval_s = ０.５\n'.encode(),
    'arabic-nova.conf':
        '[libvirt]\nlive_migration_downtime = ٥٠٠\n'.encode(),
    # Trace numbers beyond 64 bits, times that go back.
    'big-int.json': ('{"trace": [{"t": 1%s, "stats": {"type": 2}}]}'
                     % ('0' * 399)).encode(),
    'big-stat.json': ('{"trace": [{"t": 0, "stats": {"type": 2, '
                      '"memory_total": 1%s}}]}' % ('0' * 399)).encode(),
    'big-float.json': b'{"trace": [{"t": 1e300, "stats": {"type": 2}}]}',
    'backwards.json': json.dumps({'trace': [
        {'t': 0.5, 'stats': {'type': 2}}, {'t': 1.0, 'stats': {'type': 2}},
        {'t': 0.7, 'stats': {'type': 2}}]}).encode(),
    # Named on stderr, not refused: nothing asks for TLS.
    'lookalike-plain.conf': b'[livemig-ext]\nladder = abort\n',
    'lookalike-no-tls.conf': b'[livemigext]\nrequire_tls = False\n',
    'default-misplaced.conf': b'[DEFAULT]\nmax_downtime_ms = 400\n',
    'libvirt-misplaced.conf': b'[libvirt]\nladder = abort\n',
}


def _migrate(*extra):
    return ['migrate', 'test', '--from', 'test:///default', '--to',
            REFUSED_URI, *extra]


# (argv with {d} for the temporary directory, words stderr must contain)
BAD = [
    # flags: configuration files
    (['flags', '--config-file', '{d}'], ['{d}', 'is a directory']),
    (['flags', '--config-file', '{d}/binary.conf'], ['binary']),
    (['flags', '--config-file', '{d}/latin1.conf'], ['not UTF-8',
                                                     'offset 17']),
    (['flags', '--config-file', '{d}/missing.conf'], ['does not exist']),
    (['flags', '--config-file', '{d}/fifo'], ['fifo', 'not a regular']),
    (['flags', '--config-file', '{d}/socket'], ['socket',
                                                'not a regular']),
    (['flags', '--config-file', '/dev/zero'], ['/dev/zero',
                                               'not a regular']),
    (['flags', '--config-file', '{d}/no-section.conf'], ['no-section.conf']),
    (['flags', '--config-file', '{d}/open-section.conf'],
     ['open-section.conf']),
    (['flags', '--config-file', '{d}/bad-int.conf'],
     ['max_downtime_ms', 'soon']),
    (['flags', '--config-file', '{d}/huge-int.conf'],
     ['max_downtime_ms', '1e400']),
    (['flags', '--config-file', '{d}/nan-float.conf'],
     ['poll_interval_s', 'nan']),
    (['flags', '--config-file', '{d}/inf-float.conf'],
     ['poll_interval_s', 'inf']),
    (['flags', '--config-file', '{d}/neg-float.conf'],
     ['poll_interval_s', '-1']),
    (['flags', '--config-file', '{d}/big-float.conf'],
     ['poll_interval_s', '1e400']),
    (['flags', '--config-file', '{d}/nan-recovery.conf'],
     ['postcopy_recovery_timeout_s', 'nan']),
    (['flags', '--config-file', '{d}/neg-recovery.conf'],
     ['postcopy_recovery_timeout_s', '-5']),
    (['flags', '--config-file', '{d}/neg-bandwidth.conf'],
     ['bandwidth_mib_s', '-1']),
    (['flags', '--config-file', '{d}/bad-choice.conf'], ['mode', 'warp']),
    (['flags', '--config-file', '{d}/bad-ladder.conf'], ['ladder', 'warp']),
    (['flags', '--config-file', '{d}/two-refusals.conf'],
     ['[livemig_ext] ladder', '[livemig_ext] initial_downtime_ms']),
    (['flags', '--config-file', '{d}/bad-nova.conf'],
     ['[libvirt] live_migration_downtime', 'soon']),
    # flags: versions
    (['flags', '--config-file', '{d}/typo.conf', '--libvirt-version',
      '10.1.0-rc1'], ['--libvirt-version', '10.1.0-rc1']),
    (['flags', '--config-file', '{d}/typo.conf', '--qemu-version', '1e400'],
     ['--qemu-version', '1e400']),
    (['flags', '--config-file', '{d}/typo.conf', '--qemu-version', 'nan'],
     ['--qemu-version', 'nan']),
    (['flags', '--config-file', '{d}/typo.conf', '--qemu-version', ''],
     ['--qemu-version']),
    (['flags', '--config-file', '{d}/typo.conf', '--qemu-version',
      '1.2.3.4'], ['--qemu-version', '1.2.3.4']),
    (['flags', '--config-file', '{d}/typo.conf', '--qemu-version',
      '10.1000.0'], ['--qemu-version', '10.1000.0']),
    (['flags', '--config-file', '{d}/typo.conf', '--libvirt-version', '-1'],
     ['--libvirt-version', '-1']),
    (['flags'], ['--config-file']),
    (['flags', '--config-file'], ['--config-file']),
    (['nonsense'], ['nonsense']),
    ([], ['required']),
    # plan: quantities
    (GOOD_PLAN[:3] + ['--bandwidth', 'nan'], ['bandwidth', 'nan']),
    (GOOD_PLAN[:3] + ['--bandwidth', 'inf'], ['bandwidth', 'inf']),
    (GOOD_PLAN[:3] + ['--bandwidth', '1e400Gbit/s'], ['bandwidth', '1e400']),
    (GOOD_PLAN[:3] + ['--bandwidth', '0'], ['bandwidth', 'outside']),
    (GOOD_PLAN[:3] + ['--bandwidth=-1Gbit/s'], ['bandwidth', 'negative']),
    (GOOD_PLAN[:3] + ['--bandwidth', '1Mib/s'], ['Mib/s', 'ambiguous']),
    (GOOD_PLAN[:3] + ['--bandwidth', '3 furlongs/s'], ['furlongs/s']),
    (GOOD_PLAN[:3] + ['--bandwidth', '1e-320B/s'], ['bandwidth', 'outside']),
    (['plan', '--memory', '1e400GiB', '--bandwidth', '1Gbit/s'],
     ['memory', '1e400GiB']),
    (['plan', '--memory', 'nan', '--bandwidth', '1Gbit/s'], ['memory',
                                                             'nan']),
    (['plan', '--memory', '0GiB', '--bandwidth', '1Gbit/s'], ['memory',
                                                              'outside']),
    (['plan', '--memory', '1e15TiB', '--bandwidth', '1Gbit/s'],
     ['memory', 'outside']),
    (['plan', '--memory=-1GiB', '--bandwidth', '1Gbit/s'], ['memory',
                                                            'negative']),
    (['plan', '--memory', '32', '--bandwidth', '1Gbit/s'], ['no unit']),
    (GOOD_PLAN + ['--dirty-rate', 'nan'], ['dirty rate', 'nan']),
    (GOOD_PLAN + ['--dirty-rate', '1e400MB/s'], ['dirty rate', '1e400']),
    (GOOD_PLAN + ['--dirty-rate=-5MB/s'], ['dirty rate', 'negative']),
    (GOOD_PLAN + ['--dirty-rate', '1e18GB/s'], ['dirty rate', 'outside']),
    (GOOD_PLAN + ['--dirty-rate', ''], ['dirty rate']),
    (GOOD_PLAN + ['--downtime-limit', 'nan'], ['downtime limit', 'nan']),
    (GOOD_PLAN + ['--downtime-limit', 'inf'], ['downtime limit', 'inf']),
    (GOOD_PLAN + ['--downtime-limit', '1e400ms'], ['downtime limit']),
    (GOOD_PLAN + ['--downtime-limit', '0'], ['downtime limit']),
    (GOOD_PLAN + ['--downtime-limit', '1e-300ms'], ['downtime limit',
                                                    'outside']),
    (GOOD_PLAN + ['--downtime-limit', '1e300s'], ['downtime limit',
                                                  'outside']),
    (GOOD_PLAN + ['--working-set', 'nan%'], ['working set', 'nan%']),
    (GOOD_PLAN + ['--working-set', '1e400%'], ['working set']),
    (GOOD_PLAN + ['--working-set', '2GiB'], ['working set']),
    (GOOD_PLAN + ['--link-efficiency', 'nan'], ['--link-efficiency']),
    (GOOD_PLAN + ['--link-efficiency', 'inf'], ['--link-efficiency']),
    (GOOD_PLAN + ['--link-efficiency', 'fast'], ['--link-efficiency']),
    (['plan', '--bandwidth', '1Gbit/s'], ['--memory is required']),
    # plan: traces
    (['plan', '--trace', '{d}'], ['{d}', 'directory']),
    (['plan', '--trace', '{d}/missing.json'], ['missing.json']),
    (['plan', '--trace', '{d}/fifo'], ['fifo', 'not a regular file']),
    (['plan', '--trace', '/dev/zero'], ['/dev/zero', 'not a regular']),
    (['plan', '--trace', '{d}/binary.json'], ['binary.json']),
    (['plan', '--trace', '{d}/binary.conf'], ['binary.conf']),
    (['plan', '--trace', '{d}/truncated.json'], ['truncated.json',
                                                 'JSON']),
    (['plan', '--trace', '{d}/deep.json'], ['deep.json']),
    (['plan', '--trace', '{d}/list.json'], ['list.json', 'not a trace']),
    (['plan', '--trace', '{d}/nan.json'], ['nan.json', 'NaN']),
    (['plan', '--trace', '{d}/huge.json'], ['huge.json', '1e400']),
    (['plan', '--trace', '{d}/no-t.json'], ['no-t.json', 'sample 0']),
    (['plan', '--trace', '{d}/text-t.json'], ['text-t.json', 'sample 0']),
    (['plan', '--trace', '{d}/int-sample.json'], ['int-sample.json',
                                                  'sample 0']),
    (['plan', '--trace', '{d}/stats-list.json'], ['stats-list.json',
                                                  'sample 0']),
    (['plan', '--trace', '{d}/trace-number.json'], ['trace-number.json']),
    (['plan', '--trace', '{d}/no-samples.json'], ['no-samples.json']),
    # plan: configuration
    (GOOD_PLAN + ['--config-file', '{d}'], ['{d}', 'directory']),
    (GOOD_PLAN + ['--config-file', '{d}/binary.conf'], ['binary']),
    (GOOD_PLAN + ['--config-file', '{d}/nan-float.conf'],
     ['poll_interval_s', 'nan']),
    (GOOD_PLAN + ['--config-file', '{d}/two-refusals.conf'],
     ['[livemig_ext] ladder']),
    # lab: a state directory root must not trust (refused by the lab lock
    # before anything is booted)
    (['lab', '--state-dir', '/proc/self/cwd', 'boot'],
     ['lab boot', '/proc/self/cwd', 'symlink', 'NOVA_LIVEMIG_LAB_DIR']),
    (['lab', '--state-dir', '{d}/fifo', 'boot'],
     ['lab boot', '{d}/fifo', 'not a directory']),
    # flags: sections and options of ours that are not read
    (['flags', '--config-file', '{d}/lookalike-tls.conf'],
     ["require_tls = 'True' in [livemig-ext]", 'not read']),
    (['flags', '--config-file', '{d}/lookalike-space.conf'],
     ["require_tls = 'True' in [livemig_ext ]", 'not read']),
    (['flags', '--config-file', '{d}/lookalike-nosep.conf'],
     ["native_tls = 'True' in [livemigext]", 'not read']),
    (['flags', '--config-file', '{d}/upper-tls.conf'],
     ['require_tls', 'native TLS is off']),
    (['flags', '--config-file', '{d}/default-tls.conf'],
     ["require_tls = 'True' in [DEFAULT]", 'belongs in [livemig_ext]']),
    (['flags', '--config-file', '{d}/libvirt-tls.conf'],
     ["native_tls = 'True' in [libvirt]", 'belongs in [livemig_ext]']),
    # flags: numbers only in ASCII digits
    (['flags', '--config-file', '{d}/arabic-int.conf'],
     ['max_downtime_ms', '٤٠٠', 'ASCII digits']),
    (['flags', '--config-file', '{d}/fullwidth-int.conf'],
     ['max_downtime_ms', '４００', 'ASCII digits']),
    (['flags', '--config-file', '{d}/underscore-int.conf'],
     ['max_downtime_ms', '4_00', '"_"']),
    (['flags', '--config-file', '{d}/fullwidth-float.conf'],
     ['poll_interval_s', '０.５', 'ASCII digits']),
    (['flags', '--config-file', '{d}/arabic-nova.conf'],
     ['[libvirt] live_migration_downtime', '٥٠٠', 'ASCII digits']),
    (['flags', '--config-file', '{d}/typo.conf', '--qemu-version', '١٠.١'],
     ['--qemu-version', '١٠.١']),
    (['flags', '--config-file', '{d}/typo.conf', '--libvirt-version',
      '１１.３.０'], ['--libvirt-version', '１１.３.０']),
    # plan: numbers only in ASCII digits
    (['plan', '--memory', '٣٢GiB', '--bandwidth', '1Gbit/s'],
     ['memory', '٣٢GiB']),
    (GOOD_PLAN[:3] + ['--bandwidth', '１Gbit/s'], ['bandwidth', '１Gbit/s']),
    (GOOD_PLAN + ['--dirty-rate', '4_0MB/s'], ['dirty rate', '4_0MB/s']),
    (GOOD_PLAN + ['--downtime-limit', '٣٠٠ms'], ['downtime limit',
                                                 '٣٠٠ms']),
    (GOOD_PLAN + ['--working-set', '٢٥%'], ['working set', '٢٥%']),
    (GOOD_PLAN + ['--link-efficiency', '٠.٥'], ['--link-efficiency',
                                                'ASCII digits']),
    # plan: trace numbers beyond 64 bits, times that go back
    (['plan', '--trace', '{d}/big-int.json'],
     ['big-int.json', '(400 characters)', 'at most 2**64']),
    (['plan', '--trace', '{d}/big-stat.json'],
     ['big-stat.json', '(400 characters)', 'at most 2**64']),
    (['plan', '--trace', '{d}/big-float.json'],
     ['big-float.json', '1e300', 'at most 2**64']),
    (['plan', '--trace', '{d}/backwards.json'],
     ['backwards.json', 'sample 2', 'never decrease']),
    # plan: configuration
    (GOOD_PLAN + ['--config-file', '{d}/lookalike-tls.conf'],
     ['[livemig-ext]', 'require_tls']),
    (GOOD_PLAN + ['--config-file', '{d}/arabic-int.conf'],
     ['max_downtime_ms', 'ASCII digits']),
]

# Rows that need libvirt-python (test:///default is libvirt's built-in
# mock driver: no daemon, one running domain called "test").
BAD_MIGRATE = [
    (_migrate('--json', '{d}/missing-dir/report.json'),
     ['--json', 'missing-dir']),
    (_migrate('--json', '{d}'), ['--json', 'directory']),
    (_migrate('--config-file', '{d}'), ['{d}', 'directory']),
    (_migrate('--config-file', '{d}/binary.conf'), ['binary']),
    (_migrate('--config-file', '{d}/nan-float.conf'),
     ['poll_interval_s', 'nan']),
    (_migrate('--config-file', '{d}/two-refusals.conf'),
     ['[livemig_ext] ladder']),
    (['migrate', 'test', '--from', 'bogus:///', '--to', REFUSED_URI],
     ['source', 'bogus:///']),
    (['migrate', 'absent', '--from', 'test:///default', '--to',
      REFUSED_URI], ['absent', 'test']),
    (_migrate(), ['destination', '127.0.0.1:1']),
    (['migrate', 'test', '--to', REFUSED_URI], ['--from']),
    # --json: never written through a symlink, never over a device, a FIFO
    # or a socket (the report replaces the file whole)
    (_migrate('--json', '/proc/self/exe'),
     ['--json', '/proc/self/exe', 'symlink']),
    (_migrate('--json', '/dev/null'), ['--json', '/dev/null',
                                       'not a regular file']),
    (_migrate('--json', '{d}/fifo'), ['--json', 'fifo',
                                      'not a regular file']),
    (_migrate('--json', '{d}/socket'), ['--json', 'socket',
                                        'not a regular file']),
    (_migrate('--json', '{d}/'), ['--json', 'not a file name']),
    (_migrate('--config-file', '{d}/lookalike-tls.conf'),
     ['[livemig-ext]', 'require_tls']),
    (_migrate('--config-file', '{d}/arabic-int.conf'),
     ['max_downtime_ms', 'ASCII digits']),
]


VERSIONS = ['--libvirt-version', '11.3.0', '--qemu-version', '10.0.2']
# Mistakes that do not weaken security: one warning line each on stderr,
# and the command goes on (exit 0, its usual output).
# (argv with {d} for the temporary directory, words the warning contains)
WARNED = [
    (['flags', '--config-file', '{d}/lookalike-plain.conf'] + VERSIONS,
     ['section [livemig-ext]', 'ladder there is ignored',
      'rename the section [livemig_ext]']),
    (['flags', '--config-file', '{d}/lookalike-no-tls.conf'] + VERSIONS,
     ['section [livemigext]', 'require_tls there is ignored']),
    (['flags', '--config-file', '{d}/default-misplaced.conf'] + VERSIONS,
     ['option max_downtime_ms in [DEFAULT]', 'belongs in [livemig_ext]']),
    (['flags', '--config-file', '{d}/libvirt-misplaced.conf'] + VERSIONS,
     ['option ladder in [libvirt]', 'belongs in [livemig_ext]']),
    (GOOD_PLAN + ['--config-file', '{d}/lookalike-plain.conf'],
     ['plan', 'section [livemig-ext]']),
    (GOOD_PLAN + ['--config-file', '{d}/default-misplaced.conf'],
     ['plan', 'option max_downtime_ms in [DEFAULT]']),
]

# Image properties (set by tenants) and flavor extra specs: never a
# refusal, never a migration made to abort, what they say logged escaped
# and short. (origin, key, value, size GiB, words of the one line saying
# it was ignored, or None where the key applies)
INSTANCE_KEYS = [
    ('image', 'ladder', '', 8.0, ["the ladder is the operator's"]),
    ('image', 'ladder', 'abort', 8.0, ["the ladder is the operator's"]),
    ('image', 'ladder', 'downtime,abort', 8.0,
     ["the ladder is the operator's"]),
    ('image', 'ladder', 'downtime\nWARNING forged', 8.0,
     [r"'downtime\nWARNING forged'", 'unknown rung']),
    ('image', 'permit_post_copy', 'false', 8.0, ['only way']),
    ('image', 'completion_timeout_s_per_gib', '1', 64.0, None),
    ('image', 'completion_timeout_s_per_gib', '5', 64.0, None),
    ('image', 'max_downtime_ms', '100', 4.0, None),
    ('image', 'max_downtime_ms', '٤٠٠', 4.0, ['ASCII digits']),
    ('image', 'max_downtime_ms', '４００', 4.0, ['ASCII digits']),
    ('image', 'max_downtime_ms', '4_00', 4.0, ['ASCII digits']),
    ('image', 'completion_timeout_s_per_gib', '٦٠', 4.0, ['ASCII digits']),
    ('flavor', 'max_downtime_ms', '٤٠٠', 4.0, ['ASCII digits']),
    ('flavor', 'completion_timeout_s_per_gib', '6_0', 4.0,
     ['ASCII digits']),
    ('image', 'warp\r\x1b[2J', '1', 4.0,
     [r"'livemig_ext:warp\r\x1b[2J'", 'unknown key']),
    ('image', 'warp', 'x' * 100000, 4.0, ['(100000 characters)']),
]


def run_main(argv):
    """``nova-livemig-ext argv`` in this process: (status, out, err, exc)."""
    out, err = io.StringIO(), io.StringIO()
    status, exc = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():
        # Library deprecation warnings are not ours to count; the console
        # script (see ConsoleScriptTest) shows none either.
        warnings.simplefilter('ignore')
        try:
            status = cmd.main(argv)
        except SystemExit as e:
            status = e.code
        except BaseException as e:  # a traceback for the user
            exc = e
    return status, out.getvalue(), err.getvalue(), exc


class BadInputTable(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix='bad-inputs-')
        self.addCleanup(shutil.rmtree, self.dir)
        for name, content in FILES.items():
            with open(os.path.join(self.dir, name), 'wb') as f:
                f.write(content)
        os.mkfifo(os.path.join(self.dir, 'fifo'))
        listener = socket.socket(socket.AF_UNIX)
        self.addCleanup(listener.close)
        listener.bind(os.path.join(self.dir, 'socket'))

    def fill(self, items):
        return [item.replace('{d}', self.dir) for item in items]

    def check(self, rows):
        failures = []
        for argv, words in rows:
            argv, words = self.fill(argv), self.fill(words)
            status, out, err, exc = run_main(argv)
            problems = []
            if exc is not None:
                problems.append('raised %r' % exc)
            if not status:
                problems.append('exit status %r' % status)
            lines = err.splitlines()
            if len(lines) != 1:
                problems.append('%d lines on stderr' % len(lines))
            if 'Traceback' in err:
                problems.append('a traceback')
            missing = [w for w in words if w not in err]
            if missing:
                problems.append('stderr does not name %s' % missing)
            if out:
                problems.append('stdout: %r' % out[:200])
            if problems:
                failures.append('%s: %s\n    stderr: %s' % (
                    ' '.join(argv), '; '.join(problems), err.strip()[:300]))
        self.assertEqual([], failures, '\n'.join(failures))
        return len(rows)

    def test_flags_and_plan(self):
        self.assertGreater(self.check(BAD), 80)

    def test_migrate(self):
        if libvirt is None:
            self.skipTest('libvirt-python is not installed')
        self.check(BAD_MIGRATE)

    def test_migrate_json_refused_before_connecting(self):
        # The source URI is unreachable: had the command connected first,
        # the error would name the connection, not the report path.
        if libvirt is None:
            self.skipTest('libvirt-python is not installed')
        status, _, err, exc = run_main([
            'migrate', 'test', '--from', REFUSED_URI, '--to', REFUSED_URI,
            '--json', os.path.join(self.dir, 'no', 'report.json')])
        self.assertIsNone(exc)
        self.assertNotEqual(0, status)
        self.assertIn('--json', err)
        self.assertNotIn('connect', err)

    def test_refused_migration_keeps_an_existing_report(self):
        if libvirt is None:
            self.skipTest('libvirt-python is not installed')
        old = os.path.join(self.dir, 'old.json')
        with open(old, 'w') as f:
            f.write('{"outcome": "completed"}\n')
        new = os.path.join(self.dir, 'new.json')
        for path in (old, new):
            status, _, err, _ = run_main(_migrate('--json', path))
            self.assertNotEqual(0, status)
            self.assertIn('destination', err)
        with open(old) as f:
            self.assertEqual({'outcome': 'completed'}, json.load(f))
        self.assertFalse(os.path.exists(new))


class GoodInputTest(testtools.TestCase):
    """Inputs near the bad ones that must work."""

    def plan_json(self, *extra):
        status, out, err, exc = run_main(GOOD_PLAN[:3] + list(extra)
                                         + ['--json'])
        self.assertIsNone(exc)
        self.assertEqual(0, status, err)
        return json.loads(out)['scenario']

    def test_a_guest_that_dirties_nothing(self):
        for rate in ('0', '0MB/s', '0 Gbit/s'):
            scenario = self.plan_json('--bandwidth', '1Gbit/s',
                                      '--dirty-rate', rate)
            self.assertEqual(0, scenario['dirty_rate_bytes_s'], rate)

    def test_b_is_a_bit_and_B_a_byte(self):
        def bandwidth(text):
            return self.plan_json('--bandwidth', text,
                                  '--link-efficiency', '1')[
                                      'bandwidth_bytes_s']
        self.assertEqual(1e9 / 8, bandwidth('1Gb/s'))
        self.assertEqual(1e9 / 8, bandwidth('1Gbit/s'))
        self.assertEqual(1e9, bandwidth('1GB/s'))
        self.assertEqual(1e6 / 8, bandwidth('1Mb/s') * 1000 / 1000)
        self.assertEqual(8 * bandwidth('100Mb/s'), bandwidth('100MB/s'))
        self.assertEqual(1024 ** 2 * 110, bandwidth('110MiB/s'))

    def test_link_efficiency_applies_to_bit_rates_only(self):
        self.assertEqual(0.5e9 / 8, self.plan_json(
            '--bandwidth', '1Gb/s', '--link-efficiency', '0.5')[
                'bandwidth_bytes_s'])
        self.assertEqual(1e9, self.plan_json(
            '--bandwidth', '1GB/s', '--link-efficiency', '0.5')[
                'bandwidth_bytes_s'])

    def test_dev_null_is_an_empty_configuration(self):
        status, out, err, exc = run_main(GOOD_PLAN + [
            '--config-file', os.devnull])
        self.assertIsNone(exc)
        self.assertEqual((0, ''), (status, err))

    def test_versions_with_fewer_parts(self):
        self.assertEqual(11000000, cmd.parse_version('11'))
        self.assertEqual(10001000, cmd.parse_version('10.1'))
        self.assertEqual(10001002, cmd.parse_version(' 10.1.2 '))

    def test_qemu_version_output_with_suffixes(self):
        self.assertEqual(10001000, cmd.version_in_text('10.1.0-rc1'))
        self.assertEqual(8002002, cmd.version_in_text(
            '8.2.2 (Debian 1:8.2.2+ds-0ubuntu1)'))
        self.assertIsNone(cmd.version_in_text('unknown'))


class UnknownOptionTest(testtools.TestCase):

    def write(self, text):
        fd, path = tempfile.mkstemp(suffix='.conf')
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path

    def test_flags_warns_once_per_unknown_key_and_goes_on(self):
        path = self.write('[livemig_ext]\nrequires_tls = True\n'
                          'permit_post_copy = true\nladdr = abort\n'
                          '[libvirt]\nnot_ours = 1\n')
        status, out, err, exc = run_main([
            'flags', '--config-file', path, '--libvirt-version', '11.3.0',
            '--qemu-version', '10.0.2'])
        self.assertIsNone(exc)
        self.assertEqual(0, status)
        self.assertEqual([
            'nova-livemig-ext: warning: unknown option [livemig_ext] laddr '
            'in %s is ignored (did you mean ladder?)' % path,
            'nova-livemig-ext: warning: unknown option [livemig_ext] '
            'requires_tls in %s is ignored (did you mean require_tls?)'
            % path], err.splitlines())
        self.assertIn('VIR_MIGRATE_POSTCOPY', out)

    def test_plan_warns_too(self):
        path = self.write('[livemig_ext]\nrequires_tls = True\n')
        status, out, err, _ = run_main(GOOD_PLAN + ['--config-file', path])
        self.assertEqual(0, status)
        self.assertIn('requires_tls', err)
        self.assertIn('plan', err.split(':')[0])

    def test_known_and_deprecated_keys_are_quiet(self):
        from oslo_config import cfg

        from nova_livemig_ext import conf as livemig_conf
        path = self.write('[livemig_ext]\nrequire_tls = True\n'
                          'poll_interval_s = 1\n[DEFAULT]\ndebug = true\n')
        conf = cfg.ConfigOpts()
        livemig_conf.register_opts(conf)
        conf(args=['--config-file', path], default_config_files=[])
        self.assertEqual([], livemig_conf.unknown_options(conf))

    def test_config_dir_is_read_too(self):
        from oslo_config import cfg

        from nova_livemig_ext import conf as livemig_conf
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        with open(os.path.join(directory, '50-typo.conf'), 'w') as f:
            f.write('[livemig_ext]\nmax_downtime = 400\n')
        conf = cfg.ConfigOpts()
        livemig_conf.register_opts(conf)
        conf(args=['--config-dir', directory], default_config_files=[])
        problems = livemig_conf.unknown_options(conf)
        self.assertEqual(1, len(problems))
        self.assertIn('max_downtime in %s' % directory, problems[0])
        self.assertIn('did you mean max_downtime_ms?', problems[0])

    def test_no_files_no_problems(self):
        from oslo_config import cfg

        from nova_livemig_ext import conf as livemig_conf
        conf = cfg.ConfigOpts()
        livemig_conf.register_opts(conf)
        self.assertEqual([], livemig_conf.unknown_options(conf))


class WarnedInputTable(testtools.TestCase):
    """The rows of WARNED: named, then the command's usual answer."""

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix='warned-inputs-')
        self.addCleanup(shutil.rmtree, self.dir)
        for name, content in FILES.items():
            with open(os.path.join(self.dir, name), 'wb') as f:
                f.write(content)

    def fill(self, items):
        return [item.replace('{d}', self.dir) for item in items]

    def test_flags_and_plan(self):
        failures = []
        for argv, words in WARNED:
            argv, words = self.fill(argv), self.fill(words)
            status, out, err, exc = run_main(argv)
            problems = []
            if exc is not None or status != 0:
                problems.append('exit %r, raised %r' % (status, exc))
            lines = err.splitlines()
            if len(lines) != 1:
                problems.append('%d lines on stderr' % len(lines))
            missing = [w for w in words if w not in err]
            if missing:
                problems.append('stderr does not name %s' % missing)
            if not out:
                problems.append('nothing on stdout')
            if problems:
                failures.append('%s: %s\n    stderr: %s' % (
                    ' '.join(argv), '; '.join(problems), err.strip()[:300]))
        self.assertEqual([], failures, '\n'.join(failures))


class InstanceKeyTable(testtools.TestCase):
    """The rows of INSTANCE_KEYS, on a host whose ladder uses post-copy."""

    def test_rows(self):
        from nova_livemig_ext import instance_policy
        from nova_livemig_ext import job
        from nova_livemig_ext import policy

        host = policy.MigrationPolicy().replace(
            permit_post_copy=True,
            ladder=('downtime', 'auto_converge', 'postcopy', 'abort'))
        failures = []
        for origin, key, value, size, words in INSTANCE_KEYS:
            name = 'livemig_ext:%s' % key
            specs, sysmeta = (({name: value}, {}) if origin == 'flavor'
                              else ({}, {'image_' + name: value}))
            resolved = instance_policy.resolve(host, specs, sysmeta, size)
            got, problems = resolved.policy, []
            if words is None and resolved.ignored:
                problems.append('ignored: %s' % resolved.ignored)
            if words is not None:
                if len(resolved.ignored) != 1:
                    problems.append('%d lines' % len(resolved.ignored))
                missing = [w for w in words
                           if w not in ''.join(resolved.ignored)]
                if missing:
                    problems.append('does not name %s' % missing)
            for line in resolved.ignored + resolved.notes:
                if not line.isprintable() or len(line) > 600:
                    problems.append('unsafe line %r' % line[:200])
            if origin == 'image' and (
                    got.ladder != host.ladder
                    or got.max_downtime_ms != host.max_downtime_ms
                    or got.permit_post_copy != host.permit_post_copy
                    or job.deadline_s(got, size) != job.deadline_s(host,
                                                                   size)
                    or got.deadline_floor_s < host.deadline_floor_s):
                problems.append('less room to complete: %s' % (got,))
            if problems:
                failures.append('%s %r = %r: %s' % (
                    origin, key, value[:40], '; '.join(problems)))
        self.assertEqual([], failures, '\n'.join(failures))


class ConsoleScriptTest(testtools.TestCase):
    """Rows of the table through the installed ``nova-livemig-ext``."""

    def test_fresh_process(self):
        script = os.path.join(os.path.dirname(sys.executable),
                              'nova-livemig-ext')
        if not os.path.exists(script):
            self.skipTest('nova-livemig-ext is not installed here')
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        binary = os.path.join(directory, 'binary.conf')
        with open(binary, 'wb') as f:
            f.write(FILES['binary.conf'])
        trace = os.path.join(directory, 'nan.json')
        with open(trace, 'wb') as f:
            f.write(FILES['nan.json'])
        rows = [
            ['flags', '--config-file', directory],
            ['flags', '--config-file', binary, '--libvirt-version',
             '10.1.0-rc1'],
            ['plan', '--memory', '1e400GiB', '--bandwidth', '1Gbit/s'],
            ['plan', '--trace', trace],
            ['plan', '--memory', '1GiB', '--bandwidth', '1Gbit/s',
             '--link-efficiency', 'x'],
        ]
        if libvirt is not None:
            rows.append(_migrate('--json', os.path.join(directory, 'x', 'r')))
        for argv in rows:
            proc = subprocess.run([script] + argv, capture_output=True,
                                  text=True, timeout=120)
            self.assertNotEqual(0, proc.returncode, argv)
            self.assertEqual(1, len(proc.stderr.splitlines()),
                             (argv, proc.stderr))
            self.assertNotIn('Traceback', proc.stderr)
            self.assertEqual('', proc.stdout)
