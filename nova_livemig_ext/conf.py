"""Options of the ``[livemig_ext]`` group.

Every option is read once, when nova-compute starts (``init_host``), and
turned into a frozen :class:`nova_livemig_ext.policy.MigrationPolicy`; a bad
combination stops nova-compute there with a message naming the options.

Options are registered on whatever ``ConfigOpts`` object the caller hands in
(Nova's ``nova.conf.CONF`` inside nova-compute, a private one in the command
line tools), so importing this module has no side effect.
"""

import difflib
import glob
import math
import os

from oslo_config import cfg
from oslo_config import types

GROUP_NAME = 'livemig_ext'

RUNGS = ('downtime', 'auto_converge', 'postcopy', 'pause', 'abort')
COMPRESSION_METHODS = ('none', 'xbzrle', 'zlib', 'zstd')


def ascii_number_problem(value):
    """Why ``value`` (as written) is not a number in ASCII, or None.

    Python's ``int()`` and ``float()``, and so oslo.config's types, read
    ``4_00`` as 400 and so the digits of every script: Arabic-Indic
    ``٤٠٠``, fullwidth ``４００``. A value nobody can read as the number it
    becomes is refused instead.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text.isascii():
        return 'write numbers in ASCII digits (0-9)'
    if '_' in text:
        return 'write numbers without "_"'
    return None


class AsciiInteger(types.Integer):
    """oslo.config's Integer that reads ASCII digits only."""

    def __call__(self, value):
        problem = ascii_number_problem(value)
        if problem:
            raise ValueError(problem)
        return super().__call__(value)


class FiniteFloat(types.Float):
    """oslo.config's Float without NaN and the infinities, in ASCII only.

    ``float('nan')`` passes any ``min``/``max`` check (every comparison with
    NaN is false), so ``poll_interval_s = nan`` would reach the monitor.
    """

    def __call__(self, value):
        problem = ascii_number_problem(value)
        if problem:
            raise ValueError(problem)
        number = super().__call__(value)
        if not math.isfinite(number):
            raise ValueError('%s is not a finite number' % value)
        return number


def finite_float_opt(name, min, max, **kwargs):
    """A ``FloatOpt`` (as the docs and the sample config list it) that also
    refuses NaN and the infinities."""
    opt = cfg.FloatOpt(name, min=min, max=max, **kwargs)
    opt.type = FiniteFloat(min=min, max=max)
    return opt


livemig_ext_group = cfg.OptGroup(
    GROUP_NAME,
    title='Live migration convergence options',
    help="""
Options of nova-livemig-ext, the libvirt driver extension that watches every
live migration, predicts whether it converges and escalates along a ladder of
rungs so that each migration ends within its deadline with the guest intact.

Enable it in nova.conf with::

    [DEFAULT]
    compute_driver = livemig_ext.LibvirtLiveMigExtDriver
""")

mode_opts = [
    cfg.StrOpt('mode',
               default='controller',
               choices=[
                   ('controller', 'Predict convergence, detect stalls and '
                    'escalate along ``ladder`` within the deadline.'),
                   ('upstream', 'Make exactly the decisions upstream Nova 34 '
                    'makes from the ``[libvirt] live_migration_*`` options '
                    '(downtime steps, completion timeout and timeout '
                    'action), for side-by-side comparison.'),
               ],
               help="""
How running migrations are steered.

Possible values:

* ``controller`` (default): the convergence controller of this extension.
* ``upstream``: Nova 34's own wall-clock algorithm, driven by
  ``[libvirt] live_migration_downtime``, ``live_migration_downtime_steps``,
  ``live_migration_downtime_delay``, ``live_migration_completion_timeout`` and
  ``live_migration_timeout_action``. Every ``[livemig_ext]`` option that
  steers a running migration is then ignored.

Related options:

* ``ladder``
"""),
    cfg.StrOpt('copy_mode',
               default='live',
               choices=[
                   ('live', 'Pre-copy while the guest runs '
                    '(``VIR_MIGRATE_LIVE``).'),
                   ('paused', 'Pause the guest for the whole copy. Its '
                    'downtime is memory size divided by bandwidth: about '
                    '300 s for 32 GiB over 1 Gbit/s.'),
               ],
               help="""
Whether the guest keeps running while its memory is copied.

``VIR_MIGRATE_LIVE`` is never dropped unless this option says ``paused`` by
name.

Possible values:

* ``live`` (default)
* ``paused``: only for guests that may be unreachable for the whole copy.
"""),
]

transport_opts = [
    cfg.BoolOpt('peer_to_peer',
                default=True,
                help="""
Let the source libvirtd connect to the destination itself
(``VIR_MIGRATE_PEER2PEER``), as Nova always does.

Possible values:

* True (default): the only value accepted.
* False: refused at start. Nova and the ``migrate`` command start the
  migration with ``virDomainMigrateToURI3``, which without this flag asks for
  a direct migration, and libvirt's QEMU driver refuses direct migration.

Related options:

* ``tunnelled``
"""),
    cfg.BoolOpt('tunnelled',
                help="""
Carry the migration stream inside the libvirtd connection
(``VIR_MIGRATE_TUNNELLED``).

Tunnelling costs CPU and bandwidth and rules out post-copy, parallel
connections and native TLS.

Possible values:

* unset (default): take ``[libvirt] live_migration_tunnelled``.
* True / False: must then agree with ``[libvirt] live_migration_tunnelled``,
  which Nova's own pre-checks read.

Related options:

* ``native_tls``, ``parallel_connections``, ``permit_post_copy``
"""),
    cfg.BoolOpt('native_tls',
                help="""
Encrypt the migration stream with QEMU's native TLS (``VIR_MIGRATE_TLS``).

Possible values:

* unset (default): take ``[libvirt] live_migration_with_native_tls``.
* True / False: must then agree with
  ``[libvirt] live_migration_with_native_tls``.

Related options:

* ``require_tls``, ``tunnelled``, ``zero_copy``
"""),
    cfg.BoolOpt('require_tls',
                default=False,
                help="""
Refuse to start nova-compute unless migrations are encrypted with native TLS.

A guard for deployments whose migration network is not trusted: with it set,
a configuration that would send guest memory in clear text is refused at
start instead of being used.

Possible values:

* False (default)
* True: ``native_tls`` (or ``[libvirt] live_migration_with_native_tls``)
  must be enabled.

Related options:

* ``native_tls``
"""),
    cfg.IntOpt('parallel_connections',
               min=1,
               max=255,
               help="""
Number of parallel connections for the memory stream (``VIR_MIGRATE_PARALLEL``
with ``parallel.connections``); 1 means a single stream.

Possible values:

* unset (default): take ``[libvirt] live_migration_parallel_connections``.
* 1 to 255.

Related options:

* ``compression``, ``zero_copy``, ``permit_post_copy`` (both together need
  QEMU 10.1 or later), ``tunnelled`` (not together)
"""),
    cfg.StrOpt('compression',
               default='none',
               choices=COMPRESSION_METHODS,
               help="""
Compression of the memory stream (``VIR_MIGRATE_COMPRESSED``).

Possible values:

* ``none`` (default)
* ``xbzrle``: sends deltas of re-dirtied pages; single stream only.
* ``zlib``, ``zstd``: multifd compression; need ``parallel_connections`` > 1.

Related options:

* ``compression_level``, ``parallel_connections``
"""),
    cfg.IntOpt('compression_level',
               min=0,
               max=20,
               help="""
Compression level for ``zlib`` (0 to 9) or ``zstd`` (0 to 20).

Possible values:

* unset (default): QEMU's default level.
* 0 to 9 for zlib, 0 to 20 for zstd. Not valid with ``xbzrle`` or ``none``.

Related options:

* ``compression``
"""),
    cfg.BoolOpt('zero_copy',
                default=False,
                help="""
Send memory pages without copying them into socket buffers
(``VIR_MIGRATE_ZEROCOPY``). Saves source CPU on fast links.

Possible values:

* False (default)
* True: needs ``parallel_connections`` > 1, no compression and no TLS.

Related options:

* ``parallel_connections``, ``compression``, ``native_tls``
"""),
]

limit_opts = [
    cfg.IntOpt('bandwidth_mib_s',
               min=0,
               max=1048576,
               help="""
Maximum bandwidth of the pre-copy phase, in MiB/s.

Possible values:

* unset (default): take ``[libvirt] live_migration_bandwidth`` (whose own
  default, 0, means no limit).
* 0: no limit; the link decides.
* 1 to 1048576 (1 TiB/s). When ``[libvirt] live_migration_bandwidth`` is
  also set, both must agree.

Related options:

* ``postcopy_bandwidth_mib_s``
"""),
    cfg.IntOpt('postcopy_bandwidth_mib_s',
               default=0,
               min=0,
               max=1048576,
               help="""
Maximum bandwidth after the switch to post-copy, in MiB/s.

Every page the guest touches on the destination waits behind this limit, so a
low value lengthens the guest's slowdown. Measured in the lab: 15 MiB/s here
turned a 0.3 s pause into 10.5 s of page-fault waits.

Possible values:

* 0 (default): no limit.
* 1 to 1048576.

Related options:

* ``permit_post_copy``
"""),
    cfg.IntOpt('initial_downtime_ms',
               min=100,
               max=60000,
               help="""
Maximum downtime QEMU may take for the final switchover when the migration
starts, in milliseconds.

Possible values:

* unset (default): 300 (QEMU's own default), or ``max_downtime_ms`` when
  that is lower.
* 100 to 60000; at most ``max_downtime_ms``.

Related options:

* ``max_downtime_ms``
"""),
    cfg.IntOpt('max_downtime_ms',
               min=100,
               max=60000,
               help="""
Ceiling of the switchover downtime, in milliseconds. The ``downtime`` rung
raises the limit in steps up to this value and never above it.

Possible values:

* unset (default): take ``[libvirt] live_migration_downtime`` (500 unless
  set there: the final value of Nova's own downtime steps).
* 100 to 60000; at least ``initial_downtime_ms``. When ``[libvirt]
  live_migration_downtime`` is also set, both must agree.

Related options:

* ``initial_downtime_ms``, ``ladder``
"""),
    finite_float_opt('max_guest_stop_s',
                     min=0.1,
                     max=3600.0,
                     help="""
The longest, in seconds, the guest may be stopped at once by any remedy: the
final stop-and-copy, a forced pause (``pause``), the page-fault stall after a
switch to post-copy, or one stop of QEMU's throttle. With it set the
controller never enters a rung predicted to stop the guest longer, and among
the rungs within it takes the one predicted to cost the guest the least work
(throttle x time, downtime and post-copy stall, in seconds of its vCPU).
A rung left out is noted in the log with its prediction and priced again at
the next escalation, so a pause that did not fit may fit once the working
set has shrunk. When nothing within the ceiling can finish the migration it
is aborted at the deadline, or at once when QEMU's throttle is spent.

Possible values:

* unset (default): no ceiling; the rung predicted to stop the guest the
  shortest wins (anything within ``max_downtime_ms`` counts as that much),
  then the least work lost.
* 0.1 to 3600; at least ``max_downtime_ms``. With ``ladder`` unset, setting
  it also adds ``pause`` before ``abort``: a pause no longer than this is a
  remedy the controller may choose.

Related options:

* ``ladder``, ``max_downtime_ms``, ``switchover_timeout_s``
"""),
    cfg.IntOpt('downtime_steps',
               min=1,
               max=100,
               help="""
Number of steps the ``downtime`` rung takes from ``initial_downtime_ms`` to
``max_downtime_ms``.

Possible values:

* unset (default): ``[libvirt] live_migration_downtime_steps`` when that is
  set, otherwise 3.
* 1 to 100. When ``[libvirt] live_migration_downtime_steps`` is also set,
  both must agree.

Related options:

* ``initial_downtime_ms``, ``max_downtime_ms``
"""),
    cfg.IntOpt('auto_converge_initial_pct',
               default=50,
               min=1,
               max=99,
               help="""
Guest CPU throttle applied when auto-converge first acts, in percent
(``auto_converge.initial``).

QEMU throttles only a guest that dirties more than half of what it sends in a
pass; a guest that must slow to 1 - bandwidth / dirty rate (60 % for one
writing 2.5 times faster than the link) reaches that in one or two steps
from 50 % + 20 %, where QEMU's own 20 % + 10 % needs five passes, each
longer than the last: in the lab the shipped defaults then ran into their
deadline.

Possible values:

* 1 to 99. Default 50 (QEMU's default is 20).

Related options:

* ``auto_converge_increment_pct``, ``ladder``
"""),
    cfg.IntOpt('auto_converge_increment_pct',
               default=20,
               min=1,
               max=100,
               help="""
Throttle added by auto-converge at each pass that still does not converge, in
percent (``auto_converge.increment``).

Possible values:

* 1 to 100. Default 20 (QEMU's default is 10).

Related options:

* ``auto_converge_initial_pct``
"""),
    cfg.BoolOpt('permit_post_copy',
                help="""
Arm post-copy (``VIR_MIGRATE_POSTCOPY``) at the start of every migration so
the ``postcopy`` rung can switch to it.

After the switch the guest runs on the destination and fetches missing pages
over the network: a broken link then loses the guest, so enable it only on a
reliable migration network. Needs userfaultfd on the destination host.

Possible values:

* unset (default): take ``[libvirt] live_migration_permit_post_copy``
  (False unless set there).
* False
* True: required when ``ladder`` contains ``postcopy``. When ``[libvirt]
  live_migration_permit_post_copy`` is also set, both must agree.

Related options:

* ``ladder``, ``postcopy_bandwidth_mib_s``, ``tunnelled`` (not together)
"""),
]

controller_opts = [
    cfg.ListOpt('ladder',
                help="""
Escalation ladder: the rungs the controller may use when a migration does
not converge. Each rung gets its chance before another is tried. At each
escalation the controller enters the rung not tried yet that the guest is
predicted to pay least for (its longest unavailability, counting anything
within ``max_downtime_ms`` as that much, then the work it loses; with
``max_guest_stop_s`` set, the least work lost among the rungs within that
ceiling); the order listed here breaks ties.

Possible values (each at most once, in the order preferred on a tie):

* ``downtime``: raise the downtime limit step by step up to
  ``max_downtime_ms``.
* ``auto_converge``: let QEMU throttle the guest's vCPUs
  (``VIR_MIGRATE_AUTO_CONVERGE``, armed at start when present).
* ``postcopy``: switch to post-copy at a local minimum of remaining memory;
  needs ``permit_post_copy``.
* ``pause``: suspend the guest so the copy completes (a forced switchover
  whose downtime is remaining memory over bandwidth).
* ``abort``: cancel the job; the guest keeps running on the source.

Unset (the default), the ladder is ``downtime,auto_converge,abort``, built
from Nova's options where they are set:

* ``auto_converge`` is left out when ``[libvirt]
  live_migration_permit_auto_converge = False`` is set;
* ``postcopy`` comes before ``abort`` when post-copy is permitted
  (``permit_post_copy`` or ``[libvirt] live_migration_permit_post_copy``);
* ``pause`` comes before ``abort`` when ``max_guest_stop_s`` is set, or when
  ``[libvirt] live_migration_timeout_action = force_complete`` is set and
  post-copy is not permitted (what Nova's force-complete does then).

A ladder set here must agree with those ``[libvirt]`` options when they are
set, or nova-compute refuses to start. When the deadline passes and no
permitted rung is left the migration is aborted whatever the ladder says.

Related options:

* ``permit_post_copy``, ``max_downtime_ms``, ``max_guest_stop_s``,
  ``completion_timeout_s_per_gib``
"""),
    cfg.IntOpt('stall_window_s',
               default=60,
               min=5,
               max=3600,
               help="""
Longest time, in seconds, a migration may make no progress (its remaining
memory at pass boundaries does not shrink) before the controller calls it
stalled, whatever the pass length.

Possible values:

* 5 to 3600. Default 60.

Related options:

* ``stall_passes``
"""),
    cfg.IntOpt('stall_passes',
               default=2,
               min=1,
               max=20,
               help="""
Number of complete pre-copy passes, after the first full pass, without a new
minimum of remaining memory after which the controller calls the migration
stalled.

Possible values:

* 1 to 20. Default 2.

Related options:

* ``stall_window_s``
"""),
    cfg.IntOpt('completion_timeout_s_per_gib',
               min=1,
               max=86400,
               help="""
Operator's cap on a migration's deadline, in seconds per GiB of guest memory
(plus disk for a block migration). The deadline itself follows the link (see
``deadline_link_multiple``); when this is set, the deadline is never longer
than this times the size (nor than ``completion_timeout_max_s``).

Possible values:

* unset (default): ``[libvirt] live_migration_completion_timeout`` when that
  is set (same unit; its 0, "no timeout", is refused: the controller always
  works to a deadline), otherwise no per-GiB cap.
* 1 to 86400. When ``[libvirt] live_migration_completion_timeout`` is also
  set, both must agree.

Related options:

* ``deadline_link_multiple``, ``deadline_floor_s``,
  ``completion_timeout_max_s``
"""),
    cfg.IntOpt('completion_timeout_max_s',
               default=14400,
               min=10,
               max=604800,
               help="""
Absolute cap of a migration's deadline, in seconds: the longest any one
migration may hold its two hosts and the link.

Possible values:

* 10 to 604800. Default 14400 (4 h). With the deadline following the link
  (``deadline_link_multiple``) it is reached only when one pass of memory
  takes over 30 minutes (a guest above about 190 GiB at 1 Gbit/s); a lower
  cap aborts such guests while they still make progress.

Related options:

* ``deadline_link_multiple``, ``completion_timeout_s_per_gib``
"""),
    finite_float_opt('deadline_link_multiple',
                     min=1.0,
                     max=1000.0,
                     default=8.0,
                     help="""
The deadline of a migration follows its link: this many times the data to
move (guest memory, plus disks for a block migration) divided by the
bandwidth the migration measures, at least ``deadline_floor_s``, at most
``completion_timeout_max_s`` (and ``completion_timeout_s_per_gib`` times the
size, when that is set).

One pass over the whole memory takes data / bandwidth. Eight of them hold the
first pass, the passes needed to see a plateau, a pass at a higher downtime,
a few passes of throttling and the post-copy transfer of a guest that writes
most of its memory; a guest that converges by itself with a dirty rate up to
87 % of the bandwidth (1 / (1 - 0.875) = 8) finishes without help. When
several migrations share the link, each one's deadline follows its share. The
deadline is settled when the first pass ends and from then on only moves
later. A migration predicted to complete before its deadline is never
escalated.

Possible values:

* 1 to 1000. Default 8.

Related options:

* ``deadline_floor_s``, ``completion_timeout_s_per_gib``,
  ``completion_timeout_max_s``
"""),
    cfg.IntOpt('deadline_floor_s',
               default=120,
               min=10,
               max=86400,
               help="""
The shortest deadline a migration gets, in seconds, however fast its link: a
small guest on a fast link still gets time for one stall window and a forced
switchover. ``completion_timeout_max_s`` (and ``completion_timeout_s_per_gib``
when set) still caps it: a cap below the floor wins.

Possible values:

* 10 to 86400. Default 120.

Related options:

* ``deadline_link_multiple``, ``stall_window_s``, ``switchover_timeout_s``
"""),
    cfg.IntOpt('switchover_timeout_s',
               default=60,
               min=1,
               max=3600,
               help="""
After a forced switchover (``pause``), the time in seconds to wait for the
migration to complete before it is aborted and the guest resumed on the
source. Never applies after the switch to post-copy: aborting then would lose
the guest.

Possible values:

* 1 to 3600. Default 60.
"""),
    cfg.IntOpt('postcopy_recovery_timeout_s',
               default=1800,
               min=10,
               max=86400,
               help="""
How long, in seconds, to keep trying to resume a post-copy migration whose
migration stream failed (QEMU's state ``postcopy-paused``) before giving up
and asking for an operator.

After the switch to post-copy the newest memory of the guest is on the
destination and the rest on the source: neither half can run alone, so
nothing is ever destroyed or resumed. While the stream is broken the monitor
retries the migration with ``VIR_MIGRATE_POSTCOPY_RESUME`` (same flags and
parameters), with backoff. When this time runs out both halves are left
untouched, the migration record is set to ``error`` and the instance to
ERROR, and the log names the command that resumes it by hand
(``nova-livemig-ext recover``). Both halves stay recoverable after that.

Possible values:

* 10 to 86400. Default 1800 (30 min): a guest whose migration link is down
  is unreachable in any case; a longer wait costs only a watching thread,
  a shorter one only alerts the operator sooner.

Related options:

* ``permit_post_copy``, ``ladder``: post-copy must be permitted and on the
  ladder (or used by force-complete) for this to matter.
"""),
    cfg.StrOpt('postcopy_resume',
               default='auto',
               choices=[
                   ('auto', 'resume a broken post-copy unless libvirt '
                            'reports a release whose resume crashes the '
                            'destination daemon (11.2.x and 11.3.x); then '
                            'only wait for QEMU to heal the stream'),
                   ('patched', 'resume on every release: the libvirt of '
                               'every compute host carries the fix of '
                               'libvirt 11.4.0 for the resume crash'),
                   ('never', 'never resume automatically; only wait, then '
                             'leave both halves to the operator'),
               ],
               help="""
Whether the monitor may send ``VIR_MIGRATE_POSTCOPY_RESUME`` to resume a
post-copy migration whose stream broke.

libvirt 11.2.0 to 11.3.x crash the destination's libvirtd on every post-copy
resume (fixed in 11.4.0: "qemu: Fix virtqemud crash when resuming failed
post-copy migration"). A crashed destination daemon cannot resume anything,
so on those releases ``auto`` never sends a resume: it waits for QEMU's own
stream to heal (a short outage) and then leaves both halves for
``nova-livemig-ext recover``. libvirt reports the same version number with or
without a backported fix, so only the operator can tell a patched build
apart: set ``patched`` after checking that the libvirtd of every compute host
carries the fix (the project's lab builds such a libvirt:
``tools/libvirt/build-libvirt.sh``). When unsure, keep ``auto``: it costs a
longer stall after a link fault, never the guest.

Possible values:

* ``auto`` (default), ``patched``, ``never``.

Related options:

* ``postcopy_recovery_timeout_s``: how long resumes are tried (or, when they
  are withheld, how long the monitor waits) before asking for an operator.
"""),
    cfg.StrOpt('postcopy_give_back_address',
               default='tcp:127.0.0.1',
               regex=r'^(off|tcp:[^\s]+|unix:/[^\s]*)$',
               help="""
Give the guest back to the source when the destination failed to load it at
the switch to post-copy and never ran it; where the stand-in destination
that does it listens, as the source's QEMU reaches it.

If the migration stream breaks within a fraction of a second of the switch,
the destination's QEMU may fail while loading the device state and exit;
libvirt then shuts the incoming domain off as *failed*. The source QEMU still
holds every page of the guest but stays paused in post-copy: QEMU refuses to
cancel the migration or to run it. nova-compute reads the destination's
libvirt (read-only, see ``destination_libvirt_uri``); only when it says
*shut off (failed)*, the source QEMU has served no page to the destination
and QEMU does not discard sent pages (``release-ram`` off), the source QEMU
is resumed into a stand-in destination that nova-compute opens at this
address, which reports every page as received and then ends the migration
with an error. The source then runs the guest again, the migration is
rolled back in Nova (instance ERROR with a fault, as for any failed
migration on Nova 32.2 and later) and nothing of the guest is lost. libvirt
on the source keeps the failed migration job until the guest is hard
rebooted: until then it refuses a new migration.

The same is done when the destination's QEMU stays alive but stuck while
loading the device state: libvirt there still shows the incoming guest
*paused (migrating)*, never started, for 10 s while the source QEMU's
stream is broken (``postcopy-paused``, not merely cut off) with no page
served. nova-compute then first stops the
destination's QEMU (libvirt's destroy, over a writable connection to the
same URI) and gives the guest back only once the destination runs no QEMU
for it.

Possible values:

* ``tcp:HOST`` (default ``tcp:127.0.0.1``): a TCP port chosen at the time on
  HOST, which the source's QEMU must reach (its own loopback when QEMU and
  nova-compute share the host's network).
* ``unix:/DIRECTORY``: a socket of its own in DIRECTORY, for a QEMU in
  another network namespace that sees the same directory.
* ``off``: never give a guest back; both halves are kept, the migration
  waits ``postcopy_recovery_timeout_s`` and is then left to the operator
  (``nova-livemig-ext recover`` gives the guest back by hand).

Related options:

* ``destination_libvirt_uri``: where the destination's state is read.
* ``postcopy_recovery_timeout_s``: how long a broken post-copy is resumed or
  waited for before the operator is asked.
"""),
    cfg.StrOpt('destination_libvirt_uri',
               default=None,
               regex=r'^[^%]*%s[^%]*$',
               help="""
The libvirt URI this nova-compute reads a destination's libvirt with, as a
template: ``%s`` is replaced by the destination's host name as Nova knows
it (for example ``qemu+tls://%s/system``).

The destination is only read, never changed: after a failure in post-copy
(whether it still holds the guest, or failed before running it, see
``postcopy_give_back_address``) and when nova-compute restarts after an interrupted
migration. Unset, it is the URI the migration itself was sent to (the
source's libvirtd dials it), which nova-compute can reach wherever it runs
in the same network as libvirtd. Set it where it cannot: nova-compute in
another network namespace or container than libvirtd, or a migration
network this process is not on. A destination that cannot be read is only
"not in view": nothing is given back and recovery goes on from the source's
view alone.

Possible values:

* Unset (default): the migration's own URI.
* A libvirt URI with exactly one ``%s`` and no other ``%``.

Related options:

* ``postcopy_give_back_address``, ``postcopy_recovery_timeout_s``: what is
  done with
  what the destination says.
* ``[libvirt] live_migration_uri``, ``live_migration_scheme``,
  ``live_migration_inbound_addr``: Nova's, for the migration's own URI.
"""),
    finite_float_opt('poll_interval_s',
                     default=0.5,
                     min=0.1,
                     max=10.0,
                     help="""
How often the running migration's job statistics are read, in seconds.

Possible values:

* 0.1 to 10. Default 0.5 (as Nova's own monitor).
"""),
]

instance_opts = [
    cfg.BoolOpt('ignore_image_properties',
                default=False,
                help="""
Ignore every ``livemig_ext:*`` image property.

Image properties are set by whoever uploads the image (often a tenant). They
can never make a migration abort that would otherwise complete: an image
may lower the starting downtime limit and lengthen the deadline, never
change the ladder, raise the ceiling, shorten the deadline or take away a
rung of the ladder (see the per-instance keys in the documentation). With
this option they have no effect at all and only flavor extra specs (set by
operators) change a migration.

Possible values:

* False (default): honour what image properties may change; log and
  ignore the rest.
* True: log and ignore them all.

Related options:

* ``ladder``, ``completion_timeout_s_per_gib``, ``max_downtime_ms``: what an
  image can never take away or shorten.
"""),
    cfg.IntOpt('image_deadline_floor_s',
               default=300,
               min=10,
               max=86400,
               deprecated_for_removal=True,
               deprecated_reason='image deadlines can only be lengthened',
               help="""
Deprecated: it no longer has any effect. An image property
``livemig_ext:completion_timeout_s_per_gib`` can only lengthen a migration's
deadline now, never shorten it, so no floor is needed. Kept so that
configurations that set it still load.

Possible values:

* 10 to 86400. Default 300.

Related options:

* ``completion_timeout_s_per_gib``, ``completion_timeout_max_s``,
  ``ignore_image_properties``
"""),
]

ALL_OPTS = (mode_opts + transport_opts + limit_opts + controller_opts
            + instance_opts)

# Integer options read ASCII digits only (see ascii_number_problem); they
# stay IntOpts for the documentation and the sample file.
for _opt in ALL_OPTS:
    if isinstance(_opt, cfg.IntOpt):
        _opt.type = AsciiInteger(min=_opt.type.min, max=_opt.type.max)
del _opt


def register_opts(conf):
    """Register the ``[livemig_ext]`` group and its options on ``conf``."""
    conf.register_group(livemig_ext_group)
    conf.register_opts(ALL_OPTS, group=livemig_ext_group)


def list_opts():
    """Options for ``oslo-config-generator --namespace nova_livemig_ext``."""
    return [(livemig_ext_group, ALL_OPTS)]


def _config_files(conf):
    """The files ``conf`` was loaded from (--config-file, --config-dir)."""
    def value(name):
        try:
            return conf[name]
        except cfg.NoSuchOptError:
            return None

    files = list(value('config_file') or [])
    dirs = value('config_dir') or []
    for directory in [dirs] if isinstance(dirs, str) else dirs:
        files += sorted(glob.glob(os.path.join(
            os.path.expanduser(directory), '*.conf')))
    return files


def _known_names(conf):
    names = set()
    try:
        names.update(conf[GROUP_NAME])
    except cfg.NoSuchOptError:
        pass
    for opt in ALL_OPTS:
        names.update((opt.name, opt.dest))
        for old in opt.deprecated_opts:
            if old.group in (None, GROUP_NAME) and old.name:
                names.add(old.name)
    return names


def _parsed_files(conf):
    """``[(path, {section: {key: [raw values]}})]`` of ``conf``'s files.

    Files that cannot be parsed are skipped (loading them has already
    failed).
    """
    parsed = []
    for path in _config_files(conf):
        sections = {}
        try:
            cfg.ConfigParser(path, sections).parse()
        except Exception:  # noqa: BLE001 - loading reports these
            continue
        parsed.append((path, sections))
    return parsed


def file_values(conf, group=GROUP_NAME):
    """``[(path, section, key, raw value)]`` of ``group`` in ``conf``'s files.

    Sections are matched as oslo.config matches them (in any case).  The
    last value wins where a key repeats, as in oslo.config.
    """
    found = []
    for path, sections in _parsed_files(conf):
        for section, keys in sorted(sections.items()):
            if section.lower() != group.lower():
                continue
            for key, values in sorted(keys.items()):
                found.append((path, section, key, values[-1]))
    return found


# Options whose loss sends guest memory in clear text: written where they
# are not read, they make nova-compute refuse to start.
TLS_OPTIONS = ('require_tls', 'native_tls')
# Sections an option of ours is sometimes put under by mistake.
_NOT_OUR_SECTIONS = ('DEFAULT', 'libvirt')
# How far a section's name may be from ours to be taken for a typo of it.
_LOOKALIKE_DISTANCE = 2


def _edit_distance(a, b):
    """Levenshtein distance: insertions, deletions, substitutions."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _oslo_group(section):
    """The group oslo.config reads ``[section]`` as: it lower-cases every
    section name but ``DEFAULT``."""
    return section if section == 'DEFAULT' else section.lower()


def is_lookalike_section(section):
    """Does ``[section]`` look like ``[livemig_ext]`` without being read as
    it?

    ``[livemig-ext]``, ``[livemig_ext ]``, ``[livemigext]``: in lower case,
    with ``-`` as ``_`` and no blanks, at most two edits away from ours.
    ``[LIVEMIG_EXT]`` is not one: oslo.config reads it as ours.
    """
    if _oslo_group(section) == GROUP_NAME:
        return False
    normal = ''.join(section.lower().replace('-', '_').split())
    return _edit_distance(normal, GROUP_NAME) <= _LOOKALIKE_DISTANCE


def _asks_for_tls(raw):
    """Is a written ``require_tls`` or ``native_tls`` anything but false?"""
    try:
        return types.Boolean()(raw) is not False
    except ValueError:
        return True


def _registered(conf, group, name):
    try:
        conf._get_opt_info(name, None if group == 'DEFAULT' else group)
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return False
    return True


def stray_options(conf):
    """Keys of ours written where nova-livemig-ext never reads them.

    ``[(path, section, key, raw value, kind)]``: ``kind`` is
    ``'lookalike'`` for every key of a section that looks like ours (see
    :func:`is_lookalike_section`), ``'misplaced'`` for an option of ours
    under ``[DEFAULT]`` or ``[libvirt]`` (where no option of that name is
    registered).  oslo.config ignores both without a word.
    """
    ours = {opt.name for opt in ALL_OPTS}
    found = []
    for path, sections in _parsed_files(conf):
        for section, keys in sorted(sections.items()):
            group = _oslo_group(section)
            if is_lookalike_section(section):
                found += [(path, section, key, values[-1], 'lookalike')
                          for key, values in sorted(keys.items())]
            elif group in _NOT_OUR_SECTIONS:
                found += [(path, section, key, values[-1], 'misplaced')
                          for key, values in sorted(keys.items())
                          if key in ours
                          and not _registered(conf, group, key)]
    return found


def _asking_for_tls(stray):
    return [item for item in stray
            if item[2] in TLS_OPTIONS and _asks_for_tls(item[3])]


def stray_option_warnings(conf):
    """One sentence per lookalike section and per misplaced option, except
    those asking for TLS (:func:`stray_tls_refusals` refuses them)."""
    stray = stray_options(conf)
    refused = _asking_for_tls(stray)
    problems = []
    lookalikes = {}
    for item in stray:
        if item in refused:
            continue
        path, section, key, _, kind = item
        if kind == 'lookalike':
            lookalikes.setdefault((path, section), []).append(key)
        else:
            problems.append(
                'option %s in [%s] of %s is ignored: it belongs in [%s]'
                % (key, section, path, GROUP_NAME))
    for (path, section), keys in sorted(lookalikes.items()):
        problems.append(
            'section [%s] in %s is not read, nova-livemig-ext reads [%s]: '
            '%s there %s ignored (rename the section [%s])'
            % (section, path, GROUP_NAME, ', '.join(keys),
               'is' if len(keys) == 1 else 'are', GROUP_NAME))
    return problems


def stray_tls_refusals(conf):
    """One sentence per TLS option of ours written where it is not read.

    The operator asked for an encrypted migration stream (or for
    nova-compute to insist on one) and would silently not get it.
    """
    problems = []
    for path, section, key, raw, kind in _asking_for_tls(
            stray_options(conf)):
        why = ('[%s] is not [%s]' % (section, GROUP_NAME)
               if kind == 'lookalike' else
               'it belongs in [%s]' % GROUP_NAME)
        lost = ('TLS would not be required' if key == 'require_tls' else
                'migrations would not be encrypted')
        problems.append(
            '%s = %r in [%s] of %s is not read (%s), so %s as asked: move it '
            'to [%s]' % (key, raw, section, path, why, lost, GROUP_NAME))
    return problems


def unknown_options(conf):
    """One sentence per key of ours that nothing reads.

    oslo.config ignores keys it has no option for, so a typo
    (``requires_tls = True``), a section that looks like ours but is not
    (``[livemig-ext]``) or an option of ours under ``[DEFAULT]`` or
    ``[libvirt]`` silently leaves the default in force.  Reads the files
    ``conf`` was loaded from (``--config-file`` and ``--config-dir``).
    nova-compute logs each as a warning at start. The ones that would have
    asked for TLS are refused by :func:`invalid_values` instead.
    """
    known = _known_names(conf)
    problems = []
    for path, section, key, _ in file_values(conf):
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            problems.append(
                'unknown option [%s] %s in %s is ignored%s'
                % (section, key, path,
                   ' (did you mean %s?)' % close[0] if close else ''))
    return problems + stray_option_warnings(conf)


def _number_type(conf, group, name):
    """Whether ``[group] name`` is an integer or a float option."""
    try:
        kind = conf._get_opt_info(name, group)['opt'].type
    except Exception:  # noqa: BLE001 - a test double, an older oslo
        return False
    return isinstance(kind, (types.Integer, types.Float))


def invalid_values(conf, groups=(GROUP_NAME,), prefix=''):
    """One sentence per option of ``groups`` whose value cannot be used.

    oslo.config checks a value only when it is read; this reads every
    option of the groups (whose name starts with ``prefix``) now and names
    the option, the value as written and the file, instead of oslo's "Value
    for option ... is not valid".  A number written in other than ASCII
    digits (``4_00``, ``٤٠٠``) is refused too, in Nova's options as in ours.
    With our group, a TLS option written where it is not read is refused
    (:func:`stray_tls_refusals`).
    """
    problems = []
    for group in groups:
        written = {key: (path, value)
                   for path, _, key, value in file_values(conf, group)}
        try:
            names = sorted(conf[group])
        except cfg.NoSuchOptError:
            continue
        for name in names:
            if not name.startswith(prefix):
                continue
            path, value = written.get(name, (None, None))
            where = ' = %r in %s' % (value, path) if path else ''
            try:
                conf[group][name]
            except cfg.Error as e:
                if not isinstance(e, ValueError):
                    continue  # not about a value written in a file
                reason = str(e).rsplit('is not valid: ', 1)[-1]
                problems.append('[%s] %s%s is not valid: %s'
                                % (group, name, where, reason))
                continue
            reason = ascii_number_problem(value) if path else None
            if reason and _number_type(conf, group, name):
                problems.append('[%s] %s%s is not valid: %s'
                                % (group, name, where, reason))
    if GROUP_NAME in groups:
        problems += stray_tls_refusals(conf)
    return problems
