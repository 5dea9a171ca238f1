"""The verbs that read rather than build: ``explain``, ``check``, ``debug``.

``explain`` renders what the store recorded about each step of a build
(``builder.explain``); ``check`` and ``debug parse`` read a Dockerfile only.
"""

from __future__ import annotations

import argparse
import sys

from builder.cli.verbs import Verb, open_store, resolve_image
from builder.errors import UsageError


def _explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="image name or ID")
    p.add_argument("--show-values", action="store_true",
                   help="next to an argument that changed, show its value in the image "
                   "(its history); the store and cache exports keep only digests")


def _explain(args: argparse.Namespace) -> int:
    from builder.explain.records import load_build
    from builder.explain.render import render

    store = open_store(args)
    image_id = resolve_image(store, args.image)
    steps = load_build(store, image_id)
    if steps is None:
        raise UsageError(f"image {args.image!r} was not built by pybuild here: nothing to explain")
    from builder.explain.waste import wasted_bytes

    top = store.image_top_chain(image_id)
    store.unpack(top)
    chain = store.chain(top)
    waste = dict(zip((r.chain_id for r in chain),
                     wasted_bytes([store.layer_dir(r.chain_id) for r in chain]), strict=True))
    for step in steps:
        step["wasted"] = waste.get(step.get("layer") or "", 0)
    values = None
    if args.show_values:  # the image's own values only: the store keeps digests
        from builder.explain.values import image_values

        values = image_values(store.image_config(image_id))
    print(render(image_id, steps, values))
    return 0


def _check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", default="Dockerfile")


def _check(args: argparse.Namespace) -> int:
    from builder.dockerfile import lint, parse_file
    from builder.textsafe import printable

    warnings = lint(parse_file(args.path))
    for warning in warnings:
        print(printable(f"{args.path}:{warning.line}: {warning.rule}: {warning.message}"))
    return 1 if warnings else 0


def _debug_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=("parse",))
    p.add_argument("path")


def _debug(args: argparse.Namespace) -> int:
    from pathlib import Path

    from builder.dockerfile import debug_parse

    try:
        text = Path(args.path).read_bytes()
    except OSError as err:
        raise UsageError(f"{args.path}: {err.strerror}") from None
    from builder.textsafe import printable  # the dump quotes the file's own bytes

    sys.stdout.write(printable(debug_parse(text, args.path), multiline=True) + "\n")
    return 0


EXPLAIN = Verb("explain", "show what each step of a built image did and why it was cached",
               _explain_arguments, _explain)
CHECK = Verb("check", "lint a Dockerfile with BuildKit's rules", _check_arguments, _check)
DEBUG = Verb("debug", "debugging aids: 'debug parse FILE' prints BuildKit's parse dump",
             _debug_arguments, _debug)
