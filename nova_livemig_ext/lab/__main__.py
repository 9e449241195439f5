"""``python -m nova_livemig_ext.lab``: the lab command line."""
import sys

from nova_livemig_ext.lab.cli import main

sys.exit(main(sys.argv[1:]))
