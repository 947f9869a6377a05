"""``python -m captum_fvit …`` and ``torchrun … -m captum_fvit evaluate …``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
