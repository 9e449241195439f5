"""Unit tests: no lab, no Nova services, and no eventlet.

Nova's test fixtures import ``nova.tests.functional``, which monkey-patches
the whole process with eventlet unless ``OS_NOVA_DISABLE_EVENTLET_PATCHING``
says otherwise, and ``nova.test`` imports eventlet (through futurist) before
that.  Unit tests run real OS threads (the migration monitor does), so they
let Nova choose native threads, nova-compute's default in Nova 34.  Nova
makes that choice when ``nova.tests.functional`` and ``nova.tests.unit`` are
first imported, so they are imported here, before any test module imports
Nova.  The variable is set only for those imports: tests that start programs
(e2e ones in the same worker) must not pass it on.

A process that already chose (eventlet imported by a test package loaded
earlier, or the variable set by whoever runs the tests) keeps its choice.
"""

import os
import sys

_VARIABLE = 'OS_NOVA_DISABLE_EVENTLET_PATCHING'

if 'eventlet' not in sys.modules and 'nova.tests.functional' not in sys.modules:
    _chosen = _VARIABLE in os.environ
    if not _chosen:
        os.environ[_VARIABLE] = 'true'
    try:
        import nova.tests.functional  # noqa: F401
        import nova.tests.unit  # noqa: F401
    except ImportError:  # Nova absent: the tests that need it skip or fail
        pass
    finally:
        if not _chosen:
            del os.environ[_VARIABLE]
