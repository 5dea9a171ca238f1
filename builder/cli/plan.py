"""``pybuild explain --plan``: the table of a build before it runs.

The engine walks the Dockerfile as a build does, with ``BuildOptions.plan``: every
step's key and cache decision is made from the context and the store, and a step
that would run is reported with the reason the build will give, then skipped (its
result is unknown, so each step after it is ``parent-missed``).  Nothing runs, nothing
is written, no image is tagged; a base image missing from the store is pulled, as
the build would.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from builder.cli.verbs import key_values, open_store

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
    p.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE",
                   help="with --plan: as for build")


def plan_report(args: argparse.Namespace) -> Report:
    from builder.engine.dockerfile_locate import locate
    from builder.engine.engine import build
    from builder.engine.options import BuildOptions
    from builder.engine.progress import make_progress
    from builder.explain.report import Report
    from builder.platforms import parse_platform_flag

    platform = parse_platform_flag(args.platform, several="plan one platform at a time")
    source = locate(args.image, args.file, sys.stdin.buffer)
    options = BuildOptions(context=source.context, dockerfile=source.dockerfile,
                           dockerfile_text=source.text,
                           build_args=key_values(args.build_arg, "--build-arg"),
                           target=args.target, platform=platform, no_cache=args.no_cache,
                           no_cache_filter=args.no_cache_filter, plan=True)
    result = build(open_store(args), options, make_progress("quiet", quiet=True))
    return Report(None, result.steps, {})
