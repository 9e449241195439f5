"""Real OS threads and sleeps, even in a process eventlet has monkey-patched.

Nova's test base (and nova-compute in eventlet mode) monkey-patches
``threading`` and ``time``.  libvirt calls block the OS thread that makes
them, so a green "thread" running ``migrateToURI3`` would freeze the whole
process, poller included.  Nova's libvirt host module does the same for its
event thread.
"""
from __future__ import annotations

import sys
import threading
import time
import types


def _original(name: str, default: types.ModuleType) -> types.ModuleType:
    # Not imported means not patched; importing it would only print a warning.
    if "eventlet" not in sys.modules:
        return default
    from eventlet import patcher
    if not patcher.is_monkey_patched(name if name != "threading" else "thread"):
        return default
    module: types.ModuleType = patcher.original(name)
    return module


def threading_module() -> types.ModuleType:
    """The real ``threading``; asked at each use, as patching may come later."""
    return _original("threading", threading)


def time_module() -> types.ModuleType:
    return _original("time", time)
