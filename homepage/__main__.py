"""``python3 -m homepage``: the same command line as the ``homepage`` script, for when scripts are not on PATH."""

from homepage.cli import main

main()
