"""The ``homepage`` command line: one module per area registers its commands on ``app``."""

from __future__ import annotations

import errno
import inspect
import os
import sys
import threading
import traceback

import typer
from rich.console import Console
from rich.markup import escape

from homepage import log_setup
from homepage.cli.sigterm import install_sigterm_exit
from homepage.errors import HomepageError
from homepage.settings import unknown_variables

app = typer.Typer(
    name="homepage",
    help="Homepage row ranking service: data, models, replay evaluation and the API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
err = Console(stderr=True, emoji=False, soft_wrap=True)  # no emoji codes (a key such as hp:v:...); no cut lines in logs


# ``homepage --help``'s table of contents: each top-level command's panel, panels and commands in this order
COMMAND_PANELS: dict[str, tuple[str, ...]] = {
    "Data": ("ingest", "generate", "dataset"),
    "Models": ("config", "train", "artwork"),
    "Offline evaluation": ("replay", "backtest", "explain", "eval"),
    "Served logs": ("simulate-logs", "examination", "train-from-logs", "replay-logs", "logs"),
    "Serving": ("demo", "serve", "publish", "versions", "rollback", "gc"),
}
UNPLACED_PANEL = "Commands"  # last: a new command not yet given a panel above (a test fails on it)


def reflowed(doc: str) -> str:
    """A docstring as ``--help`` should show it: each paragraph on one line for the terminal to wrap.

    Typer's rich help keeps a paragraph's line breaks (but the first paragraph's on the command's own
    page), so a docstring wrapped at 100 columns came out as ragged lines; ````x```` becomes ```x```.
    """
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()).replace("``", "`") for p in paragraphs)


def _register() -> None:
    """Import every module of this package; each adds its commands to ``app``, then put them in their panels."""
    import importlib
    import pkgutil

    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{mod.name}")
    for entry in [*app.registered_commands, *(c for g in app.registered_groups for c in g.typer_instance.registered_commands)]:
        entry.help = reflowed(entry.help if entry.help is not None else inspect.getdoc(entry.callback) or "")
    place = {name: (panel, i) for panel, names in COMMAND_PANELS.items() for i, name in enumerate(names)}
    rank = {panel: i for i, panel in enumerate(COMMAND_PANELS)}
    # commands are listed before groups, a panel where its first entry is: both lists sort by (panel, position)
    for entries in (app.registered_commands, app.registered_groups):
        for entry in entries:
            entry.rich_help_panel = place.get(str(entry.name), (UNPLACED_PANEL, 0))[0]
        entries.sort(key=lambda e: (rank.get(e.rich_help_panel, len(rank)), place.get(str(e.name), ("", 0))[1]))


def main() -> None:
    """Console-script entry point: user errors become one line and exit code 2."""
    restore = install_sigterm_exit() if threading.current_thread() is threading.main_thread() else None
    try:
        _register()  # imports the commands' modules: an error there (no place for numba's cache) is one line too
        log_setup.install()  # a bad HOMEPAGE_LOG_* is a one-line error like any other setting
        for warning in unknown_variables(os.environ):
            err.print(f"warning: {escape(warning)}", style="yellow", highlight=False)
        code = app(standalone_mode=False, prog_name="homepage")
        # without standalone mode click returns a command's ``typer.Exit(n)`` code instead of exiting
        if isinstance(code, int) and code:
            sys.exit(code)
    except HomepageError as e:
        if getattr(e, "show_cause", False) and e.__cause__ is not None:  # a plug-in's failure: its traceback first
            traceback.print_exception(e.__cause__, file=sys.stderr)
        # escaped: a path or value in the message may hold brackets rich would read as markup
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except SystemExit:
        raise
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        # a full or read-only disk is the machine's state, not a bug: one line naming the file, as for other user errors
        where = f"{e.filename}: " if e.filename else ""
        why = "" if e.filename else " while writing the command's output (a full disk, a quota, a read-only file system or a file-size limit)"
        err.print(f"[bold red]error:[/] {escape(where + (e.strerror or str(e)) + why)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as e:
        if _is_click_error(e):  # usage errors: click's message and exit code
            e.show()  # type: ignore[attr-defined]
            sys.exit(e.exit_code)  # type: ignore[attr-defined]
        raise
    finally:
        if restore is not None:
            restore()


def _is_click_error(e: Exception) -> bool:
    """A ``ClickException`` of whichever click typer runs on (typer 0.29 vendors its own as ``typer._click``)."""
    return any(c.__name__ == "ClickException" for c in type(e).__mro__) and hasattr(e, "show")
