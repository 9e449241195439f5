"""Make ``compute_driver = livemig_ext.LibvirtLiveMigExtDriver`` loadable.

Nova imports a compute driver only as ``nova.virt.<compute_driver>``.  Rather
than adding a file to Nova's tree (which an editable Nova install, as devstack
makes, would not even see), this module appends an import finder that answers
for exactly one name, ``nova.virt.livemig_ext``, and only after every normal
finder has said no: it can never shadow a module Nova ships.

The finder is installed at interpreter start by ``nova_livemig_ext.pth``,
which the package installs into site-packages.  It must stay cheap: it runs in
every Python process of that environment.
"""

import importlib
import importlib.abc
import importlib.util
import sys

ALIAS = 'nova.virt.livemig_ext'
TARGET = 'nova_livemig_ext.driver'
EXPORTS = ('LibvirtLiveMigExtDriver',)


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


def install(meta_path=None):
    """Append the finder once; safe to call any number of times."""
    meta_path = sys.meta_path if meta_path is None else meta_path
    if not any(isinstance(f, AliasFinder) for f in meta_path):
        meta_path.append(AliasFinder())


install()
