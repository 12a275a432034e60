"""`python -m ichviewer` runs the command line."""

import sys

from ichviewer.cli import main

if __name__ == "__main__":
    sys.exit(main())
