"""``pybuild explain --plan``: the table of a build before it runs.

The engine walks the Dockerfile as a build does, with ``BuildOptions.plan``: every
step's key and cache decision is made from the context and the store, and a step
that would run is reported with the reason the build will give, then skipped (its
result is unknown, so each step after it is ``parent-missed``).  Nothing runs, no
layer or image is written, no image is tagged.  As the build would, it pulls a base
image missing from the store, asks a git server which commit an ``ADD`` ref names, and
records the context's stat cache and the manifest of a large COPY source.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from builder.cli.verbs import key_values, open_store
from builder.errors import UsageError

if TYPE_CHECKING:  # the parser is built for every verb: nothing heavy at import
    from builder.explain.report import Report


def plan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plan", action="store_true",
                   help="predict the table for building CONTEXT (the positional argument), "
                   "running nothing: which steps hit the cache, and why the others miss")
    p.add_argument("-f", "--file", help="with --plan: the Dockerfile (default: CONTEXT's)")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V",
                   help="with --plan: as for build")
    p.add_argument("--target", help="with --plan: the stage to build (default: the last)")
    p.add_argument("--platform", action="append", metavar="OS/ARCH[/VARIANT]",
                   help="with --plan: the platform to build for")
    p.add_argument("--no-cache", action="store_true", help="with --plan: as for build")
    p.add_argument("--secret", action="append", default=[], metavar="id=ID[,...]",
                   help="with --plan: a secret the build will get (only its id is read)")
    p.add_argument("--cache-from", action="append", default=[],
                   metavar="type=local,src=DIR|type=registry,ref=REF",
                   help="with --plan: as for build (its entry list is read; no layer is "
                   "fetched)")
    p.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE",
                   help="with --plan: as for build")


def _secret_ids(specs: list[str]) -> dict[str, str]:
    """The ids of ``--secret`` flags, read by the build's own parser: a plan needs to
    know which secrets the build will have (a required one missing is an error), never
    their contents."""
    from builder.engine.buildx_flags import parse_secret

    return {parse_secret(spec).id: "" for spec in specs if spec}


def check_not_plan(args: argparse.Namespace) -> None:
    """Plan-only flags given to explain IMAGE: a usage error, not silently ignored."""
    given = [flag for flag, value in (("-f", args.file), ("--build-arg", args.build_arg),
                                      ("--target", args.target), ("--platform", args.platform),
                                      ("--no-cache", args.no_cache),
                                      ("--no-cache-filter", args.no_cache_filter),
                                      ("--cache-from", args.cache_from),
                                      ("--secret", args.secret)) if value]
    if given:
        raise UsageError(f"{', '.join(given)}: only with --plan (explain IMAGE reads what "
                         "the build recorded)")


def plan_report(args: argparse.Namespace) -> Report:
    from builder.cli.build import cache_spec
    from builder.engine.dockerfile_locate import locate
    from builder.engine.engine import build
    from builder.engine.options import BuildOptions
    from builder.engine.progress import make_progress
    from builder.explain.report import Report
    from builder.platforms import parse_platform_flag

    for flag, given in (("--against", args.against), ("--show-values", args.show_values)):
        if given:
            raise UsageError(f"{flag} explains a built image; --plan explains a build that "
                             "has not run")
    platform = parse_platform_flag(args.platform, several="plan one platform at a time")
    cache_from = [cache_spec(spec, "src", "--cache-from") for spec in args.cache_from]
    source = locate(args.image, args.file, sys.stdin.buffer)
    options = BuildOptions(context=source.context, dockerfile=source.dockerfile,
                           dockerfile_text=source.text,
                           build_args=key_values(args.build_arg, "--build-arg"),
                           target=args.target, platform=platform, no_cache=args.no_cache,
                           no_cache_filter=args.no_cache_filter, plan=True,
                           secrets=_secret_ids(args.secret),
                           cache_from=[c["src"] for c in cache_from if c["type"] == "local"],
                           cache_from_refs=[c["ref"] for c in cache_from
                                            if c["type"] == "registry"])
    result = build(open_store(args), options, make_progress("quiet", quiet=True))
    return Report(None, result.steps, {})
