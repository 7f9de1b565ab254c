"""The ``blackbox`` command line: one module per command group."""
