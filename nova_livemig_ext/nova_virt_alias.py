"""Make ``compute_driver = livemig_ext.LibvirtLiveMigExtDriver`` loadable.

Nova imports a compute driver only as ``nova.virt.<compute_driver>``.  Rather
than adding a file to Nova's tree (which an editable Nova install, as devstack
makes, would not even see), an import finder answers for exactly one name,
``nova.virt.livemig_ext``, and only after every normal finder has said no: it
can never shadow a module Nova ships.

Two halves, so that the processes which never load the driver pay nothing:

* ``nova_livemig_ext.pth`` (installed into site-packages) runs at every
  interpreter start.  Its one line appends a finder defined in the line
  itself, imports nothing, and for any other name returns at once.  Only
  when ``nova.virt.livemig_ext`` is asked for does it import this module; if
  the package has been removed and the ``.pth`` left behind, it answers "not
  found" and stays quiet.
* this module: the finder and loader proper, which import the driver when
  Nova executes the alias module.
"""

import importlib
import importlib.abc
import importlib.util
import sys

ALIAS = 'nova.virt.livemig_ext'
TARGET = 'nova_livemig_ext.driver'
EXPORTS = ('LibvirtLiveMigExtDriver',)
# The class name the .pth line gives its finder (see install()).
HOOK_NAME = 'NovaLivemigExtHook'


class _AliasLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        real = importlib.import_module(TARGET)
        for name in EXPORTS:
            setattr(module, name, getattr(real, name))
        module.__all__ = list(EXPORTS)


class AliasFinder(importlib.abc.MetaPathFinder):
    """Finds ``nova.virt.livemig_ext`` and nothing else."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != ALIAS:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader())


def find_spec(fullname, path=None, target=None):
    """What the start-up finder of ``nova_livemig_ext.pth`` delegates to."""
    return AliasFinder().find_spec(fullname, path, target)


def install(meta_path=None):
    """Append the finder once, unless the ``.pth`` hook is already there.

    For interpreters started without site-packages processing (``-S``) or
    with the package on ``sys.path`` only; safe to call any number of times.
    """
    meta_path = sys.meta_path if meta_path is None else meta_path
    if not any(isinstance(f, AliasFinder)
               or getattr(f, '__name__', None) == HOOK_NAME
               for f in meta_path):
        meta_path.append(AliasFinder())


# A .pth from before the start-up hook ("import nova_livemig_ext.
# nova_virt_alias") relies on this: installing at import keeps an environment
# that has not been reinstalled since loading the driver.
install()
