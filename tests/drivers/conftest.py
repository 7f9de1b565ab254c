"""The driver tests' fixtures: defined in ``driver_helpers``, where mypy checks them (to mypy every
conftest.py is a module named ``conftest``: it checks only tests/conftest.py)."""

from driver_helpers import modbus_server  # noqa: F401 - a fixture
