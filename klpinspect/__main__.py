"""``python3 -m klpinspect``."""

import sys

from .cli import main

sys.exit(main())
