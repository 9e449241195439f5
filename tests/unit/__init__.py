"""Unit tests: no lab, no Nova services, and no eventlet.

Nova's test fixtures import ``nova.tests.functional``, which monkey-patches
the whole process with eventlet unless ``OS_NOVA_DISABLE_EVENTLET_PATCHING``
says otherwise, and ``nova.test`` imports eventlet (through futurist) before
that.  Unit tests run real OS threads (the migration monitor does), so they
choose native threads, nova-compute's default in Nova 34, and make that
choice before any test module imports Nova.  A process that already chose
(eventlet imported by a test package loaded earlier, or the variable set by
whoever runs the tests) keeps its choice.
"""

import os
import sys

if 'eventlet' not in sys.modules:
    os.environ.setdefault('OS_NOVA_DISABLE_EVENTLET_PATCHING', 'true')
    try:
        from nova import monkey_patch
    except ImportError:  # Nova absent: the tests that need it skip or fail
        pass
    else:
        monkey_patch.patch()
