"""Logging set-up: a run of the CLI cannot break logging for whatever runs after it in the process."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from blackbox.cli.main import app
from blackbox.logs import StderrHandler, setup_logging


@pytest.fixture(autouse=True)
def root_logger_restored() -> Iterator[None]:
    """These tests set up logging; leave the root logger as they found it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_record_logged_after_the_set_up_stream_was_closed_goes_to_the_current_stderr(
        capsys: pytest.CaptureFixture[str]) -> None:
    substitute = io.StringIO()
    with contextlib.redirect_stderr(substitute):
        setup_logging("INFO")
    substitute.close()  # what a test harness does with the stream it lent
    logging.getLogger("blackbox.test").warning("logged after the stream closed")
    err = capsys.readouterr().err
    assert "Logging error" not in err
    assert "logged after the stream closed" in err


def test_logging_after_a_cli_run_still_works() -> None:
    result = CliRunner().invoke(app, ["--log-level", "info", "keys", "--help"])
    assert result.exit_code == 0, result.output
    seen = io.StringIO()
    with contextlib.redirect_stderr(seen):
        logging.getLogger("blackbox.test").warning("after the CLI run")
    assert "after the CLI run" in seen.getvalue() and "Logging error" not in seen.getvalue()


def test_setting_up_again_replaces_its_own_handler_and_keeps_the_others(caplog: pytest.LogCaptureFixture) -> None:
    setup_logging("INFO")
    setup_logging("DEBUG")
    ours = [h for h in logging.getLogger().handlers if isinstance(h, StderrHandler)]
    assert len(ours) == 1
    assert logging.getLogger().level == logging.DEBUG
    logging.getLogger("blackbox.test").warning("seen by pytest's capture too")
    assert "seen by pytest's capture too" in caplog.text
