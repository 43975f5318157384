"""``python3 -m klpinspect``."""

from .cli import run

run()
