"""`python -m spool.cli`: the same as the `spool` command."""

from . import main

main()
