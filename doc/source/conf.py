# Sphinx configuration of nova-livemig-ext's documentation.
#
#     sphinx-build -W -b html doc/source doc/build/html
#
# The option reference comes from the code (oslo_config.sphinxext reads the
# ``oslo.config.opts`` entry point), the per-instance keys from
# ``nova_livemig_ext.instance_policy.KEYS``; the package must be installed.

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '_exts'))

project = 'nova-livemig-ext'
copyright = 'nova-livemig-ext developers'
author = 'nova-livemig-ext developers'

extensions = [
    'oslo_config.sphinxext',
    'instance_keys',
]

# A plain theme that ships with Sphinx: building needs nothing else.
html_theme = 'alabaster'
html_theme_options = {
    'description': 'Live migrations that finish',
    'show_relbars': True,
}
html_static_path = []

exclude_patterns = ['_build']
pygments_style = 'sphinx'
