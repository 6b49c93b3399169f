"""`python -m roboloop.cli ...` runs the `roboloop` command."""

from roboloop.cli import main

main()
