"""What every command shares: error handling at the edge, output options, the store."""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from .. import output
from ..errors import BepbuildError
from ..store import Store

F = TypeVar("F", bound=Callable[..., Any])


class State:
    debug = False


state = State()

OutputOpt = Annotated[str, typer.Option("--output", "-o", help="Output format: table, json, yaml, tsv or none.")]
QueryOpt = Annotated[str | None, typer.Option("--query", help="JMESPath query applied to the result.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a field: key.sub=value (repeatable), as az does."),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
NoWaitOpt = Annotated[
    bool, typer.Option("--no-wait", help="Accepted for az compatibility; local operations finish at once.")
]


def new_app(help_text: str) -> typer.Typer:
    return typer.Typer(help=help_text, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def guarded(fn: F) -> F:
    """Turn bepbuild errors into one line on stderr and the right exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BepbuildError as e:
            fail(e.line(), e.exit_code, e)
        except KeyboardInterrupt:
            fail("interrupted", 130, None)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as e:  # a bug: still one line, the traceback under --debug
            fail(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)", 1, e)

    return wrapper  # type: ignore[return-value]


def fail(message: str, code: int, exc: BaseException | None) -> None:
    if state.debug and exc is not None:
        traceback.print_exception(exc)
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    raise typer.Exit(code)


def one_line(message: str) -> str:
    """`message` with every non-printable character escaped: a YAML key or a file name quoted in an
    error may hold a newline or another line separator, and an error is one line."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def note(message: str) -> None:
    sys.stderr.write(f"{message}\n")


def emit(data: Any, fmt: str = "json", query: str | None = None, kind: str | None = None) -> None:
    """Print `data` as `-o` asks; `kind` names the record type for the columns of `-o table`."""
    text = output.render(data, fmt, query, kind)
    if text:
        sys.stdout.write(text + "\n")


def store() -> Store:
    return Store.open()


def confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        fail(f"{question} Pass --yes to confirm when not running interactively.", 2, None)
    if not typer.confirm(question):
        raise typer.Exit(1)
