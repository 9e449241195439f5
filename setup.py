import os
import sys

import setuptools

# tools/build_hook.py holds the build step named in setup.cfg [global].
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                'tools'))

setuptools.setup(setup_requires=['pbr>=2.0.0'], pbr=True)
