"""The ``pybuild`` command line: parse arguments, call the library, print one-line errors.

Each verb is declared once, as a ``Verb`` (name, help, arguments, handler) in the
module of its group: ``build``, ``images`` (the local store), ``registry``,
``explain`` (explain, check, debug).  ``_GROUP_OF`` below says which module holds
each verb, in ``--help`` order: a command imports only its own verb's module and
builds only its sub-parser (``--help`` imports them all).  Errors travel with their
own class up to ``_main``, the one place that prints them (``pybuild: ...``) and
turns them into an exit status.

Every heavy import happens inside the handler that needs it, so that a cached
rebuild and ``pybuild --help`` start fast.  ``pybuild -t app .`` means
``pybuild build -t app .``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from builder import __version__
from builder.cli.verbs import Verb
from builder.errors import PybuildError

__all__ = ["Verb", "all_verbs", "main"]

# verb -> the module of builder.cli that declares it (its ``VERBS``), in --help order
_GROUP_OF: dict[str, str] = {
    "build": "build", "explain": "explain", "images": "images", "inspect": "images",
    "history": "images", "tag": "images", "rmi": "images", "save": "images",
    "import": "images", "check": "explain", "debug": "explain", "load": "images",
    "df": "images", "prune": "images", "doctor": "images", "pull": "registry",
    "push": "registry", "login": "registry", "logout": "registry",
}


def _verb(name: str) -> Verb:
    # __import__ rather than importlib.import_module: only the former goes through
    # the import statement's path, which `python -X importtime` reports.
    module = __import__(f"builder.cli.{_GROUP_OF[name]}", fromlist=["VERBS"])
    verbs: tuple[Verb, ...] = module.VERBS
    return next(verb for verb in verbs if verb.name == name)


def all_verbs() -> list[Verb]:
    """Every verb, in ``--help`` order (imports every verb module)."""
    return [_verb(name) for name in _GROUP_OF]


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's, sized as argparse sizes it (COLUMNS, else the terminal, else 80,
    less 2) without importing ``shutil`` (and with it bz2 and lzma): argparse builds
    a formatter for every argument it declares, on every run."""

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ.get("COLUMNS", "0"))
        except ValueError:
            columns = 0
        if columns <= 0:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
            except (AttributeError, OSError, ValueError):
                columns = 80
        super().__init__(prog, width=columns - 2)


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser for verb ``only``, or for every verb (``--help``, no verb)."""
    parser = argparse.ArgumentParser(
        prog="pybuild", description="A daemonless Dockerfile image builder.",
        formatter_class=_HelpFormatter,
        epilog="'pybuild -t app .' is short for 'pybuild build -t app .'.")
    parser.add_argument("--version", action="version", version=f"pybuild {__version__}")
    parser.add_argument("--root", help="store directory (default /var/lib/pybuild as root, "
                        "~/.local/share/pybuild otherwise; env PYBUILD_ROOT)")
    parser.add_argument("--storage-driver", choices=("overlay", "fuse-overlayfs", "vfs", "auto"),
                        default="default", help="snapshot driver: overlay, vfs (a full copy "
                        "per step, for machines without overlay) or auto (overlay if it "
                        "mounts); default: overlay as root, rootless the store's first auto")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for verb in [_verb(only)] if only else all_verbs():
        verb.arguments(subparsers.add_parser(verb.name, help=verb.help,
                                             formatter_class=_HelpFormatter))
    return parser


def _with_default_verb(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` with ``build`` inserted when no verb is given (``pybuild -t app .``),
    and the verb it runs (None for ``--help``/``--version`` before any verb)."""
    takes_value = {"--root", "--storage-driver"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help", "--version"):
            return argv, None
        if arg in takes_value:
            i += 2
            continue
        if arg.startswith("--") and "=" in arg.split(" ")[0] and arg.split("=")[0] in takes_value:
            i += 1
            continue
        if arg == "--debug":
            i += 1
            continue
        if arg in _GROUP_OF:
            return argv, arg
        return [*argv[:i], "build", *argv[i:]], "build"
    return argv, None


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread wherever it is, as Ctrl-C raises
    KeyboardInterrupt; a BaseException, so that no ``except Exception`` on the
    way out swallows it and every ``finally`` cleans up."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command.  SIGINT and SIGTERM stop it wherever it is (parsing,
    hashing, extracting, talking to a registry): the exception unwinds through
    the usual cleanup and the exit status is 128 + the signal, as a shell's.
    The build engine catches them itself while steps run (BuildInterrupted)."""
    restore = _stop_on_sigterm()
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("pybuild: interrupted (SIGINT)", file=sys.stderr)
        return 130
    except _Terminated:
        print("pybuild: interrupted (SIGTERM)", file=sys.stderr)
        return 143
    finally:
        restore()


def _stop_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM raise _Terminated; returns what restores the previous handler
    (main() also runs inside test processes).  Python runs the handler between
    bytecodes, so no step of a command may sit in one unbounded C call."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_term(signum: int, frame: object) -> None:
        raise _Terminated()
    previous = signal.signal(signal.SIGTERM, on_term)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)
    return restore


def _main(argv: Sequence[str] | None) -> int:
    """The one place that prints an error: a ``PybuildError`` as one line with its
    own ``exit_code``; a full disk as one line; anything else is a bug (traceback)."""
    given = list(sys.argv[1:] if argv is None else argv)
    raw, verb = _with_default_verb(given)
    parser = _parser(verb)
    args = parser.parse_args(raw) if raw else None
    if args is None or args.verb is None:  # no verb and no context: `pybuild --root R`
        _parser().print_help()
        return 2
    args.invocation = given  # what a replay of this build is found by (builder.replay)
    chosen = _verb(args.verb)
    try:
        if os.geteuid() != 0 and chosen.opens_store(args):
            from builder.cli.verbs import enter_user_namespace

            enter_user_namespace(args)
        return chosen.run(args)
    except PybuildError as err:
        if args.debug:
            raise
        from builder.textsafe import printable  # messages quote names from images, files

        print(f"pybuild: {printable(str(err), multiline=True)}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        return 141
    except Exception as err:
        message = _out_of_space(args.root, err)
        if message is None:
            raise
        print(f"pybuild: {message}", file=sys.stderr)
        return 1


def exit_for_os_error(err: OSError, argv: list[str]) -> int:
    """A replay that could not print (``builder.entry``): the line and status a build
    gives for the same error; any other OSError is a bug, raised."""
    message = _out_of_space(_parser().parse_known_args(argv)[0].root, err)
    if message is None:
        raise err
    print(f"pybuild: {message}", file=sys.stderr)
    return 1


def _out_of_space(root: str | None, err: Exception) -> str | None:
    """One line for a full disk (catalogue REL-4), wherever the write failed; else None.

    Whatever was being written is already undone by then (temp dirs and files are
    removed on the way out, a layer or blob is only registered once complete).
    """
    import errno
    import sqlite3

    full = (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)) or \
        (isinstance(err, sqlite3.OperationalError) and "disk is full" in str(err))
    if not full:
        return None
    from builder.store import default_root

    filename = err.filename if isinstance(err, OSError) else None
    where = str(filename or root or default_root())
    try:
        st = os.statvfs(where if os.path.exists(where) else os.path.dirname(where) or ".")
        free = f" ({st.f_bavail * st.f_frsize // (1 << 20)} MiB free of " \
               f"{st.f_blocks * st.f_frsize // (1 << 20)} MiB)"
    except OSError:
        free = ""
    quota = isinstance(err, OSError) and err.errno == errno.EDQUOT
    what = "quota exceeded" if quota else "no space left on device"
    return (f"{what} on the filesystem holding {where}{free}: nothing partial was kept; "
            "free space (e.g. 'pybuild prune') and run it again")
