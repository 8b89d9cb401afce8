"""The frozen program's first module: the same entry point as the ``nibble`` console script."""

import sys

from app.launcher import main

if __name__ == "__main__":
    sys.exit(main())
