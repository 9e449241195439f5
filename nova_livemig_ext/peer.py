"""The guest as another host's libvirt sees it, read without ever blocking
the reader for long.

After a failure in post-copy the source's monitor wants the destination's
word too: a destination that failed to load the guest at the switch is
shut off as *failed*, and only that state proves the source may run the
guest again (see :mod:`nova_livemig_ext.standin`). The destination is read
over the network, which is exactly what may be broken: every libvirt call
here runs in a thread of its own and is given up on after ``timeout_s``;
while one is still blocked no other is started, and the view is
*unreachable*. Reads go over a read-only connection; the one change,
:meth:`BoundedPeer.destroy` (a destination QEMU stuck before it ran the
guest), opens a writable one of its own for that call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nova_livemig_ext import postcopy
from nova_livemig_ext import standin

DEFAULT_TIMEOUT_S = 5.0
# libvirt's destroy sends SIGTERM, waits, then SIGKILL: give it longer.
DESTROY_TIMEOUT_S = 30.0


class _Pending(Exception):
    """A call that has not returned within its time (still blocked)."""


class BoundedPeer:
    """One guest on one peer libvirt, each read bounded in time.

    ``open_connection()`` opens a read-only connection to the peer's libvirt
    (it may block: it runs in its own thread); ``uuid`` is the guest's.
    ``is_libvirt_error`` and ``domain_gone`` classify libvirt's errors as
    :class:`nova_livemig_ext.monitor.ErrorClassifier` does: only a libvirt
    error saying the domain is gone reads as *no domain*; any other fault is
    *unreachable*.
    ``start_thread(target)`` starts a daemon thread and returns it.
    ``open_writable()``, when given, opens a writable connection for
    :meth:`destroy`.
    """

    def __init__(self, open_connection: Callable[[], Any], uuid: str,
                 is_libvirt_error: Callable[[BaseException], bool],
                 domain_gone: Callable[[BaseException], bool],
                 start_thread: Callable[[Callable[[], None]], Any],
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 open_writable: Callable[[], Any] | None = None) -> None:
        self._open_connection = open_connection
        self._open_writable = open_writable
        self._uuid = uuid
        self._is_libvirt_error = is_libvirt_error
        self._domain_gone = domain_gone
        self._start_thread = start_thread
        self._timeout_s = timeout_s
        self._blocked: Any = None
        self._conn: Any = None
        self._domain: Any = None
        self.last_error: str | None = None
        # What libvirt answered the last destroy, when it was an error.
        self.destroy_error: str | None = None

    def _call(self, call: Callable[[], Any],
              timeout_s: float | None = None) -> Any:
        """``call()`` in a thread; raises :class:`_Pending` after the
        timeout, or while an earlier call is still blocked."""
        timeout_s = self._timeout_s if timeout_s is None else timeout_s
        # Only the caller's thread reads and writes ``_blocked``.
        if self._blocked is not None and self._blocked.is_alive():
            raise _Pending('an earlier call to the peer is still blocked')
        self._blocked = None
        outcome: list[Any] = []

        def target() -> None:
            try:
                outcome.append((True, call()))
            except BaseException as exc:  # handed to the caller
                outcome.append((False, exc))

        thread = self._start_thread(target)
        thread.join(timeout_s)
        if thread.is_alive() or not outcome:
            self._blocked = thread
            # A connection that blocked once is not trusted again.
            self._forget()
            raise _Pending('no answer within %.0f s' % timeout_s)
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def _forget(self) -> None:
        conn, self._conn, self._domain = self._conn, None, None
        if conn is not None:
            self._close_in_background(conn)

    def _close_in_background(self, conn: Any) -> None:
        def close() -> None:
            try:
                conn.close()
            except Exception:  # closing a dead connection may fail: nothing lost
                return
        self._start_thread(close)

    def _ensure_domain(self) -> Any:
        if self._domain is None:
            if self._conn is None:
                self._conn = self._call(self._open_connection)
            conn = self._conn
            self._domain = self._call(
                lambda: conn.lookupByUUIDString(self._uuid))
        return self._domain

    def view(self) -> postcopy.HostView:
        """The peer's view of the guest: unreachable when it cannot be had
        within the time, no domain when the peer says so."""
        try:
            domain = self._ensure_domain()
            state = self._call(domain.state)
        except _Pending as exc:
            self.last_error = str(exc)
            return postcopy.UNREACHABLE
        except Exception as exc:
            # Never required: any fault reading the peer is only "cannot
            # be read" (an unknown error is not proof of anything).
            self.last_error = str(exc) or type(exc).__name__
            if self._is_libvirt_error(exc) and self._domain_gone(exc):
                self._domain = None
                return postcopy.ABSENT
            self._forget()
            return postcopy.UNREACHABLE
        self.last_error = None
        return postcopy.HostView(True, True, int(state[0]), int(state[1]))

    def libvirt_version(self) -> int | None:
        """The peer libvirt's version, None when it does not answer."""
        try:
            if self._conn is None:
                self._conn = self._call(self._open_connection)
            conn = self._conn
            return int(self._call(conn.getLibVersion))
        except _Pending:
            return None
        except Exception as exc:
            self.last_error = str(exc) or type(exc).__name__
            self._forget()
            return None

    def destroy(self) -> postcopy.HostView:
        """Stop the guest's QEMU on the peer (libvirt's destroy), then
        read the peer again: the caller judges from that view. Raises
        RuntimeError when the call cannot be made or does not return."""
        if self._open_writable is None:
            raise RuntimeError('no writable connection to the destination '
                               'is configured')
        conn = None
        self.destroy_error = None
        try:
            conn = self._call(self._open_writable)
            writable = conn
            domain = self._call(
                lambda: writable.lookupByUUIDString(self._uuid))
            self.destroy_error = self._call(
                lambda: standin.destroy_stuck(domain, self._is_libvirt_error),
                DESTROY_TIMEOUT_S)
        except _Pending as exc:
            raise RuntimeError('the destination did not stop the guest: %s'
                               % exc) from None
        except Exception as exc:
            if not self._is_libvirt_error(exc):
                raise RuntimeError('the destination did not stop the guest: '
                                   '%s' % (str(exc) or type(exc).__name__)
                                   ) from exc
            # No writable connection or no domain to stop: the view says
            # whether a QEMU is left (the caller checks it).
            self.destroy_error = str(exc) or type(exc).__name__
        finally:
            if conn is not None:
                self._close_in_background(conn)
        return self.view()

    def close(self) -> None:
        """Close the connection (in the background: it may block)."""
        self._forget()
