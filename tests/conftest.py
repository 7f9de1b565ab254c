"""Puts this folder on the import path, so that every test can use the shared helper modules
(``services``, ``waiting``, ``agent_helpers``…) whichever subset of the suite runs."""
