"""`python -m spool`: the same as the `spool` command."""

from .cli import main

main()
