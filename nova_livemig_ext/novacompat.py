"""Which Nova releases the driver supports, and what differs between them.

The driver subclasses Nova's ``LibvirtDriver`` and overrides private methods
(``_live_migration_operation``, ``_live_migration_monitor``, ...), which
Nova may change in any release. So the supported range is explicit, checked
when nova-compute starts, and tested: CI runs the unit and functional tests
on each release in ``TESTED_MAJORS``, with that release's upper constraints.

What differs inside the range, as read from each release:

* Nova 31 (2025.1) runs nova-compute on eventlet only. Its live migration
  thread comes from ``nova.utils.spawn`` and the monitor is handed an
  eventlet ``Event`` (``ready()``); ``[libvirt]
  live_migration_parallel_connections`` does not exist yet.
* Nova 32 (2025.2) and 33 (2026.1) spawn through ``nova.utils.spawn``;
  native threads are an experimental choice
  (``OS_NOVA_DISABLE_EVENTLET_PATCHING``); 33 adds
  ``live_migration_parallel_connections``. Nova 32.0.0 and 32.1.0 hand the
  monitor a ``threading.Event`` (``is_set()``) that a done-callback of the
  migrate call's future sets; from 32.2.0 on the monitor gets the
  ``Future`` itself (``done()``).
* Nova 34 (2026.2) spawns through ``nova.thread_pool_factory``, runs
  nova-compute on native threads by default and adds
  ``live_migration_monitor_interval`` (5 s, fixed, before).

``check_supported`` is pure; the functions below it touch Nova and are the
thin edge the driver calls.
"""

from __future__ import annotations

import re
from typing import Any, Callable

# Supported Nova majors, both ends included; requirements.txt says the same.
MIN_SUPPORTED_MAJOR = 31
MAX_SUPPORTED_MAJOR = 34
# Nova major -> OpenStack release.
RELEASES = {31: '2025.1', 32: '2025.2', 33: '2026.1', 34: '2026.2'}
# The majors CI runs the unit and functional tests on.
TESTED_MAJORS = (31, 34)
# The first Nova major whose nova-compute can run on native threads; before
# it, OS_NOVA_DISABLE_EVENTLET_PATCHING only leaves eventlet's patching out.
NATIVE_THREADS_MAJOR = 32
# ``[libvirt]`` options the driver reads that older Nova lacks:
# name -> (first major that has it, how the releases before it behave).
LIBVIRT_OPTIONS_SINCE = {
    # One connection per migration.
    'live_migration_parallel_connections': (33, 1),
    # Nova's monitor saved the progress every 5 s (10 polls of 0.5 s).
    'live_migration_monitor_interval': (34, 5),
}

_LEADING_NUMBER = re.compile(r'\s*v?(\d+)(?:\.|$|[^\d])')


def release_name(major: int) -> str:
    """``'31 (2025.1)'``, or just the number for a release not known here."""
    release = RELEASES.get(major)
    return '%d (%s)' % (major, release) if release else str(major)


def supported_text() -> str:
    return 'Nova %s to %s' % (release_name(MIN_SUPPORTED_MAJOR),
                              release_name(MAX_SUPPORTED_MAJOR))


def parse_major(nova_version: str) -> int | None:
    """The major of a Nova version string (``'31.3.1'`` -> 31), or None.

    pbr's forms all start with it: ``34.0.0``, ``35.0.0.0rc1``,
    ``34.1.0.dev12``; a distribution's ``34.0.0-1ubuntu1`` too.
    """
    if not isinstance(nova_version, str):
        return None
    match = _LEADING_NUMBER.match(nova_version)
    if match is None:
        return None
    return int(match.group(1))


def check_supported(nova_version: str) -> str | None:
    """None when ``nova_version`` is supported, else the one-line refusal."""
    major = parse_major(nova_version)
    if major is None:
        return ('nova-livemig-ext cannot tell which Nova this is (version '
                '%r); it supports %s' % (nova_version, supported_text()))
    if major < MIN_SUPPORTED_MAJOR:
        return ('nova-livemig-ext supports %s; this is Nova %s: upgrade Nova '
                'or unset compute_driver = livemig_ext.LibvirtLiveMigExtDriver'
                % (supported_text(), nova_version))
    if major > MAX_SUPPORTED_MAJOR:
        return ('nova-livemig-ext supports %s; this is Nova %s, whose private '
                'live migration methods it has not been tested against: '
                'install a nova-livemig-ext release that supports it'
                % (supported_text(), nova_version))
    return None


# --- the edge: what the driver asks of the Nova it runs in -----------------

def installed_nova_version() -> str:
    """The running Nova's version, as nova-compute reports it."""
    from nova import version
    return str(version.version_info.release_string())


def installed_nova_major() -> int | None:
    return parse_major(installed_nova_version())


def spawn(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``func`` in Nova's own kind of thread, as Nova's code would.

    Nova 34 has ``nova.thread_pool_factory.spawn``; earlier releases have
    ``nova.utils.spawn`` (a green thread on 31, a future on 32 and 33).
    """
    try:
        from nova import thread_pool_factory
    except ImportError:
        from nova import utils
        return utils.spawn(func, *args, **kwargs)
    return thread_pool_factory.spawn(func, *args, **kwargs)


class _EventAsFuture:
    """An eventlet event seen as a future: ``done()`` is ``ready()``."""

    def __init__(self, event: Any) -> None:
        self.event = event

    def done(self) -> bool:
        return bool(self.event.ready())


class _ThreadingEventAsFuture:
    """A ``threading.Event`` seen as a future: ``done()`` is ``is_set()``."""

    def __init__(self, event: Any) -> None:
        self.event = event

    def done(self) -> bool:
        return bool(self.event.is_set())


def as_future(handle: Any) -> Any:
    """What Nova hands the monitor, as something with ``done()``.

    ``LibvirtDriver._live_migration`` passes an eventlet event set when the
    migrate call returns on Nova 31, a ``threading.Event`` set by the
    migrate call's future when it is done on 32.0.0 and 32.1.0, and that
    future itself from 32.2.0 on.
    """
    if callable(getattr(handle, 'done', None)):
        return handle
    if callable(getattr(handle, 'ready', None)):
        return _EventAsFuture(handle)
    if callable(getattr(handle, 'is_set', None)):
        return _ThreadingEventAsFuture(handle)
    raise TypeError('neither a future nor an event: %r' % (handle,))


def libvirt_option(libvirt_conf: Any, name: str) -> Any:
    """``[libvirt] name``, or what a Nova without that option does.

    ``libvirt_conf`` is ``CONF.libvirt``. Only the options in
    ``LIBVIRT_OPTIONS_SINCE`` may be missing; any other missing one is an
    error as usual.
    """
    try:
        return getattr(libvirt_conf, name)
    except AttributeError:  # oslo.config's NoSuchOptError is one
        if name not in LIBVIRT_OPTIONS_SINCE:
            raise
        return LIBVIRT_OPTIONS_SINCE[name][1]
