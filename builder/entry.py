"""The ``pybuild`` command's first step: a rebuild that a replay can answer
(``builder.replay``, its record in ``store.replays``) is answered before the command
line, the parser or the engine are loaded; anything else goes to ``builder.cli``."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    try:
        if _replayed(given):
            return 0
    except KeyboardInterrupt:
        print("pybuild: interrupted (SIGINT)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of the output went away, as builder.cli says
        return 141
    except OSError as err:  # printing the output failed (a full device): the CLI's line
        from builder.cli import exit_for_os_error

        return exit_for_os_error(err, given)
    from builder.cli import main as cli_main

    return cli_main(given)


def _replayed(argv: list[str]) -> bool:
    from builder import replay

    if not replay.may_be_build(argv) or not replay.can_play():
        return False
    from builder.store import replays

    try:
        key = replay.invocation(argv)
    except OSError:  # the working directory is gone: the build says what that means
        return False
    record = replays.load(replay.store_root(argv), key)
    if record is None or not replay.holds(record[0]):
        return False
    replay.play(record[1])
    return True
