"""The project's tests, one package per kind (unit, functional, e2e, ...).

Discovery imports every test module before it filters by test id, so a
worker asked to run only unit tests would still import ``tests.functional``,
whose import monkey-patches the whole process with eventlet (Nova's
functional base does that).  ``load_tests`` below imports only the packages
whose tests the worker was given (stestr's ``--load-list``); listing and
runs without a list still see every package.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _listed_ids(argv):
    """The test ids of ``--load-list FILE`` in ``argv``, or None."""
    for i, arg in enumerate(argv):
        if arg == '--load-list' and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith('--load-list='):
            path = arg.split('=', 1)[1]
        else:
            continue
        try:
            with open(path, encoding='utf-8') as f:
                return {line.strip() for line in f if line.strip()}
        except OSError:
            return None  # let the runner report the unreadable list
    return None


def packages_to_load(argv, packages):
    """Which of ``packages`` (names under tests/) a run needs; all if unsure.
    """
    ids = _listed_ids(argv)
    if ids is None:
        return sorted(packages)
    wanted = set()
    for test_id in ids:
        parts = test_id.split('.')
        if len(parts) < 2 or parts[0] != __name__ or parts[1] not in packages:
            # Not one of ours by name (a load failure, say): load everything
            # so the runner can match or report it.
            return sorted(packages)
        wanted.add(parts[1])
    return sorted(wanted)


def load_tests(loader, standard_tests, pattern):
    packages = {name for name in os.listdir(_HERE)
                if os.path.isfile(os.path.join(_HERE, name, '__init__.py'))}
    for name in packages_to_load(sys.argv, packages):
        standard_tests.addTests(loader.discover(
            start_dir=os.path.join(_HERE, name), pattern=pattern or 'test*.py'))
    return standard_tests
