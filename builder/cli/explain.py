"""The verbs that read rather than build: ``explain``, ``check``, ``debug``.

``explain`` renders what the store recorded about each step of a build
(``builder.explain``); ``check`` and ``debug parse`` read a Dockerfile only.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from builder.cli.verbs import Verb, never, open_store, resolve_image
from builder.errors import UsageError

if TYPE_CHECKING:
    from builder.explain.report import Report
    from builder.store import Store


def _explain_arguments(p: argparse.ArgumentParser) -> None:
    from builder.cli.plan import plan_arguments

    p.add_argument("image", metavar="IMAGE|CONTEXT",
                   help="image name or ID; with --plan, the build context")
    p.add_argument("--format", choices=("text", "json", "yaml"), default="text",
                   help="text (a table, the default), or json/yaml (the schema in "
                   "docs/explain.md)")
    p.add_argument("--show-values", action="store_true",
                   help="next to an argument that changed, show its value in the image "
                   "(its history); the store and cache exports keep only digests")
    p.add_argument("--against", metavar="IMAGE",
                   help="explain each step against this image's build instead of the "
                   "previous build of the same step")
    plan_arguments(p)


def _explain(args: argparse.Namespace) -> int:
    values = None
    if args.plan:
        from builder.cli.plan import plan_report

        report = plan_report(args)
    else:
        from builder.cli.plan import check_not_plan

        check_not_plan(args)
        store = open_store(args)
        report = _image_report(args, store)
        if args.show_values:  # the image's own values only: the store keeps digests
            from builder.explain.values import image_values

            values = image_values(store.image_config(report.image_id or ""))
    if args.format == "text":
        from builder.explain.render import render

        print(render(report, values))
    else:
        from builder.explain.document import to_json, to_yaml

        print((to_json if args.format == "json" else to_yaml)(report, values))
    return 0


def _image_report(args: argparse.Namespace, store: Store) -> Report:
    from builder.explain.report import build_report

    image_id = resolve_image(store, args.image)
    report = build_report(store, image_id)
    if report is None:
        raise UsageError(f"image {args.image!r} was not built by pybuild here: nothing to explain")
    if args.against:
        from builder.explain.against import explain_against

        baseline = resolve_image(store, args.against)
        if not explain_against(store, report, baseline):
            raise UsageError(f"image {args.against!r} was not built by pybuild here: "
                             "no baseline to explain against")
    return report


def _check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", default=".",
                   help="a Dockerfile, or a directory (its Dockerfile, as build finds it)")


def _check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from builder.dockerfile import parse_file
    from builder.lint.rules import lint_dockerfile
    from builder.textsafe import printable

    path = args.path
    if Path(path).is_dir():  # the Dockerfile build would read there
        from builder.engine.dockerfile_locate import default_dockerfile

        path = str(default_dockerfile(Path(path)))
    warnings = lint_dockerfile(parse_file(path)).warnings
    for warning in warnings:
        print(printable(f"{path}:{warning.line}: {warning.rule}: {warning.message}"))
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
CHECK = Verb("check", "lint a Dockerfile (or a directory's) with BuildKit's rules and "
             "pybuild's layer-hygiene rules (docs/lint.md)", _check_arguments, _check, never)
DEBUG = Verb("debug", "debugging aids: 'debug parse FILE' prints BuildKit's parse dump",
             _debug_arguments, _debug, never)
VERBS = (EXPLAIN, CHECK, DEBUG)
