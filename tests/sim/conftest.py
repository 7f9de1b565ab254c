"""The simulator tests' fixtures: defined in ``sim_helpers``, where mypy checks them (to mypy every
conftest.py is a module named ``conftest``: it checks only tests/conftest.py)."""

from sim_helpers import default_batch  # noqa: F401 - a fixture
