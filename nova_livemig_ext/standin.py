"""Give the source its guest back when post-copy broke before the destination ran.

The switch to post-copy sends the guest's device state to the destination in
one package; the destination loads it and only then starts the vCPUs. When
the stream breaks while that package is in flight (seen in the lab with a
connection reset 0.03 s after the switch), QEMU 10.0's destination fails to
load it and libvirt shuts its domain off as *failed*. The
source QEMU has already counted the migration as post-copy: it pauses it
(``postcopy-paused``), refuses ``migrate_cancel`` ("Postcopy migration in
progress, cannot cancel.", seen in the lab) and stays in run state
``finish-migrate``, where ``cont`` is refused ("Migration is not finalized
yet", in QEMU's code). Its guest is whole (memory and device state; the destination never ran
it), but nothing in libvirt or QEMU's interface runs it again, and a resume
has nowhere to go: the guest would be lost.

The way back used here goes through QEMU's own recovery protocol. The source
is resumed (QMP ``migrate`` with ``resume``) into a stand-in destination,
served by this module on a local socket, that:

1. answers every ``RECV_BITMAP`` request with a bitmap of every page
   received, so the source has nothing left to send;
2. acknowledges ``POSTCOPY_RESUME``;
3. lets the source finish (it sends only the end of its sections), then
   closes the return path with an error (``SHUT`` with a non-zero value).

The source then marks the migration failed and, as after any failed
migration of a running guest, re-activates its disks and runs the guest. No
page leaves the host, and nothing of the guest's memory is discarded: the
source never released a page (libvirt does not set ``release-ram``, and the
give-back is refused when it is on).

The exchange was run against QEMU 10.0.2 (Debian bookworm-backports) in the
project's lab; the messages it uses have kept their numbers since post-copy
recovery came in QEMU 3.0 (new ones are only ever appended). A QEMU that
fails the migration back to the source by itself in this case leaves no
``postcopy-paused`` source, and nothing here runs.

This is only safe when the destination never ran the guest; otherwise the
source's copy is older than what the guest already did. It is refused unless
all of these hold (:func:`refusal`):

- the destination's domain is shut off with reason *failed*: libvirt kills
  an incoming domain that way only before it reached post-copy (a
  destination that ran is kept paused, "post-copy failed", for a resume);
- the source QEMU is ``postcopy-paused`` and its ``postcopy-requests`` is 0:
  a destination that ran would have asked for at least one missing page.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

# QEMU's migration stream (migration/savevm.c, migration/migration.c).
QEMU_VM_COMMAND = 0x08
MIG_CMD_POSTCOPY_RESUME = 9
MIG_CMD_RECV_BITMAP = 10
MIG_RP_MSG_SHUT = 1
MIG_RP_MSG_RECV_BITMAP = 5
MIG_RP_MSG_RESUME_ACK = 6
RESUME_ACK_VALUE = 1
RECV_BITMAP_ENDING = 0x0123456789ABCDEF
TARGET_PAGE_SIZE = 4096

# libvirt: virDomainState / virDomainShutoffReason.
VIR_DOMAIN_SHUTOFF = 5
VIR_DOMAIN_SHUTOFF_FAILED = 6

DEFAULT_TIMEOUT_S = 60.0
# Where the stand-in listens: the source QEMU dials it from the same host.
DEFAULT_ADDRESS = 'tcp:127.0.0.1'
_SOCKETS = itertools.count(1)
# Once the resume is acknowledged the source sends only the end of its
# sections; quiet this long means it has sent everything.
QUIET_S = 1.0


def address_arg(text: str) -> str | None:
    """A command-line stand-in address: ``tcp:HOST``, ``unix:DIRECTORY``, or
    ``off`` (None: never give a guest back)."""
    import argparse
    if text == 'off':
        return None
    kind, _, where = text.partition(':')
    if kind == 'tcp' and where:
        return text
    if kind == 'unix' and where.startswith('/'):
        return text
    raise argparse.ArgumentTypeError(
        'expected tcp:HOST, unix:/DIRECTORY or off, not %r' % text)


def address_or_none(text: str | None) -> str | None:
    """``[livemig_ext] postcopy_give_back_address`` as :func:`give_back`
    takes it: None for ``off`` (or unset)."""
    if not text or text == 'off':
        return None
    return text


def add_address_argument(parser: Any) -> None:
    """``--give-back-address``, as ``migrate`` and ``recover`` take it."""
    parser.add_argument(
        '--give-back-address', type=address_arg, default=DEFAULT_ADDRESS,
        help='where a stand-in destination listens when a destination that '
        'failed before it ran the guest hands the guest back to the source: '
        'tcp:HOST (default tcp:127.0.0.1, as the source QEMU sees it), '
        'unix:/DIRECTORY, or off')


class StandInError(Exception):
    """The stand-in destination could not complete the exchange."""


class Refused(Exception):
    """Giving the guest back to the source is not safe (the reason)."""


def refusal(dest_state: tuple[int, int] | None,
            source_migration: Mapping[str, Any],
            operator_says_never_ran: bool = False) -> str | None:
    """Why the source must not run the guest again, or None when it may.

    ``dest_state`` is the destination domain's ``(state, reason)`` (None: no
    domain); ``source_migration`` is the source QEMU's ``query-migrate``.
    ``operator_says_never_ran``: the operator read the destination QEMU's
    log ("error while loading state" and no "postcopy": its loader failed
    before the guest ran) and vouches for it; any destination that runs no
    QEMU will do.
    """
    reason = source_refusal(source_migration)
    if reason is not None:
        return reason
    if operator_says_never_ran:
        if dest_state is not None and dest_state[0] != VIR_DOMAIN_SHUTOFF:
            return ('the destination domain still runs a QEMU (state %s, '
                    'reason %s)' % tuple(dest_state))
        return None
    if dest_state is None:
        return ('the destination has no domain for the guest: it cannot be '
                'told whether it ever ran it')
    if tuple(dest_state) != (VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_FAILED):
        return ('the destination domain is not shut off as failed (state '
                '%s, reason %s): it may have run the guest'
                % tuple(dest_state))
    return None


def source_refusal(source_migration: Mapping[str, Any],
                   capabilities: Any = None) -> str | None:
    """Why the source QEMU cannot take the guest back, or None when it can,
    from its ``query-migrate`` (and ``query-migrate-capabilities`` when
    given): its stream must be broken (``postcopy-paused``; a stream still
    ``postcopy-active`` may yet deliver the switch) and no page asked for."""
    status = source_migration.get('status')
    if status != 'postcopy-paused':
        return ('the source migration is %s, not postcopy-paused'
                % (status or 'not reported'))
    requests = (source_migration.get('ram') or {}).get('postcopy-requests')
    if requests != 0:
        return ('the destination asked the source for %s page(s) after '
                'the switch: it ran the guest' % requests)
    if capabilities is not None and released_pages(capabilities):
        return ('the source released the pages it had sent (release-ram): '
                'its copy of the guest is not whole')
    return None


def source_refusal_domain(domain: Any) -> str | None:
    """:func:`source_refusal` read from a libvirt domain's QEMU on the
    source (monitor pass-through, as :func:`give_back_domain`); a monitor
    that cannot be read is a refusal too."""
    qmp, _ = _pass_through(domain)
    try:
        return source_refusal(_qmp_return(qmp, 'query-migrate'),
                              _qmp_value(qmp, 'query-migrate-capabilities'))
    except Exception as exc:
        return ('the source QEMU could not be read: %s'
                % (str(exc) or type(exc).__name__))


def destroy_stuck(domain: Any,
                  is_libvirt_error: Callable[[BaseException], bool]
                  ) -> str | None:
    """libvirt's destroy of a destination domain stuck before it ran the
    guest. Returns libvirt's error, if any, for the log: libvirt may remove
    an incoming domain itself once its QEMU is gone and then report the
    destroy failed, so the caller reads the destination again and judges by
    what it shows."""
    try:
        domain.destroy()
    except Exception as exc:
        if not is_libvirt_error(exc):
            raise
        return str(exc) or type(exc).__name__
    return None


def ramblocks(info_ramblock: str) -> dict[str, int]:
    """RAM block name -> used length in bytes, from HMP ``info ramblock``."""
    blocks: dict[str, int] = {}
    for line in info_ramblock.splitlines():
        fields = line.split()
        # Block Name, PSize (two words), Offset, Used, Total, HVA, RO
        if len(fields) < 6 or not fields[3].startswith('0x'):
            continue
        try:
            blocks[fields[0]] = int(fields[4], 16)
        except ValueError:
            continue
    if not blocks:
        raise StandInError('no RAM block in "info ramblock": %r'
                           % info_ramblock[:200])
    return blocks


def received_bitmap(used_length: int,
                    page_size: int = TARGET_PAGE_SIZE) -> bytes:
    """A little-endian bitmap with a bit set for every page of a block.

    Sized as QEMU sizes it: one bit per target page, rounded up to whole
    64-bit words; bits past the block stay clear.
    """
    if used_length < 0 or used_length % page_size:
        raise StandInError('RAM block length %d is not a whole number of '
                           '%d-byte pages' % (used_length, page_size))
    nbits = used_length // page_size
    size = ((nbits + 7) // 8 + 7) // 8 * 8
    bitmap = bytearray(size)
    whole, rest = divmod(nbits, 8)
    bitmap[:whole] = b'\xff' * whole
    if rest:
        bitmap[whole] = (1 << rest) - 1
    return bytes(bitmap)


def _read_exact(conn: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise StandInError('the source closed the stream after %d of %d '
                               'bytes' % (len(data), count))
        data += chunk
    return bytes(data)


def _return_path(conn: socket.socket, kind: int, data: bytes = b'') -> None:
    conn.sendall(struct.pack('>HH', kind, len(data)) + data)


def serve(conn: socket.socket, blocks: Mapping[str, int],
          timeout_s: float = DEFAULT_TIMEOUT_S, quiet_s: float = QUIET_S,
          clock: Callable[[], float] = time.monotonic) -> list[str]:
    """Play the destination of a resumed post-copy until the source is done.

    Returns what happened, one line per step. Raises :class:`StandInError`
    on anything but the exchange described in the module's docstring.
    """
    steps: list[str] = []
    conn.settimeout(timeout_s)
    try:
        while True:
            kind = _read_exact(conn, 1)[0]
            if kind != QEMU_VM_COMMAND:
                raise StandInError('the source sent section type %#x before '
                                   'the resume' % kind)
            command, length = struct.unpack('>HH', _read_exact(conn, 4))
            data = _read_exact(conn, length)
            if command == MIG_CMD_RECV_BITMAP:
                if not data or data[0] + 1 > len(data):
                    raise StandInError('malformed RECV_BITMAP request')
                name = data[1:1 + data[0]].decode('utf-8', 'replace')
                if name not in blocks:
                    raise StandInError('the source asked for RAM block %r, '
                                       'unknown to "info ramblock"' % name)
                bitmap = received_bitmap(blocks[name])
                _return_path(conn, MIG_RP_MSG_RECV_BITMAP,
                             bytes([len(name)]) + name.encode())
                conn.sendall(struct.pack('>Q', len(bitmap)) + bitmap
                             + struct.pack('>Q', RECV_BITMAP_ENDING))
                steps.append('RAM block %s (%d bytes): every page received'
                             % (name, blocks[name]))
            elif command == MIG_CMD_POSTCOPY_RESUME:
                _return_path(conn, MIG_RP_MSG_RESUME_ACK,
                             struct.pack('>I', RESUME_ACK_VALUE))
                steps.append('resume acknowledged')
                break
            else:
                steps.append('command %d (%d bytes) ignored'
                             % (command, length))
        # The source has nothing to send but the end of its sections.
        conn.settimeout(quiet_s)
        received = 0
        deadline = clock() + timeout_s
        while clock() < deadline:
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                if received:
                    break
                continue
            if not chunk:
                break
            received += len(chunk)
        else:
            raise StandInError('the source did not finish within %.0f s of '
                               'the resume' % timeout_s)
        steps.append('%d bytes after the resume' % received)
        # A non-zero SHUT: the destination failed, so the source fails the
        # migration and runs its guest again.
        _return_path(conn, MIG_RP_MSG_SHUT, struct.pack('>I', 1))
        steps.append('return path closed with an error')
    except OSError as exc:
        raise StandInError('stand-in stream: %s' % exc) from exc
    return steps


class Listener:
    """A listening socket for the source to resume into.

    ``address`` is ``tcp:HOST`` (an ephemeral port is chosen) or
    ``unix:DIRECTORY`` (a socket of its own is made there); :attr:`uri` is
    what QMP ``migrate`` dials.
    """

    def __init__(self, address: str) -> None:
        kind, _, where = address.partition(':')
        self.path: str | None = None
        if kind == 'tcp' and where:
            host = where.strip('[]')
            family = socket.AF_INET6 if ':' in host else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.bind((host, 0))
            port = self.sock.getsockname()[1]
            shown = '[%s]' % host if family == socket.AF_INET6 else host
            self.uri = 'tcp:%s:%d' % (shown, port)
        elif kind == 'unix' and where:
            if not os.path.isdir(where):
                raise StandInError('stand-in directory %r does not exist'
                                   % where)
            self.path = os.path.join(where, 'livemig-standin-%d-%d.sock' % (
                os.getpid(), next(_SOCKETS)))
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(self.path)
            self.uri = 'unix:' + self.path
        else:
            raise StandInError('stand-in address %r is neither tcp:HOST nor '
                               'unix:PATH' % address)
        self.sock.listen(4)

        self.held: list[socket.socket] = []

    def accept(self, timeout_s: float) -> socket.socket:
        """The main channel; later connections are held open until close.

        With ``postcopy-preempt`` the resumed source also opens a channel
        for urgent pages; none are asked for, but a channel closed under
        it would pause the migration again.
        """
        self.sock.settimeout(timeout_s)
        try:
            conn, _ = self.sock.accept()
        except OSError as exc:
            raise StandInError('the source did not connect within %.0f s: %s'
                               % (timeout_s, exc)) from exc
        threading.Thread(target=self._hold, name='livemig-standin-hold',
                         daemon=True).start()
        return conn

    def _hold(self) -> None:
        self.sock.settimeout(None)
        while True:
            try:
                extra, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(extra)
            threading.Thread(target=_drain, args=(extra,), daemon=True).start()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for extra in self.held:
            extra.close()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def _drain(conn: socket.socket) -> None:
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def give_back(qmp: Callable[[str], str], hmp: Callable[[str], str],
              dest_state: tuple[int, int] | None,
              address: str = 'tcp:127.0.0.1',
              timeout_s: float = DEFAULT_TIMEOUT_S,
              clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep,
              operator_says_never_ran: bool = False) -> list[str]:
    """Run the guest on the source again; see the module's docstring.

    ``qmp``/``hmp`` send one command to the source QEMU's monitor and return
    its reply text (libvirt_qemu.qemuMonitorCommand). Raises
    :class:`Refused` when it is not safe, :class:`StandInError` when the
    exchange fails (the source is then left postcopy-paused, as before).
    """
    migration = _qmp_return(qmp, 'query-migrate')
    reason = refusal(dest_state, migration, operator_says_never_ran)
    if reason is None:
        # Only then is the monitor asked anything more.
        reason = source_refusal(
            migration, _qmp_value(qmp, 'query-migrate-capabilities'))
    if reason is not None:
        raise Refused(reason)
    blocks = ramblocks(hmp('info ramblock'))
    listener = Listener(address)
    result: dict[str, Any] = {}

    def play() -> None:
        try:
            conn = listener.accept(timeout_s)
            with conn:
                result['steps'] = serve(conn, blocks, timeout_s, clock=clock)
        except Exception as exc:  # handed to the caller below
            result['error'] = exc

    thread = threading.Thread(target=play, name='livemig-standin',
                              daemon=True)
    thread.start()
    try:
        reply = json.loads(qmp(json.dumps({
            'execute': 'migrate',
            'arguments': {'uri': listener.uri, 'resume': True}})))
        if 'error' in reply:
            raise StandInError('the source refused to resume into the '
                               'stand-in: %s' % reply['error'].get('desc'))
        thread.join(timeout_s * 2 + 5)
        if thread.is_alive():
            raise StandInError('the stand-in exchange did not end within '
                               '%.0f s' % (timeout_s * 2 + 5))
        if 'error' in result:
            raise result['error']
        steps = list(result.get('steps', []))
        deadline = clock() + timeout_s
        while True:
            status = _qmp_return(qmp, 'query-status')
            if status.get('running'):
                break
            if clock() >= deadline:
                raise StandInError('the source did not run the guest again '
                                   'within %.0f s (status %s)'
                                   % (timeout_s, status.get('status')))
            sleep(0.2)
        final = _qmp_return(qmp, 'query-migrate')
        steps.append('source migration %s, guest %s'
                     % (final.get('status'), status.get('status')))
        return steps
    finally:
        listener.close()


def released_pages(capabilities: Any) -> bool:
    """Whether ``query-migrate-capabilities`` has ``release-ram`` on (the
    source then frees each page once sent in post-copy). Unreadable counts
    as on."""
    if not isinstance(capabilities, list):
        return True
    return any(not isinstance(cap, dict)
               or (cap.get('capability') == 'release-ram'
                   and cap.get('state') is not False)
               for cap in capabilities)


def _qmp_value(qmp: Callable[[str], str], command: str) -> Any:
    reply = json.loads(qmp(json.dumps({'execute': command})))
    if 'error' in reply:
        raise StandInError('%s: %s' % (command, reply['error'].get('desc')))
    return reply.get('return')


def _qmp_return(qmp: Callable[[str], str], command: str) -> dict[str, Any]:
    value = _qmp_value(qmp, command)
    if not isinstance(value, dict):
        raise StandInError('%s: unexpected reply %r' % (command, value))
    return value


def state_of(state: int | None,
             reason: int | None) -> tuple[int, int] | None:
    """A domain's ``(state, reason)`` for :func:`refusal` (None: unknown)."""
    if state is None or reason is None:
        return None
    return (state, reason)


Sender = Callable[[str], str]


def _pass_through(domain: Any) -> tuple[Sender, Sender]:
    """QMP and HMP senders to a libvirt domain's QEMU, through libvirt's
    monitor pass-through (``virDomainQemuMonitorCommand``)."""
    import libvirt_qemu  # part of libvirt-python; only needed here

    def qmp(command: str) -> str:
        return str(libvirt_qemu.qemuMonitorCommand(domain, command, 0))

    def hmp(command: str) -> str:
        return str(libvirt_qemu.qemuMonitorCommand(
            domain, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP))

    return qmp, hmp


def give_back_domain(domain: Any, dest_state: tuple[int, int] | None,
                     address: str = DEFAULT_ADDRESS,
                     timeout_s: float = DEFAULT_TIMEOUT_S,
                     operator_says_never_ran: bool = False) -> list[str]:
    """:func:`give_back` for a libvirt domain on the source.

    Talks to its QEMU through libvirt's monitor pass-through
    (``virDomainQemuMonitorCommand``), which libvirt records as a taint of
    the domain ("custom-monitor").
    """
    qmp, hmp = _pass_through(domain)
    return give_back(qmp, hmp, dest_state, address, timeout_s,
                     operator_says_never_ran=operator_says_never_ran)
