"""What a verb is, and the helpers several verbs share.

A verb is declared once, as a ``Verb``: its name, its one-line help, what it adds
to its sub-parser and the function that runs it.  The modules beside this one
each declare a group of verbs; ``builder.cli`` lists them in ``--help`` order.
A ``NamedTuple`` rather than a dataclass: ``pybuild --help`` must not pay for
importing ``dataclasses``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from builder.errors import UsageError

if TYPE_CHECKING:  # the store (SQLite, layers) is imported by the verbs that open it
    from builder.store import Store


def always(args: argparse.Namespace) -> bool:
    return True


def never(args: argparse.Namespace) -> bool:
    return False


class Verb(NamedTuple):
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    # Whether this invocation opens the store, so that a user other than root runs
    # it in a user namespace (builder.userns): every verb but a few that never do.
    opens_store: Callable[[argparse.Namespace], bool] = always


def enter_user_namespace(args: argparse.Namespace) -> None:
    """Rootless mode: check the store's path as this user (inside, root-owned parents
    look like anyone's: ``perms.vouch``), then become root of a user namespace."""
    from builder import userns
    from builder.store import perms
    from builder.store.names import default_root

    perms.vouch(Path(os.path.abspath(args.root or default_root())))
    wanted = userns.plan()
    userns.enter(wanted)
    if not wanted.full:
        print(f"pybuild: note: rootless with one id, as {wanted.why_single}: only files "
              "owned by root can be built (docs/rootless.md)", file=sys.stderr)


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """For a verb that takes none (``df``)."""


def image_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image name or ID")


def quiet_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true")


def registry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--insecure-registry", action="append", default=[],
                        metavar="HOST[:PORT]",
                        help="allow plain HTTP to this registry (localhost always may)")


def open_store(args: argparse.Namespace) -> Store:
    import builder.cache.records  # noqa: F401 - registers its clean-up of old stores
    from builder.store import Store

    return Store(args.root)


def resolve_image(store: Store, name: str) -> str:
    """The image ID a name or ID prefix means, or a usage error naming the store."""
    image_id = store.resolve_image(name)
    if image_id is None:
        raise UsageError(f"image {name!r} not found in the local store ({store.root})")
    return image_id


def key_values(values: Sequence[str], flag: str) -> dict[str, str]:
    """``K=V`` flags (``--build-arg``, ``--label``); a bare ``K`` takes the environment's."""
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not key:
            raise UsageError(f"{flag} {value!r}: expected KEY=VALUE")
        out[key] = val if sep else os.environ.get(key, "")
    return out
