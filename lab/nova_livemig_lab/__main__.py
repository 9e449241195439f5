"""``python -m nova_livemig_lab``: the lab command line."""
import sys

from nova_livemig_lab.cli import main

sys.exit(main(sys.argv[1:]))
