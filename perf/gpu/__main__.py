"""``python -m perf.gpu``, the same as ``python -m perf gpu``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(allow_reexec=True))
