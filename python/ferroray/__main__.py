"""``python -m ferroray run script.py [args]``: runs a program written for Ray,
unchanged, on ferroray; ``python -m ferroray start|stop|status|list ...``
manages a cluster (see ``ferroray.run``)."""

import sys

from ferroray.run import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
