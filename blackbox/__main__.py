"""``python -m blackbox`` is the ``blackbox`` command."""

from blackbox.cli.entry import main

main()
