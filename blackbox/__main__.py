"""``python -m blackbox`` is the ``blackbox`` command."""

from blackbox.cli.main import app

app()
