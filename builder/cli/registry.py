"""The registry verbs: ``pull``, ``push``, ``login``, ``logout``.

Each parses its reference here and hands the work to ``builder.registry``;
``push_image`` is also what ``pybuild build --push`` calls.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from builder.cli.verbs import Verb, never, open_store, quiet_flag, registry_arguments, resolve_image
from builder.errors import UsageError

if TYPE_CHECKING:
    from builder.image.manifest import ImageAnnotations
    from builder.store import Store


def _pull_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("reference", help="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", default=None, help="os/arch[/variant] (default: this host)")
    quiet_flag(p)
    registry_arguments(p)


def _pull(args: argparse.Namespace) -> int:
    from builder.platforms import Platform, parse_platform_flag
    from builder.registry.progress import TransferProgress
    from builder.registry.pull import pull
    from builder.registry.reference import parse_reference

    ref = parse_reference(args.reference)
    platform = parse_platform_flag(args.platform) or Platform.host()
    progress = TransferProgress("quiet" if args.quiet else "auto")
    pulled = pull(open_store(args), ref, platform=platform,
                  insecure=tuple(args.insecure_registry), progress=progress)
    print(pulled.image_id if args.quiet else f"{ref.familiar()}: {pulled.manifest_digest}")
    return 0


def _push_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="image name or ID in the store")
    p.add_argument("reference", nargs="?", help="where to push (default: the image name)")
    p.add_argument("--compression", choices=("gzip", "zstd"), default="gzip")
    quiet_flag(p)
    registry_arguments(p)


def push_image(store: Store, image_id: str, name: str, compression: str,
               insecure: list[str], mode: str, quiet: bool = False,
               annotations: ImageAnnotations | None = None) -> str:
    """Push ``image_id`` as ``name``, showing progress as ``mode``; the manifest digest."""
    from builder.registry.progress import TransferProgress
    from builder.registry.push import push
    from builder.registry.reference import parse_reference

    ref = parse_reference(name)
    progress = TransferProgress("quiet" if quiet else mode, verb="push")
    return push(store, image_id, ref, compression=compression, insecure=tuple(insecure),
                progress=progress, annotations=annotations)


def _push(args: argparse.Namespace) -> int:
    store = open_store(args)
    image_id = resolve_image(store, args.image)
    members = None if args.image.startswith("sha256:") else store.index_of(args.image)
    if members is not None:  # built for several platforms: the index, as build --push
        from builder.cli.multibuild import push_members

        print(push_members(store, members, args.reference or args.image,
                           attest_as=args.image, compression=args.compression,
                           insecure=args.insecure_registry,
                           mode="quiet" if args.quiet else "auto"))
        return 0
    print(push_image(store, image_id, args.reference or args.image, args.compression,
                     args.insecure_registry, "auto", quiet=args.quiet))
    return 0


def _login_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("registry", nargs="?", default="docker.io")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password", help="prefer --password-stdin")
    p.add_argument("--password-stdin", action="store_true")
    registry_arguments(p)


def _registry_host(text: str) -> str:
    """``docker.io``, ``localhost:5000``...: the registry part of a reference to it."""
    from builder.registry.reference import parse_reference

    return parse_reference(f"{text}/x").registry


def _login(args: argparse.Namespace) -> int:
    from builder.registry.login import check_login, read_credentials, remember

    registry = _registry_host(args.registry)
    creds = read_credentials(args.username, args.password, args.password_stdin, sys.stdin)
    check_login(registry, creds, args.insecure_registry)
    path = remember(registry, creds)
    print(f"Login credentials for {registry} saved in {path}")
    return 0


def _logout_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("registry", nargs="?", default="docker.io")


def _logout(args: argparse.Namespace) -> int:
    from builder.registry.login import forget

    registry = _registry_host(args.registry)
    if not forget(registry):
        raise UsageError(f"not logged in to {registry} (pybuild keeps no credentials for it)")
    print(f"Removed login credentials for {registry}")
    return 0


PULL = Verb("pull", "pull an image from a registry", _pull_arguments, _pull)
PUSH = Verb("push", "push an image to a registry", _push_arguments, _push)
LOGIN = Verb("login", "store credentials for a registry", _login_arguments, _login, never)
LOGOUT = Verb("logout", "forget the credentials pybuild stored for a registry",
              _logout_arguments, _logout, never)
VERBS = (PULL, PUSH, LOGIN, LOGOUT)
