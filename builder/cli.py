"""The ``pybuild`` command line: parse arguments, call the library, print one-line errors.

Every heavy import happens inside the command that needs it, so that
``pybuild --help`` starts fast.  ``pybuild -t app .`` means ``pybuild build -t app .``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from builder import __version__
from builder.errors import NotImplementedYet, PybuildError, UsageError

# verb -> (summary, issue that builds it, or None when it exists)
VERBS: dict[str, tuple[str, int | None]] = {
    "build": ("build an image from a Dockerfile (the default verb)", None),
    "explain": ("show what each step of a built image did and why it was cached", None),
    "images": ("list images in the local store", None),
    "inspect": ("show an image's config as JSON", None),
    "history": ("show an image's history, like docker history", None),
    "tag": ("give an image another name", None),
    "rmi": ("remove image names (and the images nothing else names)", None),
    "save": ("write images to a docker load-able / OCI archive", None),
    "import": ("import a root filesystem tarball as a one-layer image", None),
    "check": ("lint a Dockerfile with BuildKit's rules", None),
    "debug": ("debugging aids: 'debug parse FILE' prints BuildKit's parse dump", None),
    "load": ("load images from a docker-archive or OCI archive", None),
    "df": ("show space used by images, layers and cache", None),
    "prune": ("remove unused layers, blobs and cache", None),
    "doctor": ("check the store (database, blobs, layers, cache, mounts); --repair fixes", None),
    "pull": ("pull an image from a registry", None),
    "push": ("push an image to a registry", None),
    "login": ("store credentials for a registry", None),
    "logout": ("forget the credentials pybuild stored for a registry", None),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pybuild", description="A daemonless Dockerfile image builder.",
        epilog="'pybuild -t app .' is short for 'pybuild build -t app .'.")
    parser.add_argument("--version", action="version", version=f"pybuild {__version__}")
    parser.add_argument("--root", help="store directory (default /var/lib/pybuild as root, "
                        "~/.local/share/pybuild otherwise; env PYBUILD_ROOT)")
    parser.add_argument("--storage-driver", choices=("overlay", "vfs", "auto"),
                        default="overlay", help="snapshot driver: overlay, vfs (a full copy "
                        "per step, for machines without overlay) or auto (overlay if it mounts)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for verb, (summary, issue) in VERBS.items():
        sub = verbs.add_parser(verb, help=summary + (f" [not built yet: issue {issue}]"
                                                     if issue else ""))
        _ARGUMENTS.get(verb, lambda p: p.add_argument("args", nargs="*"))(sub)
    return parser


def _build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("context", help="context directory, or - for a Dockerfile on stdin")
    p.add_argument("-t", "--tag", action="append", default=[], help="name[:tag] for the image")
    p.add_argument("-f", "--file", help="Dockerfile, or - for stdin (default: CONTEXT/"
                   "Dockerfile, else dockerfile, else Containerfile)")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    p.add_argument("--target", help="build this stage (default: the last)")
    p.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    p.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE",
                   help="do not use the build cache for this stage (several allowed)")
    p.add_argument("--cache-from", action="append", default=[],
                   metavar="type=local,src=DIR|type=registry,ref=REF",
                   help="reuse a cache exported with --cache-to (several allowed)")
    p.add_argument("--cache-to", metavar="type=local,dest=DIR|type=registry,ref=REF[,mode=max]",
                   help="export the build cache (mode=max: every stage's steps)")
    p.add_argument("--pull", action="store_true", help="pull FROM images even if stored")
    p.add_argument("--push", action="store_true", help="push the tagged image(s) when done")
    _registry_arguments(p)
    p.add_argument("--reproducible", action="store_true",
                   help="set SOURCE_DATE_EPOCH from the newest context file if unset")
    p.add_argument("--network", choices=("default", "host", "none"), default="default",
                   help="RUN's network: default (a namespace of its own, online through "
                        "slirp4netns), host (the host's: not isolated), none (only lo)")
    p.add_argument("--add-host", action="append", default=[], metavar="HOST:IP", help="RUN's hosts")
    p.add_argument("--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]")
    p.add_argument("--shm-size", metavar="SIZE", help="RUN's /dev/shm size (default 64m)")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument("--secret", action="append", default=[], metavar="id=ID[,src=PATH|env=VAR]",
                   help="a secret for RUN --mount=type=secret (id=X alone: env X, else file X)")
    p.add_argument("--build-context", action="append", default=[],
                   metavar="NAME=DIR|docker-image://REF|oci-layout://DIR[:TAG|@DIGEST]",
                   help="what FROM NAME / COPY --from=NAME / --mount from=NAME use")
    p.add_argument("--annotation", action="append", default=[],
                   metavar="[TYPE[PLATFORM]:]KEY=VALUE", help="annotate the exported manifest "
                   "(TYPE manifest, the default, or manifest-descriptor)")
    p.add_argument("--load", action="store_true",
                   help="accepted: every build goes to the local store (-o type=docker)")
    p.add_argument("--platform", action="append", metavar="OS/ARCH[/VARIANT]",
                   help="the platform to build for (default: this host's)")
    p.add_argument("--progress", choices=("auto", "plain", "tty", "json"), default="auto")
    p.add_argument("-o", "--output", action="append", default=[],
                   metavar="DIR|-|type=docker|oci|local|tar,dest=PATH[,preserve=true]")
    p.add_argument("--compression", choices=("gzip", "zstd", "none"), default="gzip")
    p.add_argument("--iidfile", help="write the image ID to this file")
    p.add_argument("--metadata-file", help="write build metadata (JSON) to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")


def _registry_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="allow plain HTTP to this registry (localhost always may)")


def _pull_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("reference", help="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", default=None, help="os/arch[/variant] (default: this host)")
    p.add_argument("-q", "--quiet", action="store_true")
    _registry_arguments(p)


def _push_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="image name or ID in the store")
    p.add_argument("reference", nargs="?", help="where to push (default: the image name)")
    p.add_argument("--compression", choices=("gzip", "zstd"), default="gzip")
    p.add_argument("-q", "--quiet", action="store_true")
    _registry_arguments(p)


def _login_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("registry", nargs="?", default="docker.io")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password", help="prefer --password-stdin")
    p.add_argument("--password-stdin", action="store_true")
    _registry_arguments(p)


def _explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="image name or ID")
    p.add_argument("--show-values", action="store_true",
                   help="next to an argument that changed, show its value in the image "
                   "(its history); the store and cache exports keep only digests")


def _one(name: str, help_text: str) -> Callable[[argparse.ArgumentParser], None]:
    return lambda p: p.add_argument(name, help=help_text)


_ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "build": _build_arguments,
    "explain": _explain_arguments,
    "inspect": _one("image", "image name or ID"),
    "history": _one("image", "image name or ID"),
    "images": lambda p: p.add_argument("-q", "--quiet", action="store_true"),
    "tag": lambda p: (p.add_argument("source"), p.add_argument("target")),
    "rmi": lambda p: (p.add_argument("-f", "--force", action="store_true", help="remove an "
                                     "image ID's names too; unknown images do not fail"),
                      p.add_argument("images", nargs="+")),
    "save": lambda p: (p.add_argument("-o", "--output", required=True),
                       p.add_argument("--format", choices=("docker", "oci"), default="docker"),
                       p.add_argument("images", nargs="+")),
    "import": lambda p: (p.add_argument("tarball", help="rootfs tarball, or - for stdin"),
                         p.add_argument("name", nargs="?"),
                         p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                                        help="what the config records (default: this host)"),
                         p.add_argument("-m", "--message", default="")),
    "check": lambda p: (p.add_argument("path", nargs="?", default="Dockerfile")),
    "df": lambda p: None,
    "prune": lambda p: p.add_argument("--cache", action="store_true",
                                      help="also drop the build cache and RUN cache mounts"),
    "doctor": lambda p: (p.add_argument("--repair", action="store_true",
                                        help="fix what is found (drop corrupt blobs, broken "
                                        "layers and the cache entries and images on them)"),
                         p.add_argument("--deep", action="store_true",
                                        help="also recompute every layer's diff_id from "
                                        "its directory (reads every file)")),
    "load": lambda p: p.add_argument("-i", "--input", help="docker-archive or OCI layout "
                                     "(tar or directory); default or -: stdin"),
    "debug": lambda p: (p.add_argument("what", choices=("parse",)), p.add_argument("path")),
    "pull": _pull_arguments,
    "push": _push_arguments,
    "login": _login_arguments,
    "logout": lambda p: p.add_argument("registry", nargs="?", default="docker.io"),
}


def _with_default_verb(argv: list[str]) -> list[str]:
    """Insert ``build`` when no verb is given (``pybuild -t app .``)."""
    takes_value = {"--root", "--storage-driver"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help", "--version"):
            return argv
        if arg in takes_value:
            i += 2
            continue
        if arg.startswith("--") and "=" in arg.split(" ")[0] and arg.split("=")[0] in takes_value:
            i += 1
            continue
        if arg == "--debug":
            i += 1
            continue
        if arg in VERBS:
            return argv
        return [*argv[:i], "build", *argv[i:]]
    return argv


def _store(args: argparse.Namespace) -> Any:
    import builder.cache.records  # noqa: F401 - registers its clean-up of old stores
    from builder.store import Store

    return Store(args.root)


def _check_tags(store: Any, tags: list[str]) -> None:
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
        except ReferenceError as err:
            raise UsageError(f'invalid argument "{tag}" for "-t, --tag" flag: '
                             f"{err.reason}") from None
        if reference.digest:
            raise UsageError(f'invalid argument "{tag}" for "-t, --tag" flag: a tag cannot '
                             "hold a digest")


def _resolve(store: Any, name: str) -> str:
    image_id = store.resolve_image(name)
    if image_id is None:
        raise UsageError(f"image {name!r} not found in the local store ({store.root})")
    return image_id


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not key:
            raise UsageError(f"{flag} {value!r}: expected KEY=VALUE")
        out[key] = val if sep else os.environ.get(key, "")
    return out


def cmd_build(args: argparse.Namespace) -> int:
    from builder.platforms import Platform, parse_platform_flag

    platform = parse_platform_flag(args.platform, several="one build for several is not "
                                   "supported yet (issue 19): run one build per platform")
    from builder.rootcheck import need_root_to_build

    need_root_to_build()  # one line, not a traceback from the first mount (issue 14)
    from pathlib import Path

    from builder.engine import buildx_flags as bx
    from builder.engine.engine import build
    from builder.engine.options import BuildOptions, parse_output
    from builder.engine.outputs import write_outputs
    from builder.engine.progress import make_progress
    from builder.run.runopts import parse_run_options

    outputs = bx.check_outputs([parse_output(spec) for spec in args.output if spec])
    annotations = bx.image_annotations(bx.parse_annotations(args.annotation,
                                                            str(platform or Platform.host())))
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if args.reproducible and not epoch and args.context != "-":
        epoch = str(_newest_mtime(Path(args.context)))
    cache_from = [_cache_spec(spec, "src", "--cache-from") for spec in args.cache_from]
    cache_to = _cache_spec(args.cache_to, "dest", "--cache-to") if args.cache_to else {}
    source = _context_dockerfile(args)
    options = BuildOptions(
        context=source.context, dockerfile=source.dockerfile, dockerfile_text=source.text,
        tags=args.tag, build_args=_pairs(args.build_arg, "--build-arg"), target=args.target,
        no_cache=args.no_cache, no_cache_filter=[s.lower() for s in args.no_cache_filter],
        network=args.network, labels=_pairs(args.label, "--label"),
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
    progress = make_progress(args.progress, quiet=args.quiet)
    store = _store(args)
    _check_tags(store, options.tags)
    result = build(store, options, progress)
    write_outputs(store, result.image_id, result.tags, outputs, args.compression, annotations)
    if args.push:
        if not result.tags:
            raise UsageError("--push needs a name: add -t REGISTRY/NAME:TAG")
        for tag in result.tags:
            _push(store, result.image_id, tag, args.compression, args.insecure_registry,
                  args.progress, quiet=args.quiet, annotations=annotations)
    if args.iidfile:  # buildx: the config digest
        bx.write_file_atomically(args.iidfile, result.image_id.encode(), "--iidfile")
    if args.metadata_file:
        from builder.engine.metadata import metadata, write_metadata

        write_metadata(args.metadata_file, metadata(
            store, result.image_id, result.tags, outputs=outputs, push=args.push,
            compression=args.compression, annotations=annotations))
    if args.quiet:
        print(result.image_id)
    else:
        progress.message(f"writing image {result.image_id}"
                         + "".join(f"\nnaming to {t}" for t in result.tags))
    return 0


def _attrs(spec: str) -> dict[str, str]:
    """``type=local,dest=DIR`` -> ``{"type": "local", "dest": "DIR"}`` (docker's flag syntax)."""
    return dict(item.partition("=")[::2] for item in spec.split(","))


def _cache_spec(spec: str, path_key: str, flag: str) -> dict[str, str]:
    """``type=local,dest=DIR,mode=max`` or ``type=registry,ref=REF`` -> dict."""
    attrs = _attrs(spec)
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


def _context_dockerfile(args: argparse.Namespace) -> Any:
    """The context and Dockerfile of ``pybuild build`` (``-f -``, context ``-``,
    ``Dockerfile``/``dockerfile``/``Containerfile``): builder.engine.dockerfile_locate."""
    from builder.engine.dockerfile_locate import locate

    return locate(args.context, args.file, sys.stdin.buffer)


def _newest_mtime(context: Any) -> int:
    newest = 0
    for directory, _dirs, files in os.walk(context):
        for name in files:
            try:
                newest = max(newest, int(os.lstat(os.path.join(directory, name)).st_mtime))
            except OSError:
                continue
    return newest


def cmd_images(args: argparse.Namespace) -> int:
    from builder.explain.render import human_size
    from builder.textsafe import printable

    store = _store(args)
    tags: dict[str, list[str]] = {}
    for name, image_id in store.tags():
        if "@" not in name:  # repo digests (NAME@sha256:...) are names too, but not listed
            tags.setdefault(image_id, []).append(name)
    if not args.quiet:
        print(f"{'REPOSITORY':<30} {'TAG':<12} {'IMAGE ID':<14} {'SIZE':>9}")
    for image_id, top, _created in store.images():
        if args.quiet:
            print(image_id[7:19])
            continue
        size = sum(r.size for r in store.chain(top))
        for name in tags.get(image_id, ["<none>:<none>"]):
            repo, _, tag = name.rpartition(":")
            print(printable(f"{repo:<30} {tag:<12} {image_id[7:19]:<14} "
                            f"{human_size(size):>9}"))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    store = _store(args)
    image_id = _resolve(store, args.image)
    config = store.image_config(image_id)
    tags = [name for name, iid in store.tags() if iid == image_id]
    doc = {"Id": image_id, "RepoTags": tags, "Created": config.get("created"),
           "Author": config.get("author", ""), "Architecture": config.get("architecture"),
           **({"Variant": config["variant"]} if config.get("variant") else {}),  # omitempty
           "Os": config.get("os"), "Config": config.get("config", {}),
           "RootFS": {"Type": "layers", "Layers": config.get("rootfs", {}).get("diff_ids", [])},
           "Size": sum(r.size for r in store.chain(store.image_top_chain(image_id)))}
    print(json.dumps([doc], indent=4))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from builder.explain.render import human_size
    from builder.textsafe import printable

    store = _store(args)
    image_id = _resolve(store, args.image)
    config = store.image_config(image_id)
    from builder.layers.empty import is_empty

    layers = store.chain(store.image_top_chain(image_id))
    sizes = iter(0 if is_empty(r.diff_id) else r.size for r in layers)  # 0B, as docker's
    rows = []
    for entry in config.get("history", []):
        size = 0 if entry.get("empty_layer") else next(sizes, 0)
        rows.append((entry.get("created", ""), entry.get("created_by", ""), size,
                     entry.get("comment", "")))
    print(f"{'CREATED':<22} {'CREATED BY':<60} {'SIZE':>9}  COMMENT")
    for created, created_by, size, comment in reversed(rows):
        # The image's history is anyone's text: no control character reaches the terminal.
        created_by = printable(str(created_by))
        shown = created_by if len(created_by) <= 60 else created_by[:57] + "..."
        print(printable(f"{str(created)[:19]:<22} {shown:<60} {human_size(size):>9}  "
                        f"{comment}"))
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    store = _store(args)
    store.tag(args.target, _resolve(store, args.source))
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    """As docker rmi: every image is tried; with -f, unknown ones do not fail it."""
    from builder.errors import StoreError
    from builder.store.remove import NoSuchImage, remove_image
    from builder.textsafe import printable

    store = _store(args)
    failed = fatal = False
    for name in args.images:
        try:
            records = remove_image(store, name, force=args.force)
        except StoreError as err:
            print(printable(f"pybuild: {err}"), file=sys.stderr)
            failed, fatal = True, fatal or not isinstance(err, NoSuchImage)
            continue
        print("\n".join(printable(str(record)) for record in records))
    return 1 if failed and (fatal or not args.force) else 0


def cmd_save(args: argparse.Namespace) -> int:
    from builder.image.archive import write_layout

    store = _store(args)
    images: dict[str, list[str]] = {}
    for name in args.images:
        image_id = _resolve(store, name)
        tags = images.setdefault(image_id, [])
        if store.resolve_image(name) == image_id and not name.startswith("sha256:"):
            from builder.store.store import normalize_tag

            tags.append(normalize_tag(name))
    write_layout(store, list(images.items()), args.output,
                 compression="none" if args.format == "docker" else "gzip")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from builder.image.importer import import_tarball
    from builder.platforms import parse_platform_flag

    platform = parse_platform_flag(args.platform)
    from builder.rootcheck import need_root

    need_root("importing a root filesystem")
    store = _store(args)
    print(import_tarball(store, args.tarball, args.name, platform=platform,
                         message=args.message))
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from builder.image.load_stdin import archive_input
    from builder.image.loader import load_archive
    from builder.rootcheck import need_root
    from builder.textsafe import printable

    need_root("loading images")
    store = _store(args)
    with archive_input(store, args.input, sys.stdin.buffer) as (path, shown):
        loaded = load_archive(store, path, shown_as=shown)
    for image_id, tags in loaded:
        for tag in tags:
            store.tag(tag, image_id)
            print(printable(f"Loaded image: {tag}"))  # a name from the archive
        if not tags:
            print(f"Loaded image ID: {image_id}")
    return 0


def cmd_df(args: argparse.Namespace) -> int:
    from builder.explain.render import human_size
    from builder.store.gc import usage

    used = usage(_store(args))
    print(f"{'TYPE':<14} {'TOTAL':>7} {'ACTIVE':>7} {'SIZE':>10} {'RECLAIMABLE':>12}")
    print(f"{'Images':<14} {used.images:>7} {used.tagged:>7} {human_size(used.blobs_bytes):>10} "
          f"{'':>12}")
    print(f"{'Layers':<14} {used.layers:>7} {used.layers - used.reclaimable_layers:>7} "
          f"{human_size(used.layers_bytes):>10} {human_size(used.reclaimable_bytes):>12}")
    print(f"{'Build cache':<14} {used.cache_entries:>7} {used.cache_entries:>7} "
          f"{human_size(used.cache_mounts_bytes):>10} {'':>12}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from builder.store.gc import prune

    images, layers, blobs = prune(_store(args), cache=args.cache)
    print(f"Deleted {images} images, {layers} layers, {blobs} blobs")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from builder.store.doctor import doctor, render
    from builder.textsafe import printable

    report = doctor(_store(args), repair=args.repair, deep=args.deep)
    print(printable(render(report, repair=args.repair), multiline=True))
    return 1 if report.unrepaired else 0


def cmd_explain(args: argparse.Namespace) -> int:
    from builder.explain.records import load_build
    from builder.explain.render import render

    store = _store(args)
    image_id = _resolve(store, args.image)
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


def cmd_check(args: argparse.Namespace) -> int:
    from builder.dockerfile import lint, parse_file
    from builder.textsafe import printable

    warnings = lint(parse_file(args.path))
    for warning in warnings:
        print(printable(f"{args.path}:{warning.line}: {warning.rule}: {warning.message}"))
    return 1 if warnings else 0


def cmd_debug(args: argparse.Namespace) -> int:
    from pathlib import Path

    from builder.dockerfile import debug_parse

    try:
        text = Path(args.path).read_bytes()
    except OSError as err:
        raise UsageError(f"{args.path}: {err.strerror}") from None
    from builder.textsafe import printable  # the dump quotes the file's own bytes

    sys.stdout.write(printable(debug_parse(text, args.path), multiline=True) + "\n")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from builder.platforms import Platform, parse_platform_flag
    from builder.registry.progress import TransferProgress
    from builder.registry.pull import pull
    from builder.registry.reference import parse_reference

    ref = parse_reference(args.reference)
    platform = parse_platform_flag(args.platform) or Platform.host()
    progress = TransferProgress("quiet" if args.quiet else "auto")
    pulled = pull(_store(args), ref, platform=platform,
                  insecure=tuple(args.insecure_registry), progress=progress)
    print(pulled.image_id if args.quiet else f"{ref.familiar()}: {pulled.manifest_digest}")
    return 0


def _push(store: Any, image_id: str, name: str, compression: str, insecure: list[str],
          mode: str, quiet: bool = False, annotations: Any = None) -> str:
    from builder.registry.progress import TransferProgress
    from builder.registry.push import push
    from builder.registry.reference import parse_reference

    ref = parse_reference(name)
    progress = TransferProgress("quiet" if quiet else mode, verb="push")
    return push(store, image_id, ref, compression=compression, insecure=tuple(insecure),
                progress=progress, annotations=annotations)


def cmd_push(args: argparse.Namespace) -> int:
    store = _store(args)
    image_id = _resolve(store, args.image)
    digest = _push(store, image_id, args.reference or args.image, args.compression,
                   args.insecure_registry, "auto", quiet=args.quiet)
    print(digest)
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    from builder.registry.login import check_login, read_credentials, remember
    from builder.registry.reference import parse_reference

    registry = parse_reference(f"{args.registry}/x").registry
    creds = read_credentials(args.username, args.password, args.password_stdin, sys.stdin)
    check_login(registry, creds, args.insecure_registry)
    path = remember(registry, creds)
    print(f"Login credentials for {registry} saved in {path}")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from builder.registry.login import forget
    from builder.registry.reference import parse_reference

    registry = parse_reference(f"{args.registry}/x").registry
    if not forget(registry):
        raise UsageError(f"not logged in to {registry} (pybuild keeps no credentials for it)")
    print(f"Removed login credentials for {registry}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "build": cmd_build, "images": cmd_images, "inspect": cmd_inspect, "history": cmd_history,
    "tag": cmd_tag, "rmi": cmd_rmi, "save": cmd_save, "import": cmd_import,
    "explain": cmd_explain, "check": cmd_check, "debug": cmd_debug, "load": cmd_load,
    "df": cmd_df, "prune": cmd_prune, "doctor": cmd_doctor, "pull": cmd_pull,
    "push": cmd_push, "login": cmd_login, "logout": cmd_logout,
}


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
    raw = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not raw:
        parser.print_help()
        return 2
    args = parser.parse_args(_with_default_verb(raw))
    try:
        handler = COMMANDS.get(args.verb)
        if handler is None:
            issue = VERBS[args.verb][1]
            raise NotImplementedYet(f"'pybuild {args.verb}' is not built yet (planned in "
                                    f"issue {issue})")
        return handler(args)
    except PybuildError as err:
        if args.debug:
            raise
        from builder.textsafe import printable  # messages quote names from images, files

        print(f"pybuild: {printable(str(err), multiline=True)}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        return 141
    except Exception as err:
        message = _out_of_space(args, err)
        if message is None:
            raise
        print(f"pybuild: {message}", file=sys.stderr)
        return 1


def _out_of_space(args: argparse.Namespace, err: Exception) -> str | None:
    """One line for a full disk (catalogue REL-4), wherever the write failed; else None.

    Whatever was being written is already undone by then (temp dirs and files are
    removed on the way out, a layer or blob is only registered once complete).
    """
    import errno

    full = (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)) or \
        (type(err).__name__ == "OperationalError" and "disk is full" in str(err))
    if not full:
        return None
    from builder.store import default_root

    where = str(getattr(err, "filename", None) or args.root or default_root())
    try:
        st = os.statvfs(where if os.path.exists(where) else os.path.dirname(where) or ".")
        free = f" ({st.f_bavail * st.f_frsize // (1 << 20)} MiB free of " \
               f"{st.f_blocks * st.f_frsize // (1 << 20)} MiB)"
    except OSError:
        free = ""
    what = "quota exceeded" if getattr(err, "errno", None) == errno.EDQUOT else \
        "no space left on device"
    return (f"{what} on the filesystem holding {where}{free}: nothing partial was kept; "
            "free space (e.g. 'pybuild prune') and run it again")


if __name__ == "__main__":
    raise SystemExit(main())
