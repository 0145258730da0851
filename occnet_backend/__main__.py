import sys

from occnet_backend.cli import main

if __name__ == "__main__":
    sys.exit(main())
