"""``python -m chunkd.cli``."""

from chunkd.cli import main

main()
