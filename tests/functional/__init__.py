# Nova's functional package decides eventlet or native threads on import
# (OS_NOVA_DISABLE_EVENTLET_PATCHING); it must come before anything else
# of Nova's.
import nova.tests.functional  # noqa: F401
