"""`python -m imgidx`: the command line (the same as the `imgidx` script)."""

from imgidx.cli.app import main

main()
