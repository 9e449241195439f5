"""Build step that ships ``nova_livemig_ext.pth`` at the root of the wheel.

The ``.pth`` file lands in site-packages and, at interpreter start, adds a
finder that imports nothing until Nova asks for ``nova.virt.livemig_ext``;
then ``nova_livemig_ext/nova_virt_alias.py`` resolves it, which is what lets
Nova load ``compute_driver = livemig_ext.LibvirtLiveMigExtDriver``.
Named in ``setup.cfg`` (``[global] commands``) because pbr replaces any
``cmdclass`` given to ``setup()``.
"""

import os

from setuptools.command import build_py

HOOK = 'nova_livemig_ext.pth'


class BuildPyWithHook(build_py.build_py):
    command_name = 'build_py'

    def run(self):
        super().run()
        self.copy_file(HOOK, os.path.join(self.build_lib, HOOK))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [
            os.path.join(self.build_lib, HOOK)]

    def get_output_mapping(self):
        # Editable installs (PEP 660) copy what this maps instead of linking.
        mapping = dict(super().get_output_mapping())
        mapping[os.path.join(self.build_lib, HOOK)] = HOOK
        return mapping


try:
    from setuptools.command import editable_wheel
except ImportError:  # setuptools < 64 has no PEP 660 editable wheels
    editable_wheel = None


if editable_wheel is not None:
    class _StrategyWithHook:
        """Wraps setuptools' editable strategy to add the hook file."""

        def __init__(self, strategy):
            self._strategy = strategy

        def __call__(self, wheel, files, mapping):
            self._strategy(wheel, files, mapping)
            with open(HOOK) as f:
                wheel.writestr(HOOK, f.read())

        def __enter__(self):
            self._strategy.__enter__()
            return self

        def __exit__(self, *exc):
            return self._strategy.__exit__(*exc)

    class EditableWheelWithHook(editable_wheel.editable_wheel):
        """``pip install -e`` (how devstack installs) gets the hook too."""

        command_name = 'editable_wheel'

        def _select_strategy(self, *args, **kwargs):
            return _StrategyWithHook(
                super()._select_strategy(*args, **kwargs))
