"""``python -m activemri.cli`` (as ``torchrun ... -m activemri.cli recon train`` runs it)."""

import sys

from activemri.cli import main

if __name__ == "__main__":
    sys.exit(main())
