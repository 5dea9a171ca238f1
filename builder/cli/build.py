"""``pybuild build`` (the default verb): turn its flags into ``BuildOptions``, build,
then write the outputs, push, and write ``--iidfile`` / ``--metadata-file``.

Flags are buildx's; their parsing lives in ``builder.engine.buildx_flags`` and
``builder.engine.options``, imported only once a build is asked for.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from builder.cli.verbs import Verb, key_values, open_store, registry_arguments
from builder.errors import PybuildError, UsageError

if TYPE_CHECKING:
    from builder.engine.options import BuildOptions, BuildResult, Output
    from builder.engine.progress import Progress
    from builder.image.manifest import ImageAnnotations
    from builder.platforms import Platform
    from builder.replay import Recorder
    from builder.store import Store


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("context", help="context directory, or - for a Dockerfile on stdin")
    p.add_argument("-t", "--tag", action="append", default=[], help="name[:tag] for the image")
    p.add_argument("-f", "--file", help="Dockerfile, or - for stdin (default: CONTEXT/"
                   "Dockerfile, else dockerfile, else Containerfile)")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    p.add_argument("--target", help="build this stage (default: the last)")
    p.add_argument("--check", action="store_true", help="only lint the Dockerfile (BuildKit's "
                   "rules and pybuild's, docs/lint.md): build nothing, exit 1 on findings")
    _cache_arguments(p)
    p.add_argument("--pull", action="store_true", help="pull FROM images even if stored")
    p.add_argument("--push", action="store_true", help="push the tagged image(s) when done")
    registry_arguments(p)
    p.add_argument("--reproducible", action="store_true",
                   help="set SOURCE_DATE_EPOCH from the newest context file if unset")
    _run_arguments(p)
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument("--secret", action="append", default=[], metavar="id=ID[,src=PATH|env=VAR]",
                   help="a secret for RUN --mount=type=secret (id=X alone: env X, else file X)")
    p.add_argument("--build-context", action="append", default=[],
                   metavar="NAME=DIR|docker-image://REF|oci-layout://DIR[:TAG|@DIGEST]",
                   help="what FROM NAME / COPY --from=NAME / --mount from=NAME use")
    _output_arguments(p)


def _cache_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    p.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE",
                   help="do not use the build cache for this stage (several allowed)")
    p.add_argument("--cache-from", action="append", default=[],
                   metavar="type=local,src=DIR|type=registry,ref=REF",
                   help="reuse a cache exported with --cache-to (several allowed)")
    p.add_argument("--cache-to", metavar="type=local,dest=DIR|type=registry,ref=REF[,mode=max]",
                   action="append", default=[],
                   help="export the build cache (mode=max: every stage's steps); one per "
                   "build (buildx takes several)")


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--network", choices=("default", "host", "none"), default="default",
                   help="RUN's network: default (a namespace of its own, online through "
                        "slirp4netns), host (the host's: not isolated), none (only lo)")
    p.add_argument("--add-host", action="append", default=[], metavar="HOST:IP", help="RUN's hosts")
    p.add_argument("--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]")
    p.add_argument("--shm-size", metavar="SIZE", help="RUN's /dev/shm size (default 64m)")


def _output_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotation", action="append", default=[],
                   metavar="[TYPE[PLATFORM]:]KEY=VALUE", help="annotate the exported manifest "
                   "(TYPE manifest, the default, or manifest-descriptor)")
    p.add_argument("--load", action="store_true",
                   help="accepted: every build goes to the local store (-o type=docker)")
    p.add_argument("--platform", action="append", metavar="OS/ARCH[/VARIANT]",
                   help="the platform to build for (default: this host's)")
    p.add_argument("--progress", choices=("auto", "tty", "plain", "quiet", "json", "rawjson"),
                   default="auto", help="json: pybuild's events; rawjson: BuildKit's "
                   "SolveStatus, as buildx prints it (docs/progress.md)")
    p.add_argument("-o", "--output", action="append", default=[],
                   metavar="DIR|-|type=docker|oci|local|tar,dest=PATH[,preserve=true]")
    p.add_argument("--compression", choices=("gzip", "zstd", "none"), default="gzip")
    p.add_argument("--iidfile", help="write the image ID to this file")
    p.add_argument("--metadata-file", help="write build metadata (JSON) to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    p.add_argument("--provenance", metavar="mode=min|max[,builder-id=URI]",
                   help="attach SLSA provenance to each image in an index (default with "
                   "several platforms: mode=min; false: none; docs/multi-platform.md)")


def _build(args: argparse.Namespace) -> int:
    if args.check:  # docker build --check: no root, no store, nothing built
        return _check_only(args)
    from builder.platforms import Platform, parse_platforms

    platforms = parse_platforms(args.platform)
    platform = platforms[0] if platforms else None
    from builder.engine import buildx_flags as bx
    from builder.engine.options import parse_output
    from builder.engine.progress import make_progress

    given = [parse_output(spec) for spec in args.output if spec]
    outputs = bx.check_outputs(given)   # with defaults; the index path checks ``given``
    if len(platforms) > 1 or args.provenance not in (None, "false", "0"):
        # An image index: several platforms, or provenance attached (min by default
        # with several, as buildx; for one platform only when asked).
        from builder.cli.multibuild import build_several, refuse_unsupported
        from builder.image.provenance import Request, parse_flag

        provenance = parse_flag(args.provenance, default=Request())
        refuse_unsupported(args, given, several=len(platforms) > 1)
        return build_several(args, list(platforms) or [None], _options(args, None, outputs),
                             outputs, provenance)
    annotations = bx.image_annotations(bx.parse_annotations(args.annotation,
                                                            str(platform or Platform.host())))
    recorder = _start_recording(args)  # before the Dockerfile is located
    try:
        options = _options(args, platform, outputs)
        progress = make_progress(args.progress, quiet=args.quiet)
        return _run_build(args, options, progress, outputs, annotations, recorder)
    finally:
        _stop_recording(recorder)


def _run_build(args: argparse.Namespace, options: BuildOptions, progress: Progress,
               outputs: list[Output], annotations: ImageAnnotations,
               recorder: Recorder | None) -> int:
    from builder.engine.engine import build
    from builder.engine.outputs import write_outputs

    store = open_store(args)
    if recorder is not None:
        from builder.store import replays

        recorder.generation = replays.generation(store.db)
    check_tags(store, options.tags)
    from builder.lint.gate import lint_before_build  # a store lookup when unchanged

    text, path = dockerfile_text(options.dockerfile_text, options.dockerfile)
    if recorder is not None and text is not None:
        recorder.file(path, text)  # what lint read: the build reads it again
    lint = lint_before_build(store, text, path, options.build_args, progress.lint_line)
    try:
        result = build(store, options, progress)
    except PybuildError:  # buildx prints the warnings of a failed build too
        lint.finish_failed(progress.lint_line)
        raise
    finally:
        progress.close()  # the tty timer stops, also on Ctrl-C
    write_outputs(store, result.image_id, result.tags, outputs, args.compression, annotations,
                  driver=options.storage_driver)  # resolved by build(): "auto" probed once
    if args.provenance in ("false", "0"):  # none for this build, whatever an earlier kept
        store.forget_provenance(result.image_id, result.tags)
    if args.push:
        if not result.tags:
            raise UsageError("--push needs a name: add -t REGISTRY/NAME:TAG")
        from builder.cli.registry import push_image

        for tag in result.tags:
            push_image(store, result.image_id, tag, args.compression, args.insecure_registry,
                       transfer_mode(args.progress), quiet=args.quiet,
                       annotations=annotations)
    _write_files(args, store, result, outputs, annotations)
    if args.quiet:
        print(result.image_id)
    else:
        progress.message(f"writing image {result.image_id}"
                         + "".join(f"\nnaming to {t}" for t in result.tags))
    lint.finish(store, result.image_id, result.steps, progress.lint_line)
    if recorder is not None:
        _keep_record(store, progress, result, options.build_args, recorder)
    return 0


def _start_recording(args: argparse.Namespace) -> Recorder | None:
    """Record this build for a replay (``builder.replay``) unless a flag makes it
    depend on more than a replay checks."""
    if args.push or args.output or args.iidfile or args.metadata_file or args.cache_from \
            or args.cache_to or args.secret or args.build_context or args.pull \
            or args.no_cache or args.no_cache_filter or args.reproducible \
            or "-" in (args.context, args.file) or args.invocation is None:
        return None
    from builder import replay

    return replay.start(args.invocation)


def _stop_recording(recorder: Recorder | None) -> None:
    if recorder is not None:
        from builder import replay

        replay.stop(recorder)


def _keep_record(store: Store, progress: Progress, result: BuildResult,
                 build_args: dict[str, str], recorder: Recorder) -> None:
    """Keep the record of a build that ran nothing, printed plain lines, and read
    nothing a replay cannot check (``recorder.refused``)."""
    from builder import replay
    from builder.engine.progress import Progress

    fully_cached = all(step.cached or step.config_only for step in result.steps)
    if not fully_cached or recorder.refused or type(progress) is not Progress \
            or recorder.generation is None:
        return
    checks, output = replay.record_of(recorder)
    # A value given to --build-arg is never stored in clear (its digest is, in keys):
    # an output that shows one (an expanded FROM, a warning) is not recorded.
    if any(len(value) >= 4 and value.encode(errors="surrogateescape") in output
           for value in build_args.values()):
        return
    import sqlite3

    from builder.store import replays

    try:
        replays.save(store.db, replay.invocation(recorder.argv), recorder.generation,
                     checks, output)
    except (OSError, sqlite3.Error):
        # No working directory, or a store that cannot take the record now (locked by
        # another process past the timeout, full): a record is only a shortcut, and
        # the build it would replay has succeeded.
        return


def transfer_mode(mode: str) -> str:
    """A push's layer progress: never plain lines inside a JSON stream."""
    return "quiet" if mode in ("json", "rawjson") else mode


def dockerfile_text(text: bytes | None, path: Path | None) -> tuple[bytes | None, str]:
    """The Dockerfile's bytes and the name findings quote (None: unreadable; the
    build then says why)."""
    if text is not None:
        return text, "Dockerfile"
    try:
        return (path or Path("Dockerfile")).read_bytes(), str(path)
    except OSError:
        return None, str(path)


def _check_only(args: argparse.Namespace) -> int:
    from builder.engine.dockerfile_locate import locate
    from builder.lint.gate import check_build

    source = locate(args.context, args.file, sys.stdin.buffer)
    text, path = dockerfile_text(source.text, source.dockerfile)
    if text is None:
        raise UsageError(f"{path}: cannot read the Dockerfile")
    output, found = check_build(text, path, key_values(args.build_arg, "--build-arg"))
    sys.stdout.write(output)
    return 1 if found else 0


def _options(args: argparse.Namespace, platform: Platform | None,
             outputs: list[Output]) -> BuildOptions:
    from builder.engine import buildx_flags as bx
    from builder.engine.dockerfile_locate import locate
    from builder.engine.options import BuildOptions
    from builder.run.runopts import parse_run_options

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if args.reproducible and not epoch and args.context != "-":
        epoch = str(_newest_mtime(Path(args.context)))
    cache_from = [cache_spec(spec, "src", "--cache-from") for spec in args.cache_from]
    if len(args.cache_to) > 1:  # buildx exports to each; refused rather than one dropped
        raise UsageError(f"--cache-to given {len(args.cache_to)} times: pybuild exports the "
                         "build cache to one place per build (docs/ci-cache.md)")
    cache_to = cache_spec(args.cache_to[0], "dest", "--cache-to") if args.cache_to else {}
    # -f -, context -, Dockerfile/dockerfile/Containerfile: builder.engine.dockerfile_locate
    source = locate(args.context, args.file, sys.stdin.buffer)
    return BuildOptions(
        context=source.context, dockerfile=source.dockerfile, dockerfile_text=source.text,
        tags=args.tag, build_args=key_values(args.build_arg, "--build-arg"), target=args.target,
        no_cache=args.no_cache, no_cache_filter=[s.lower() for s in args.no_cache_filter],
        network=args.network, labels=key_values(args.label, "--label"),
        platform=platform, outputs=outputs, compression=args.compression,
        source_date_epoch=int(epoch) if epoch and epoch.isdigit() else None,
        iidfile=args.iidfile, metadata_file=args.metadata_file,
        cache_from=[c["src"] for c in cache_from if c["type"] == "local"],
        cache_from_refs=[c["ref"] for c in cache_from if c["type"] == "registry"],
        cache_to=cache_to.get("dest"), cache_to_ref=cache_to.get("ref"),
        cache_mode=cache_to.get("mode", "min"), pull=args.pull,
        insecure_registries=tuple(args.insecure_registry),
        secrets=bx.secret_files(args.secret), storage_driver=args.storage_driver,
        build_contexts=bx.parse_build_contexts(args.build_context),
        run_options=parse_run_options(args.add_host, args.ulimit, args.shm_size, args.network))


def _write_files(args: argparse.Namespace, store: Store, result: BuildResult,
                 outputs: list[Output], annotations: ImageAnnotations) -> None:
    """``--iidfile`` (buildx: the config digest) and ``--metadata-file``."""
    from builder.engine import buildx_flags as bx

    if args.iidfile:
        bx.write_file_atomically(args.iidfile, result.image_id.encode(), "--iidfile")
    if args.metadata_file:
        from builder.engine.metadata import metadata, write_metadata

        write_metadata(args.metadata_file, metadata(
            store, result.image_id, result.tags, outputs=outputs, push=args.push,
            compression=args.compression, annotations=annotations, steps=result.steps))


def check_tags(store: Store, tags: list[str]) -> None:
    """Refuse a ``-t`` that is not a valid image reference before building, in
    Docker's words (``docker load`` would refuse the image later).  A name the store
    already holds was checked when it was made: a cached rebuild skips the parser."""
    unknown = [tag for tag in tags if store.resolve_image(tag) is None]
    if not unknown:
        return
    from builder.errors import ReferenceError
    from builder.registry.reference import parse_reference

    for tag in unknown:
        try:
            reference = parse_reference(tag)
        except ReferenceError as err:  # a usage error too: reworded as the flag's
            raise UsageError(f'invalid argument "{tag}" for "-t, --tag" flag: '
                             f"{err.reason}") from None
        if reference.digest:
            raise UsageError(f'invalid argument "{tag}" for "-t, --tag" flag: a tag cannot '
                             "hold a digest")


def cache_spec(spec: str, path_key: str, flag: str) -> dict[str, str]:
    """``type=local,dest=DIR,mode=max`` or ``type=registry,ref=REF`` -> dict
    (docker's flag syntax)."""
    attrs = dict(item.partition("=")[::2] for item in spec.split(","))
    kind = attrs.setdefault("type", "local")
    if kind == "registry":
        if not attrs.get("ref"):
            raise UsageError(f"{flag} {spec!r}: expected type=registry,ref=REGISTRY/NAME:TAG")
    elif kind != "local" or not attrs.get(path_key):
        raise UsageError(f"{flag} {spec!r}: expected type=local,{path_key}=DIR or "
                         "type=registry,ref=REF")
    if attrs.get("mode", "min") not in ("min", "max"):
        raise UsageError(f"{flag} {spec!r}: mode must be min or max")
    return attrs


def _newest_mtime(context: Path) -> int:
    newest = 0
    for directory, _dirs, files in os.walk(context):
        for name in files:
            try:
                newest = max(newest, int(os.lstat(os.path.join(directory, name)).st_mtime))
            except OSError:
                continue
    return newest


def _opens_store(args: argparse.Namespace) -> bool:
    return not args.check


BUILD = Verb("build", "build an image from a Dockerfile (the default verb)", _arguments, _build,
             _opens_store)
VERBS = (BUILD,)
