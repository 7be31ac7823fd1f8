"""``python -m mongopersist``: the ``mongopersist`` command line."""
import sys

from mongopersist.cli import main

if __name__ == '__main__':
    sys.exit(main())
