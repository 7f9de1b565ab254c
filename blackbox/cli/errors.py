"""How every command fails: one line saying what is wrong and what to do, never a traceback.

The top-level group catches what a command lets escape. A usage mistake (an unknown option, a
bad value, a configuration that does not validate) exits 2; anything else (a missing file, an
unreachable service, a refused request) exits 1. ``blackbox --debug COMMAND`` (or
``BLACKBOX_DEBUG=1``) lets the exception through with its traceback, for a bug report.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer

try:
    from typer._click import exceptions as click  # recent typer vendors click: its exceptions are these
except ImportError:  # older typer runs on click itself
    from click import exceptions as click  # type: ignore[no-redef]
from typer.core import TyperGroup

EXIT_FAILED = 1
EXIT_USAGE = 2

_debug = False


def set_debug(enabled: bool) -> None:
    """Let unexpected exceptions through with their traceback (``--debug``)."""
    global _debug
    _debug = enabled or os.environ.get("BLACKBOX_DEBUG", "") not in ("", "0")


def describe(exc: BaseException) -> tuple[str, int]:
    """The one-line message and exit status for an exception a command did not handle itself."""
    from blackbox.config.load import ConfigError
    from blackbox.control_client import AgentUnreachable, CommandFailed
    from blackbox.seal import SealError

    if isinstance(exc, ConfigError):
        return f"{exc.issues[0]}" + (f" (and {len(exc.issues) - 1} more)" if len(exc.issues) > 1 else ""), EXIT_USAGE
    if isinstance(exc, SealError | AgentUnreachable | CommandFailed) or type(exc).__name__ == "BrokerUnavailable":
        return str(exc), EXIT_FAILED
    store_exit = getattr(exc, "exit_code", None)
    if type(exc).__name__ == "StoreUnavailable" and isinstance(store_exit, int):
        return str(exc), store_exit
    if isinstance(exc, OSError):
        return _os_error(exc), EXIT_FAILED
    sqlalchemy_message = _database_error(exc)
    if sqlalchemy_message:
        return sqlalchemy_message, EXIT_USAGE if sqlalchemy_message.startswith("not a database URL") else EXIT_FAILED
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (f"unexpected {type(exc).__name__}{': ' + text if text else ''} "
            "(run again with blackbox --debug … for the traceback, and report it)"), EXIT_FAILED


def _os_error(exc: OSError) -> str:
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        hint = {errno.ENOENT: " (check the path; relative paths in a configuration are relative to its folder)",
                errno.EACCES: " (run as the user that owns it, or fix its permissions)"}.get(exc.errno or 0, "")
        return f"{exc.filename}: {reason}{hint}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused: {reason} (is the service running, on that host and port?)"
    return reason


def _database_error(exc: BaseException) -> str | None:
    try:
        from sqlalchemy.exc import ArgumentError, DBAPIError
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return None
    if isinstance(exc, DBAPIError):
        first = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc).splitlines()[0]
        return f"database error: {first} (check the database URL and that the database is reachable)"
    if isinstance(exc, ArgumentError):
        return f"not a database URL: {exc} (give sqlite:///PATH or postgresql+psycopg://USER@HOST/DB)"
    return None


class BlackboxGroup(TyperGroup):
    """The top-level group: every error ends as one line on stderr and an exit status."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except click.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            typer.echo(f"error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            typer.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            exit_for(KeyboardInterrupt())
        except Exception as exc:
            exit_for(exc)
        sys.exit(rv if isinstance(rv, int) else 0)


def exit_for(exc: BaseException) -> NoReturn:
    """End the process as the top-level group does when a command lets ``exc`` escape: one line and
    an exit status (^C: "aborted"), or the exception itself with ``--debug``. Also used by
    :mod:`blackbox.cli.quick`, which runs commands without the group."""
    if isinstance(exc, KeyboardInterrupt):
        print("error: aborted (no answer to a question, or ^C)", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    if _debug:
        raise exc
    message, code = describe(exc)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)
