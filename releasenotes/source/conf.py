# Sphinx configuration of nova-livemig-ext's release notes (reno).
#
#     sphinx-build -W -b html releasenotes/source releasenotes/build/html

project = 'nova-livemig-ext Release Notes'
copyright = 'nova-livemig-ext developers'
author = 'nova-livemig-ext developers'

extensions = [
    'reno.sphinxext',
]

html_theme = 'alabaster'
html_static_path = []
exclude_patterns = ['_build']
